"""Memory accounting: what training keeps that prediction does not, in bytes.

Three figures, never mixed up:

- saved (ledger.py): the arrays the graph keeps for backward, read from the nodes (the ops'
  save= declarations, plus array-valued parameters such as labels or index arrays), each by its
  own bytes and memory shared by several nodes or views counted once, split into parameters
  and activations (what training adds);
- allocated (measure.py): the allocator's new bytes over a region, current and peak, and
  compare() putting one prediction beside one training step;
- predicted from shapes alone (planning.py): section 4.7's mlp_formula(), estimate() on the
  meta device, and fit() choosing checkpoints for a budget.
"""

from gpugrad.memory.ledger import SavedReport, saved, saved_by_node
from gpugrad.memory.measure import ROWS, Allocations, Report, compare, track
from gpugrad.memory.planning import FitPlan, estimate, fit, mlp_formula

__all__ = ["ROWS", "Allocations", "FitPlan", "Report", "SavedReport", "compare", "estimate",
           "fit", "mlp_formula", "saved", "saved_by_node", "track"]
