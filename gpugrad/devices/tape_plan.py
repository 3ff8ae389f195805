"""A recorded step's program made lighter before it replays (gpugrad/devices/tape.py).

Two passes, both on the arrays that only the program refers to (its own: not a parameter,
gradient, optimizer state, argument or result, nor anything the step stored; found by counting
each array's references, so an array anything else holds is left alone):
- a call whose every written array is the program's own and read by no call the replay needs
  is dropped (so, in turn, are the calls that fed only it), and so is a call that repeats an
  earlier one on unchanged arrays: what read its result reads the earlier one's;
- arrays of the same shape, dtype and strides whose lives do not overlap share one buffer:
  an array qualifies when the first call of a replay that touches it overwrites all of it
  without reading it (so no value is carried from one replay to the next) and no view of it
  appears in the program.
Every call kept runs as recorded, on arrays holding the same values when it runs, so a replay
stays equal to the eager step bit for bit; only where values are kept changes.
"""

import heapq
import sys
import sysconfig

import numpy as np

# the ownership test reads CPython's reference counts, which a free-threaded build defers and
# biases: there the program replays as recorded, every call kept and every array its own
_COUNTS_REFERENCES = not sysconfig.get_config_var("Py_GIL_DISABLED")

_C_BASE = np.ndarray.base.__get__


def _root(a):
    while isinstance(_C_BASE(a), np.ndarray):
        a = _C_BASE(a)
    return a


class Access:
    """The arrays one call reads and writes; `full`: it overwrites all of writes[0], unread."""

    __slots__ = ("reads", "writes", "full")

    def __init__(self, reads, writes, full):
        self.reads, self.writes, self.full = reads, writes, full


def arrays_in(x, found=None):
    """The arrays in x, through nested tuples, lists and dicts."""
    found = [] if found is None else found
    if isinstance(x, np.ndarray):
        found.append(x)
    elif type(x) in (tuple, list):
        for v in x:
            arrays_in(v, found)
    elif type(x) is dict:
        for v in x.values():
            arrays_in(v, found)
    return found


def optimized(entries, access):
    """The entries with dead calls dropped, repeated ones read from their first result and
    buffers shared (see the module's doc)."""
    if not _COUNTS_REFERENCES:
        return entries
    own = _own_roots([entries, [(a.reads, a.writes) for a in access]])
    entries, access = _live(entries, access, own)
    entries, access = _once(entries, access, own)
    return _shared(entries, access, own)


def _own_roots(containers):
    """ids of the roots whose every reference (of the root and of each view of it) comes from
    the containers: arrays no one else can see or write."""
    seen, counts = _references(containers)
    probe = np.empty(0)  # held here as each array is: the references of one held by no one
    seen[id(probe)], counts[id(probe)] = probe, 0
    del probe
    extra = {key: sys.getrefcount(seen[key]) - counts[key] for key in seen}
    alone = extra.pop(list(seen)[-1])
    own, shared = set(), set()
    for key, a in list(seen.items())[:-1]:
        root = _root(a)
        (own if extra[key] == alone else shared).add(id(root))
        if not root.flags.owndata:
            shared.add(id(root))  # its memory may be another object's too
    return own - shared


def _references(containers):
    """({id: array}, {id: how many references to it the containers and those arrays hold})
    for the arrays in the containers and their bases (a view holds its base)."""
    counts, seen, visited, stack = {}, {}, set(), list(containers)
    while stack:
        c = stack.pop()
        if id(c) in visited:
            continue
        visited.add(id(c))
        for v in c.values() if type(c) is dict else c:
            if isinstance(v, np.ndarray):
                counts[id(v)] = counts.get(id(v), 0) + 1
                seen[id(v)] = v
            elif type(v) in (tuple, list, dict):
                stack.append(v)
    for a in list(seen.values()):  # a view holds its base
        while isinstance(_C_BASE(a), np.ndarray):
            b = _C_BASE(a)
            counts[id(b)] = counts.get(id(b), 0) + 1
            if id(b) in seen:
                break
            seen[id(b)] = a = b
    return seen, counts  # the locals go with the frame: they hold nothing after


def _live(entries, access, own):
    """The calls a replay needs: those that write an array not the program's own, and, in turn,
    those that write what a needed call reads (a call's read of what it writes itself does not
    make it needed)."""
    writes = [{id(_root(w)) for w in acc.writes} for acc in access]
    writers = {}
    for i, w in enumerate(writes):
        for key in w:
            writers.setdefault(key, []).append(i)
    needed = {i for i, w in enumerate(writes) if not w or w - own}
    todo, wanted = list(needed), set()
    while todo:
        for key in {id(_root(a)) for a in access[todo.pop()].reads} - wanted:
            wanted.add(key)
            more = [i for i in writers.get(key, ()) if i not in needed]
            needed.update(more)
            todo.extend(more)
    keep = sorted(needed)
    return [entries[i] for i in keep], [access[i] for i in keep]


def _once(entries, access, own):
    """A call that repeats an earlier one (the same function on the same arrays, unwritten
    since, and equal other arguments) into an array of the program's own, that only it writes,
    nothing touches before it and no view of it appears, is dropped: later calls read the
    earlier one's result."""
    writers, first, roots = {}, {}, {}
    for i, acc in enumerate(access):
        for a in (*acc.reads, *acc.writes):
            first.setdefault(id(_root(a)), i)
            roots.setdefault(id(_root(a)), set()).add(id(a))
        for w in acc.writes:
            writers[id(_root(w))] = writers.get(id(_root(w)), 0) + 1
    version, made, into, keep = {}, {}, {}, []
    for i, (entry, acc) in enumerate(zip(entries, access)):
        entry = _swapped(entry, into)
        key = None
        out = acc.writes[0] if len(acc.writes) == 1 else None
        if (acc.full and out is not None and id(out) in own and roots.get(id(out)) == {id(out)}
                and writers[id(out)] == 1 and first[id(out)] == i):
            key = _key(_without_out(entry, out), version)
        if key is not None and key in made:
            into[id(out)] = made[key]
            continue
        if key is not None:
            made[key] = out
        keep.append((entry, acc))
        for w in acc.writes:
            version[id(_root(w))] = version.get(id(_root(w)), 0) + 1
    return ([e for e, _ in keep],
            [Access(_swapped(a.reads, into), _swapped(a.writes, into), a.full) for _, a in keep])


def _without_out(entry, out):
    """The call without the array it writes: fn(..., out=(out,)) or fn(out, f, args, kwargs)."""
    fn, args, kwargs = entry
    if "out" in kwargs:
        return fn, args, {k: v for k, v in kwargs.items() if k != "out"}
    return fn, args[1:], kwargs


def _key(x, version):
    """What makes two calls compute the same: arrays by their memory (root, version, offset,
    shape, strides, dtype), functions by identity (a ufunc's method by the ufunc and its name),
    other values by type and repr (so -0.0 is not 0.0). None where a value cannot be told apart
    so."""
    if isinstance(x, np.ndarray):
        root = _root(x)
        return ("array", id(root), version.get(id(root), 0), x.ctypes.data - root.ctypes.data,
                x.shape, x.strides, x.dtype.str)
    if type(x) in (tuple, list, dict):
        items = x.items() if type(x) is dict else enumerate(x)
        keys = tuple((k, _key(v, version)) for k, v in items)
        return None if any(k[1] is None for k in keys) else (type(x).__name__, keys)
    if isinstance(getattr(x, "__self__", None), np.ufunc):  # np.add.reduce: made on each get
        return ("ufunc method", id(x.__self__), x.__name__)
    if callable(x):
        return ("call", id(x))
    if x is None or type(x) in (bool, int, float, complex, str, slice, np.dtype) or \
            isinstance(x, (np.generic, np.dtype)):
        return (type(x).__name__, repr(x))
    return None


def _shared(entries, access, own):
    """Arrays of the program whose lives do not overlap, given one buffer (module's doc)."""
    first, last, roots = {}, {}, {}
    for i, acc in enumerate(access):
        for a in (*acc.reads, *acc.writes):
            r = _root(a)
            first.setdefault(id(r), i)
            last[id(r)] = i
            roots.setdefault(id(r), set()).add(id(a))
    # per shape, dtype and strides, a heap of (the last call that uses it, n, buffer)
    hosts, into = {}, {}  # id(array) -> the buffer it is given
    for n, key in enumerate(sorted(first, key=first.get)):
        acc = access[first[key]]
        r = _root(acc.writes[0]) if acc.writes else None
        if (key not in own or r is None or id(r) != key or not acc.full
                or acc.writes[0] is not r or any(id(_root(a)) == key for a in acc.reads)
                or not r.flags.c_contiguous):
            continue
        free = hosts.setdefault((r.shape, r.dtype.str, r.strides), [])
        if free and free[0][0] < first[key] and roots[key] == {key}:  # no view to rebuild
            _, _, buffer = heapq.heappop(free)
            into[key] = buffer
            heapq.heappush(free, (last[key], n, buffer))
        else:
            heapq.heappush(free, (last[key], n, r))
    if not into:
        return entries
    return [_swapped(e, into) for e in entries]


def _swapped(x, into):
    """x with each array in `into` replaced by its buffer, through tuples, lists and dicts."""
    if isinstance(x, np.ndarray):
        return into.get(id(x), x)
    if type(x) in (tuple, list):
        return type(x)(_swapped(v, into) for v in x)
    if type(x) is dict:
        return {k: _swapped(v, into) for k, v in x.items()}
    return x
