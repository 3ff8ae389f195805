"""gg.autograd: recording (record, pause, train_mode ...), backward and grad, anomaly detection,
and the graph's types, in one namespace as PyTorch users expect; the engine is gpugrad/engine/."""

from gpugrad.engine.backward import backward, grad, gradients  # noqa: F401
from gpugrad.recording import (  # noqa: F401
    AnomalyError, GraphError, Leaf, Node, ShapeError, Unsaved, changed_in_place,
    detect_anomaly, forward_mode, is_anomaly_enabled, is_recording, is_structure_only,
    is_training, no_grad, note_lines, pause, predict_mode, record, set_detect_anomaly, structure_only,
    train_mode,
)
from gpugrad.ops.registry import apply  # noqa: F401  (run an op)
