"""gg.compile: one static-shape step (a training step, an inference) recorded once and replayed,
on every device, under gg.cuda.graph's contract (GraphedStep).

On CUDA it is gg.cuda.graph: a CUDA graph. On the CPU the second call records the step as the
NumPy calls it makes (gpugrad/devices/tape.py) while it runs, and every later call replays
them: the same calls in the same order on the same values, so a replay equals an eager step bit
for bit, with no Tensor, node or rule dispatch; arguments of new shapes record it again. On the
strict test device the step runs eagerly as if a CUDA stream captured it, as gg.cuda.graph does
there, and new shapes are refused as on CUDA.
"""

import collections
import contextlib
import weakref

from gpugrad import devices
from gpugrad import tensors
from gpugrad.cuda import graphed
from gpugrad.devices import tape as tapes

_DATA = tensors.Tensor.__dict__["data"]  # the slot behind Tensor.data


def compile(step, device=None):
    """step(*args, **kwargs) as a CompiledStep: the first call runs it eagerly; on CUDA it is
    captured into a CUDA graph (gg.cuda.graph), on the CPU the second call records its NumPy
    calls; every later call copies its arguments into static buffers and replays. See
    GraphedStep for the contract."""
    return CompiledStep(step, device)


class CompiledStep(graphed.GraphedStep):
    """A step recorded once and replayed: GraphedStep's contract on every device.

    On the CPU the first call runs eagerly (it makes the optimizer's state and the gradients),
    the second records while it runs (a real step: it returns the objects every replay will
    return), and each later one replays the recording. The step's Python code runs on the first
    two calls only. A NumPy array the step reads from its closure is a constant to it (pass
    data that changes as an argument). Called with arguments of other shapes or dtypes, it
    records the step again for them, as a real step, and keeps that recording beside the others
    (up to KEPT, the oldest dropped first), where a CUDA graph refuses them (ShapeError)."""

    KEPT = 8  # recordings kept on the CPU, one per shapes and dtypes of the arguments

    def recapture(self):
        super().recapture()
        self._program = None
        self._shapes = None  # the shapes and dtypes of the arguments of the recording in use
        self._swaps = {}  # tensors whose data the recording set -> (weakref, that array)
        self._recordings = collections.OrderedDict()  # shapes and dtypes -> _Recording

    @property
    def recorded(self):
        """True once the CPU holds a recording of the step (see calls)."""
        return self._program is not None

    @property
    def calls(self):
        """How many NumPy calls one replay makes on the CPU (GraphStepError before it records)."""
        if self._program is None:
            raise graphed.GraphStepError("CompiledStep.calls: nothing was recorded" + (
                " yet (the second call records the step)" if self._records() else
                f" (only the CPU records; {self.device!r} does not)"))
        return len(self._program)

    def _records(self):
        return self.device is not None and devices.get(self.device).xp is tapes.np

    def __call__(self, *args, **kwargs):
        if self._layout is None or not self._records():
            return super().__call__(*args, **kwargs)
        self._check_baked()
        shapes = _shapes_of(args, kwargs)
        if self._shapes is None:
            self._shapes = _shapes_of(self._args, self._kwargs)
        if shapes != self._shapes:
            self._switch_to(shapes, args, kwargs)
        self._copy_in(args, kwargs)
        if self._program is None:
            return self._record()
        tapes.replay(self._program)
        self.replays += 1
        return self._outputs

    def _switch_to(self, shapes, args, kwargs):
        """Make the recording for these shapes the one in use: one kept (its tensors given back
        the arrays it set), or, where there is none, new buffers for the next recording."""
        if self._program is not None:
            self._recordings[self._shapes] = _Recording(
                self._args, self._kwargs, self._layout, self._program, self._outputs,
                self._swaps)
        kept = self._recordings.pop(shapes, None)
        if kept is None:
            be, layout = devices.get(self.device), {}
            kept = _Recording(tuple(self._static(i, a, be, layout) for i, a in enumerate(args)),
                              {k: self._static(k, v, be, layout) for k, v in kwargs.items()},
                              layout, None, None, {})
        (self._args, self._kwargs, self._layout, self._program, self._outputs,
         self._swaps) = kept
        self._shapes = shapes
        for ref, array in self._swaps.values():
            tensor = ref()
            if tensor is not None:
                _DATA.__set__(tensor, array)
        while len(self._recordings) >= self.KEPT:
            self._recordings.popitem(last=False)

    def _record(self):
        tape = tapes.Tape()
        args = tuple(tape.face(a) for a in self._args)
        kwargs = {k: tape.face(v) for k, v in self._kwargs.items()}
        swaps = {}
        try:
            # capturing: checks that read values on the host (labels in range) cannot replay,
            # so the step takes the way a CUDA capture takes (a bad label gives NaN)
            with devices.graph_step(capturing=True, face=tape.face), tapes.recording_into(tape), \
                    _tensors_through(tape, swaps):
                outputs = self.step(*args, **kwargs)
        except BaseException:
            self.recapture()  # the next call starts over
            raise
        self._outputs = _plain(outputs, tape)
        self._swaps = {k: (ref, a) for k, (ref, a) in swaps.items() if ref() is not None}
        swaps.clear()  # the arrays of tensors gone are the program's alone (tape.program)
        self._program = tape.program()
        return self._outputs


# one recording of the step, for one set of shapes and dtypes of its arguments
_Recording = collections.namedtuple("_Recording", "args kwargs layout program outputs swaps")


def _shapes_of(args, kwargs):
    """What picks a recording: each argument's shape and dtype (None for other values)."""
    return tuple((key, getattr(v, "shape", None), getattr(v, "dtype", None))
                 for key, v in (*enumerate(args), *kwargs.items()))


@contextlib.contextmanager
def _tensors_through(tape, swaps):
    """While a step records, every tensor's data reads as its face and is stored plain, so the
    tape sees what is done to parameters, gradients and activations, and no face outlives the
    recording. `swaps` gets each tensor whose data was set, with the array: another recording
    of the step sets them too, and this one's are given back before it replays."""
    get, put = _DATA.__get__, _DATA.__set__

    def store(t, value):
        put(t, tape.plain(value))
        swaps[id(t)] = (weakref.ref(t), get(t))
    tensors.Tensor.data = property(lambda t: tape.face(get(t)), store)
    try:
        yield
    finally:
        tensors.Tensor.data = _DATA


def _plain(outputs, tape):
    """The step's results with faces (arrays it returned) replaced by their plain arrays."""
    if isinstance(outputs, tapes.Traced):
        return tape.plain(outputs)
    if type(outputs) in (tuple, list):
        return type(outputs)(_plain(o, tape) for o in outputs)
    if type(outputs) is dict:
        return {k: _plain(v, tape) for k, v in outputs.items()}
    return outputs
