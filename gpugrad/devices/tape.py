"""A tape of NumPy calls: how gg.compile records a step on the CPU and replays it.

While a Tape records, the arrays a step touches are seen through faces: `Traced`, an ndarray
subclass sharing the array's memory, whose NumPy protocols (__array_ufunc__,
__array_function__) and computing methods (astype, copy, indexing ...) hand every call to the
tape. The tape runs the call on the plain arrays underneath, exactly as an eager step would,
and keeps it: a call that writes in place (out=, a[k] = v, anything returning None) is kept
as it is; one that made a new array is kept with that array as its output (out= for ufuncs, a
copy into it otherwise); one that returned a view of its input needs nothing, the view stays
valid. Every array stays alive, so a replay runs the same calls, in the same order, on the same
memory: equal to the recorded step bit for bit, with no Tensor, node or rule in between. Before it
replays, the program drops the calls nothing needs and lets the step's own arrays share memory
where their lives do not overlap (gpugrad/devices/tape_plan.py), which keeps that equality.

Arrays enter through faces: Tensor.data (gpugrad/cuda/compiled.py), optimizer state
(capture.kept), the step's arguments, and the array makers below, which NumPy does not
dispatch (np.zeros, np.asarray, ...) and which are wrapped while a tape records. Values never
leave: reading one on the host (float(), item(), bool(), printing) is refused by name, as in a
CUDA graph. An array the step reads that came from none of these (a NumPy array in its
closure) is read where it lies on every replay: a constant, as far as the step goes.
"""

import contextlib
import gc
import threading

import numpy as np

from gpugrad.devices import capture
from gpugrad.devices import tape_plan

_C_BASE = np.ndarray.base.__get__  # the memory's owner as NumPy keeps it
_local = threading.local()

# calls whose Python result is read from the arrays' metadata, not their values
_METADATA = {"shape", "ndim", "size", "result_type", "may_share_memory", "shares_memory",
             "can_cast", "min_scalar_type", "iscomplexobj", "isrealobj", "broadcast_shapes"}
# calls whose result has a shape that depends on values: no buffer can be planned for it
_VALUE_SHAPED = {"nonzero", "flatnonzero", "argwhere", "unique", "extract", "compress"}
# array makers NumPy does not dispatch to an array's type: wrapped while a tape records
_MAKERS = ("zeros", "ones", "empty", "full", "arange", "eye", "identity", "array", "asarray",
           "asanyarray", "ascontiguousarray", "asfortranarray", "zeros_like", "ones_like",
           "empty_like", "full_like", "frombuffer", "fromiter", "linspace")
_ORIGINAL = {name: getattr(np, name) for name in _MAKERS}  # the tape's own calls use these


def recording():
    """The Tape recording in this thread, or None."""
    return getattr(_local, "tape", None)


def _root(a):
    while isinstance(_C_BASE(a), np.ndarray):
        a = _C_BASE(a)
    return a


def _copy_into(out, fn, args, kwargs):
    np.copyto(out, fn(*args, **kwargs), casting="no")


class Tape:
    """The calls of one recorded step (see the module's docstring)."""

    def __init__(self):
        self.entries = []  # (function, args, kwargs), run in order by replay()
        self.access = []  # per entry, the arrays it reads and writes (tape_plan.Access)
        self._faces = {}  # id(plain array) -> (it, its face)
        self._plain = {}  # id(face) -> the plain array under it
        self._made = []  # (index into entries, root) of arrays the step made from no array
        self._written = set()  # ids of the roots of arrays written in place
        self.depth = 0  # > 0 while a recorded call runs: NumPy's own calls are not the step's

    # ------------------------------------------------------------------ faces
    def face(self, a):
        """The Traced face of a plain array (the same one every time), anything else as is."""
        if type(a) is not np.ndarray:
            return a
        hit = self._faces.get(id(a))
        if hit is not None and hit[0] is a:
            return hit[1]
        f = a.view(Traced)
        self._faces[id(a)] = (a, f)
        self._plain[id(f)] = a
        return f

    def plain(self, x):
        """Faces (in containers too) -> the plain arrays under them."""
        if isinstance(x, Traced):
            p = self._plain.get(id(x))
            return p if p is not None else x.view(np.ndarray)  # a view NumPy made of a face
        if type(x) in (tuple, list):
            return type(x)(self.plain(v) for v in x)
        return x

    # ------------------------------------------------------------------ recording
    def call(self, fn, name, args, kwargs):
        """fn(*args, **kwargs) on the plain arrays, kept for replay; faces out."""
        if name in _VALUE_SHAPED:
            _refuse(name, "its result's shape depends on the values")
        pargs = [self.plain(a) for a in args]
        pkw = {k: self.plain(v) for k, v in kwargs.items()}
        self.depth += 1
        try:
            result = fn(*pargs, **pkw)
        finally:
            self.depth -= 1
        out = kwargs.get("out")
        if out is not None and any(o is not None for o in (out if type(out) is tuple else (out,))):
            self._keep(fn, pargs, pkw, written=pkw["out"],
                       inputs=(pargs, {k: v for k, v in pkw.items() if k != "out"}))
            return out[0] if type(out) is tuple and len(out) == 1 else out
        if result is None:  # wrote into its first argument (a[k] = v, copyto, ufunc.at ...)
            self._keep(fn, pargs, pkw, written=pargs[:1])
            return None
        if type(result) is tuple:
            return tuple(self._result(r, fn, name, pargs, pkw, args, i)
                         for i, r in enumerate(result))
        return self._result(result, fn, name, pargs, pkw, args)

    def _keep(self, fn, args, kwargs, written=(), inputs=None, full=False):
        """Keep a call that writes `written` and reads the arrays in `inputs` (default: all its
        arguments); full: it overwrites all of written[0] and does not read it."""
        self.entries.append((fn, args, kwargs))
        writes = tape_plan.arrays_in(written)
        reads = tape_plan.arrays_in((args, kwargs) if inputs is None else inputs)
        self.access.append(tape_plan.Access(tuple(reads), tuple(writes), full))
        for w in writes:
            self._written.add(id(_root(w)))

    def _result(self, r, fn, name, pargs, pkw, args, index=None):
        if isinstance(r, np.generic):  # a NumPy scalar: kept in a 0-d array of its own
            r = _ORIGINAL["asarray"](r)
        if not isinstance(r, np.ndarray):
            if name not in _METADATA:
                capture.forbid_host_read(f"{name}() returns a Python value")
            return r
        for a, p in zip(args, pargs):
            if r is p:
                return a  # handed back its input
        roots = {id(_root(p)) for p in pargs if isinstance(p, np.ndarray)}
        if id(_root(r)) in roots:
            return self.face(r)  # a view of its input: valid on every replay as it is
        if index is not None:  # one output of several: computed again, this one copied in
            self._keep(lambda out, f, a, k, i=index: np.copyto(out, f(*a, **k)[i]),
                       (r, fn, pargs, pkw), {}, (r,), (pargs, pkw), full=True)
        elif isinstance(fn, np.ufunc) or isinstance(getattr(fn, "__self__", None), np.ufunc):
            # a where= mask leaves the rest of out as it was: not a full write
            self._keep(fn, pargs, {**pkw, "out": (r,)}, (r,), (pargs, pkw),
                       full=pkw.get("where", True) is True)
        else:
            self._keep(_copy_into, (r, fn, pargs, pkw), {}, (r,), (pargs, pkw), full=True)
        return self.face(r)

    def made(self, r, name):
        """An array the step made from host values or shapes alone (np.zeros, np.asarray of a
        list): a replay gives it its first contents again, if the step writes into it."""
        init = None if name in ("empty", "empty_like") else r.copy()
        if init is not None:
            self._made.append((len(self.entries), id(_root(r))))
            self.entries.append((np.copyto, (r, init), {}))
            self.access.append(tape_plan.Access((init,), (r,), True))
        return self.face(r)

    def program(self):
        """The entries a replay runs, once the recording is over: the first contents of made
        arrays only where the step writes into them; optimized (tape_plan): no dead call, no
        call repeated on unchanged arrays, and arrays whose lives do not overlap in one buffer."""
        unused = {i for i, root in self._made if root not in self._written}
        kept = [i for i in range(len(self.entries)) if i not in unused]
        entries, access = [self.entries[i] for i in kept], [self.access[i] for i in kept]
        self.entries = self.access = None
        self._faces.clear()  # the faces hold their arrays: let those no one else holds go
        self._plain.clear()
        gc.collect(1)  # and what a cycle (a graph node, a tensor) held: young, as the recording
        return tape_plan.optimized(entries, access)


def replay(program):
    """Run a program from Tape.program() (NumPy's warnings off, as in the eager step)."""
    with np.errstate(all="ignore"):
        for fn, args, kwargs in program:
            fn(*args, **kwargs)


def _refuse(what, why):
    raise capture.GraphStepError(f"{what} inside a compiled step (gg.compile): {why}")


# ---------------------------------------------------------------------------- recording on


def _has_face(x):
    return isinstance(x, Traced) or type(x) in (list, tuple) and any(_has_face(v) for v in x)


def _maker(name, fn):
    def make(*args, **kwargs):
        tape = recording()
        if tape is None or tape.depth:
            return fn(*args, **kwargs)
        if any(_has_face(v) for v in (*args, *kwargs.values())):
            return tape.call(fn, name, args, kwargs)
        r = fn(*args, **kwargs)
        if type(r) is not np.ndarray or any(
                isinstance(a, np.ndarray) and _root(a) is _root(r) for a in args):
            return r  # an array from outside the step, handed back: read where it lies
        return tape.made(r, name)
    make.__wrapped__ = fn
    return make


@contextlib.contextmanager
def recording_into(tape):
    """Record the NumPy calls the block makes on faces into `tape`."""
    if recording() is not None:
        raise capture.GraphStepError("gg.compile: a compiled step cannot record another")
    _local.tape = tape
    # NumPy's makers take no array to dispatch on: they are swapped in the numpy module itself
    # (every `np.zeros` and `xp.zeros` looks there), for this thread's recording only
    for name, fn in _ORIGINAL.items():
        setattr(np, name, _maker(name, fn))
    try:
        yield tape
    finally:
        for name, fn in _ORIGINAL.items():
            setattr(np, name, fn)
        _local.tape = None


# ---------------------------------------------------------------------------- the face


def _dispatch(fn, name, args, kwargs):
    tape = recording()
    if tape is None or tape.depth:  # a face outside its recording: plain NumPy
        args = [a.view(np.ndarray) if isinstance(a, Traced) else a for a in args]
        return fn(*args, **kwargs)
    return tape.call(fn, name, args, kwargs)


def foreign(fn, *args, out):
    """fn(*args, out=out) for a function NumPy does not dispatch (a numba kernel): while a tape
    records, kept as a call that writes `out`, so that every replay runs it again into the same
    arrays (unseen, a replay would skip it and leave `out` stale)."""
    return _dispatch(fn, getattr(fn, "__name__", "foreign"), args, {"out": out})


def _host_read(what):
    def refuse(self, *args, **kwargs):
        tape = recording()
        if tape is not None:
            _refuse(f"reading an array's values on the host ({what})", capture.HOST_READ_WHY)
        return getattr(self.view(np.ndarray), what)(*args, **kwargs)
    return refuse


class Traced(np.ndarray):
    """An array seen by a recording Tape: every call on it is recorded."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        fn = ufunc if method == "__call__" else getattr(ufunc, method)
        return _dispatch(fn, ufunc.__name__, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _dispatch(func, func.__name__, args, kwargs)

    def __array_finalize__(self, obj):
        # numpy made a new array through a method that does not dispatch: the tape would
        # miss it, so it is refused (views of a face are fine: their memory is recorded)
        if isinstance(obj, np.ndarray) and _C_BASE(self) is None and recording() is not None:
            _refuse("an array method the recorder does not know",
                    "it computes a new array without telling the tape; call the NumPy "
                    "function instead")

    @property
    def base(self):
        """As the eager array's: None for the face of an array that owns its memory."""
        b = _C_BASE(self)
        if isinstance(b, Traced):
            return b
        tape = recording()
        owner = None if b is None else _C_BASE(b)
        return owner if tape is None or owner is None else tape.face(owner)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, key):
        keys = key if type(key) is tuple else (key,)
        if any(isinstance(k, np.ndarray) and k.dtype == bool for k in keys):
            _refuse("indexing with a boolean mask", "the result's shape depends on the values")
        return _dispatch(np.ndarray.__getitem__, "getitem", (self, key), {})

    def __setitem__(self, key, value):
        return _dispatch(np.ndarray.__setitem__, "setitem", (self, key, value), {})


def _method(name):
    plain = getattr(np.ndarray, name)
    return lambda self, *args, **kwargs: _dispatch(plain, name, (self, *args), kwargs)


for _name in ("astype", "copy", "__copy__", "__deepcopy__", "fill", "reshape", "ravel",
              "flatten", "dot", "argmax", "argmin", "take", "repeat", "sort", "argsort",
              "cumsum", "cumprod", "put", "round", "searchsorted", "partition", "argpartition",
              "choose", "conj", "conjugate", "byteswap", "diagonal", "trace", "nonzero",
              "compress", "resize", "squeeze", "swapaxes", "transpose"):
    setattr(Traced, _name, _method(_name))
for _name in ("__float__", "__int__", "__bool__", "__index__", "__complex__", "item", "tolist",
              "tobytes", "__repr__", "__str__", "__format__"):
    setattr(Traced, _name, _host_read(_name))
del _name
