"""apply(): running one op: the inputs as arrays on one device, the graph parents and
tangents they bring, the forward, the node recorded, the output's tangents. The steps every op
takes are inline (a call costs about 3% of an op on small arrays); the others are named.
registry.apply is this function (the op functions look it up there at call time)."""

import numpy as np

from gpugrad import devices
from gpugrad import recording
from gpugrad import tensors
from gpugrad.ops import autocasting
from gpugrad.ops import namespace
from gpugrad.ops import op as op_table
from gpugrad.ops import shortcuts

_Tensor = tensors.Tensor
_new = object.__new__
_ERROR_STATE, _QUIET_STATE = devices.ERROR_STATE, devices.QUIET_STATE
_CONSTANT = recording.CONSTANT
_SCALARS = (bool, int, float)
_BFLOAT16 = devices.BFLOAT16  # a float NumPy calls void (devices/dtypes.py)


def apply(op, inputs, params):
    """Run an op's forward; record a recording.Node when recording and an input is in the graph."""
    state = recording._state  # one lookup of the thread's recording state
    if state.autocast is not None:  # inside gg.autocast: the inputs cast as its table says
        inputs = autocasting.cast_inputs(op, inputs, state.autocast)
    fast = _fast_inputs(inputs)
    if fast is not None:
        xs = inputs
        arrays, device = fast
    else:
        xs, arrays, device = _other_inputs(op, inputs)
    parents = tangents = None
    constant = False  # the output is in the graph with a zero derivative (recording.CONSTANT)
    if op.differentiable:
        if state.recording:  # the inputs' nodes; None unless one takes a gradient
            parents = tuple([x._node if isinstance(x, _Tensor) else None for x in xs])
            constant = _CONSTANT in parents  # nodes compare by identity
            if constant:  # a constant input takes no gradient: no parent
                parents = tuple(None if p is _CONSTANT else p for p in parents)
            if parents.count(None) == len(parents):
                parents = None
        if state.forward_levels:
            tangents = _input_tangents(state.forward_levels, xs)
    structure = state.structure_only
    if structure is not None and parents is not None:
        structure.note_inputs(xs)
    be = devices.get(device)
    aux = None
    token = _ERROR_STATE.set(_QUIET_STATE)
    try:  # the forward, inline: every op pays for this function's calls
        if op.forward_saving is not None and structure is None and (
                parents is not None or tangents is not None):
            with be.active:  # the forward that also makes what only backward needs
                y, aux = op.forward_saving(be.xp, *arrays, **params)
        elif be.is_cpu:  # no device to make current
            y = op.forward(np, *arrays, **params)
        else:
            with be.active:
                y = op.forward(be.xp, *arrays, **params)
    except recording.ShapeError:
        raise
    except (ValueError, IndexError, TypeError) as e:
        raise op.forward_error(xs, e) from e
    finally:
        _ERROR_STATE.reset(token)
    if be.is_cpu and type(y) is not np.ndarray and not devices.is_backend_array(y):
        y = np.asarray(y)  # NumPy reductions return scalars (to_device returns a device array)
    y_device = devices.device_of_array(y) if op.moves_device else device
    if y.dtype.kind != "f" and y.dtype != _BFLOAT16:  # integer and bool results never take a gradient
        return tensors.wrap(y, y_device, None)
    node = _CONSTANT if constant else None
    if parents is not None:
        node = _record(op, state, parents, xs, arrays, y, y_device, params, aux, structure)
    out = _new(_Tensor)  # tensors.wrap, inline
    out.data, out.device, out._node, out.grad, out._tangent = y, y_device, node, None, None
    if tangents is not None:
        _set_tangents(op, tangents, xs, out, node, aux, params)
    return out


def _fast_inputs(inputs):
    """(arrays, device) when every input is a Tensor (or a Parameter) on one device or a Python
    scalar, else None: the common case in one pass; _other_inputs handles the rest."""
    device = None
    arrays = []
    for x in inputs:
        cls = type(x)
        if cls is _Tensor or (cls not in _SCALARS and isinstance(x, _Tensor)):
            if device is None:
                device = x.device
            elif x.device != device:
                return None
            arrays.append(x.data)
        elif cls in _SCALARS:
            arrays.append(x)
        else:
            return None
    return (arrays, device) if device is not None else None


def _other_inputs(op, inputs):
    """(inputs as Tensors or scalars, their arrays, their device): arrays and lists become
    tensors on the common device; tensors on different devices are refused."""
    xs = _coerce(op, inputs)
    device = None
    arrays = []
    for x in xs:
        if isinstance(x, _Tensor):
            arrays.append(x.data)
            device = device or x.device
        else:
            arrays.append(x)
    return xs, arrays, device


def _coerce(op, inputs):
    device = None
    for x in inputs:
        if isinstance(x, tensors.Tensor):
            if device is None:
                device = x.device
            elif x.device != device:
                raise devices.DeviceError(
                    f"{op.name}: tensors are on different devices, {device!r} and {x.device!r}; "
                    f"move one with .to(device)")
        elif isinstance(x, recording.Unsaved):
            x.fail()
    out = []
    for i, x in enumerate(inputs):
        if isinstance(x, tensors.Tensor):
            out.append(x)
        elif isinstance(x, (bool, int, float, np.generic)):
            out.append(x)
        elif x is None:
            if i not in op.optional:
                raise TypeError(f"{op.name}: input {op.input_name(i)} is None")
            out.append(None)  # an optional input that is absent (linear without a bias)
        else:
            out.append(tensors.tensor(x, device=device))
    if not out:
        raise ValueError(f"{op.name}: needs at least one tensor, got none")
    if not any(isinstance(x, tensors.Tensor) for x in out):
        out[0] = tensors.tensor(out[0])  # only Python scalars: the first gets the default dtype
    return out


def _record(op, state, parents, xs, arrays, y, y_device, params, aux, structure):
    """The node of this op's output: what it saved, and where anomaly mode wants the line."""
    metas = [(a.shape, a.dtype, x.device) if isinstance(x, _Tensor) else None
             for x, a in zip(xs, arrays)]  # None for Python scalars
    node = recording.Node(op, parents, metas, arrays, y, y_device, params, aux,
                          keep=structure is None)
    if structure is not None:
        structure.nodes.add(node)
    else:
        for p in parents:  # the common case (no parent can share) costs this loop only
            if p is not None and p.op is not None and p.op.aux_from_output is not None:
                shortcuts.share_saved_outputs(node, xs)
                break
    if state.note_lines:
        recording._recorded_at[node] = recording._user_line()
    return node


# ---------------------------------------------------------------------------- forward mode


def _input_tangents(levels, xs):
    """{level: the inputs' tangents at that level} for the active levels some input has a
    tangent at; None if none has."""
    out = None
    for level in levels:
        ts = tuple(x._tangent.get(level) if isinstance(x, _Tensor) and x._tangent else None
                   for x in xs)
        if any(t is not None for t in ts):
            out = out or {}
            out[level] = ts
    return out


def _set_tangents(op, tangents, xs, y, node, aux, params):
    """The output's tangent at each level from the op's jvp rule (forward mode), and those of
    what the node saved. A level's tangent is computed with only the levels outside it
    active, outermost first, so that it carries their tangents (nested gg.jvp) and y already
    has its own by then."""
    state = recording._state
    extra = {k: tensors.wrap(a, y.device) for k, a in aux.items()} if aux else {}
    y._tangent = {}
    for level in sorted(tangents):
        outer = state.forward_levels
        state.forward_levels = tuple(lv for lv in outer if lv < level)
        cast, state.autocast = state.autocast, None  # a tangent follows its output's dtype
        try:
            t = op.jvp(namespace.TENSOR_OPS, tangents[level], *xs, y=y, **extra, **params)
            if t is None:  # only inputs the output does not vary with have tangents
                continue
            if t.shape != y.shape:
                t = op_table.OPS["broadcast_to"].function(t, y.shape)
            if t.dtype != y.dtype:
                t = t.astype(y.dtype)
        finally:
            state.forward_levels, state.autocast = outer, cast
        y._tangent[level] = t
    y._tangent = y._tangent or None
    if node is not None and node is not _CONSTANT:
        _note_saved_tangents(node, xs, y)


def _note_saved_tangents(node, xs, y):
    """The tangents of what the node saved (recording.Node.tangents)."""
    found = {}
    for key in node.saved:
        t = y._tangent if key == "y" else (
            xs[key]._tangent if isinstance(key, int) and isinstance(xs[key], _Tensor) else None)
        if t:
            found[key] = t
    node.tangents = found or None
