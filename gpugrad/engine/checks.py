"""The engine's checks: gradients NaN or inf under detect_anomaly, saved arrays changed in
place since they were recorded."""

from gpugrad import devices
from gpugrad import recording
from gpugrad import tensors
from gpugrad.recording import AnomalyError, GraphError


def check_finite(node, g, input_grads):
    """Raise AnomalyError if a gradient the node's rule returned holds NaN or inf (gradients
    as arrays, or as Tensors under create_graph)."""
    g = _array(g)
    for i, gi in enumerate(input_grads):
        if gi is None:
            continue
        devices.forbid_in_graph_step("detect_anomaly (it reads every gradient on the host)",
                                     devices.HOST_READ_WHY)
        gi = _array(gi)
        xp = devices.get(node.metas[i][2]).xp
        finite = xp.isfinite(gi)
        if bool(finite.all()):
            continue
        n_nan, n_bad = int(xp.isnan(gi).sum()), int((~finite).sum())
        incoming = "finite" if bool(xp.isfinite(g).all()) else "not finite either"
        shapes = ", ".join(str(m[0]) if m is not None else "scalar" for m in node.metas)
        where = recording._recorded_at.get(node, "a line recorded outside detect_anomaly()")
        raise AnomalyError(
            f"detect_anomaly: the gradient of {node.op.name!r} for its {input_label(node.op, i)} "
            f"(shape {gi.shape}, {gi.dtype}) holds {n_nan} NaN and {n_bad - n_nan} inf of "
            f"{gi.size} values; the gradient coming into {node.op.name!r} (shape {g.shape}) was "
            f"{incoming}. {node.op.name!r} took inputs of shapes {shapes} and was recorded at "
            f"{where}")


def _array(v):
    return v.data if isinstance(v, tensors.Tensor) else v


def input_label(op, i):
    name = op.input_name(i)
    return name if name.startswith("input ") else f"input {name}"


def check_unchanged(node):
    """Raise if an array node saved was changed in place after the node was recorded."""
    for key, arr in node.saved.items():
        if not hasattr(arr, "shape"):
            continue
        root = recording._base(arr)
        entry = recording._changed.get(id(root))
        if entry is not None and entry[0]() is root and entry[1] > node.epoch:
            what = (input_label(node.op, key) if isinstance(key, int)
                    else "the output" if key == "y" else f"the saved {key}")
            raise GraphError(
                f"backward: {what} of {node.op.name!r}, saved for its gradient, was changed in "
                f"place after it was recorded (by item assignment, an optimizer step or "
                f"load_state_dict), so the gradient would be wrong; change a copy, or change it "
                f"after backward")
