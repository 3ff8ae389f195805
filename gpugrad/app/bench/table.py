"""The rows the suites return, as a table: every key a column, and under a suite's table what
its ratio columns are and how they were taken; a row prints a ratio or a note, never both."""

import textwrap

from gpugrad.app.bench import blocks, timing

RATIO_METHOD = ("median over clean blocks of the per-block ratio of medians (each block: every "
                "case's turn of repeats, interleaved; clean: beside both turns other processes "
                "kept under {tol:g} cores busy, a fixed NumPy workload ran within {work:g}x "
                "its quickest (and a probe of PyTorch's pool within {pool:g}x, beside PyTorch's "
                "turns), and each side within {unstable:g}x of its other blocks; printed only when it agrees within {agree:g}x with the ratio of "
                "the medians over those blocks)")
# What each ratio column of each suite is: format_table prints these under a suite's table.
RATIO_COLUMNS = {
    "gpugrad / torch": {
        "mlp": "this row's step time / its PyTorch counterpart's (eager / eager, products / "
               "products, captured / torch graph)",
        "jacobian": "gg.jacobian's time / torch.func's in the same mode (rev / jacrev, fwd / "
                    "jacfwd)",
        "overhead": "gpugrad's time per op / PyTorch's in the same mode",
        "einsum": "gg.einsum's time / torch.einsum's in the same mode (forward; forward + "
                  "backward of every operand under a sum)"},
    "gpugrad time / this": {"kernels": "gpugrad's time / this row's"},
    "% of copy": {"kernels": "100 x (bytes the kernel moves / its time) / (bytes a device copy "
                             "moves / its time)"},
    "captured / hand-written": {"mlp": "the captured step's time / the hand-written captured "
                                       "step's"},
    "compiled / hand-written": {"mlp": "the compiled step's time (gg.compile: recorded and "
                                       "replayed) / the hand-written NumPy step's"},
    "compiled / jax jit": {"mlp": "the compiled step's time / JAX's jit-compiled step's on the "
                                  "same device"},
    "time / fp32": {"mlp": "the step's time in this precision (under autocast, or with TF32 on) / "
                           "the same library's float32 step's"},
    "gpugrad / torch layer": {"rnn": "gpugrad's step time / PyTorch's with torch.nn.<layer>"},
    "gpugrad / torch cells": {"rnn": "gpugrad's step time / PyTorch's with a Python loop of "
                                     "torch.nn.<layer>Cell"},
}


def ratio_of(verdict, scale=lambda r: r):
    return None if verdict["ratio"] is None else scale(verdict["ratio"])


def with_verdicts(row, verdicts):
    """The row, and if any of the verdicts its ratios come from was flagged, its note, with
    every ratio of the row withheld (a row prints a ratio or a note, never both); the figures
    behind each verdict go with it ("ratio checks", in the JSON, not the table)."""
    notes = [v["note"] for v in verdicts if v["note"]]
    if notes:
        row.update({k: None for k in RATIO_COLUMNS if k in row})
        row["note"] = notes[0]
    row["ratio checks"] = [{k: v for k, v in verdict.items() if k not in ("note", "cause")}
                           for verdict in verdicts]
    return row


# keys of a row that the JSON keeps and the table leaves out
NOT_IN_TABLE = ("suite", "ratio checks")


def format_table(rows):
    """A fixed-width table of the rows (every key a column), and under a benchmark suite's
    table what its ratio columns are and how they were taken."""
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(k for r in rows for k in r if k not in NOT_IN_TABLE))

    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)
    table = [cols] + [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in table]
    return "\n".join(lines + ratio_legend(rows, cols))


def ratio_legend(rows, cols=None):
    """Lines saying what each ratio column of benchmark rows is and how it was taken (none for
    other tables)."""
    suites = list(dict.fromkeys(r["suite"] for r in rows if r.get("suite") is not None))
    cols = cols or list(dict.fromkeys(k for r in rows for k in r))
    mine = [(c, s, RATIO_COLUMNS[c][s]) for c in cols if c in RATIO_COLUMNS
            for s in suites if s in RATIO_COLUMNS[c]]
    if not mine:
        return []
    method = RATIO_METHOD.format(tol=blocks.YARDSTICK_TOLERANCE, work=blocks.WORKLOAD_TOLERANCE,
                                 pool=blocks.POOL_TOLERANCE, unstable=timing.UNSTABLE_FACTOR,
                                 agree=blocks.RATIO_AGREEMENT)
    lines = [f"ratio columns, each the {method}:"] + [
        f"{c}{f' ({s})' if len(suites) > 1 else ''}: {what}" for c, s, what in mine]
    lines.append("'-' beside a note: no ratio, and the note says why")
    return [textwrap.fill(line, 100, initial_indent="  " if i else "",
                          subsequent_indent="    " if i else "  ")
            for i, line in enumerate(lines)]


def why_no_ratio(rows, key):
    """Why none of the rows has a `key` to draw (for an empty plot panel)."""
    if not rows:
        return "no rows"
    notes = [r["note"] for r in rows if r.get("note")]
    if notes:
        return (f"no {key}: {len(notes)} row(s) flagged, e.g. "
                f"{notes[0].split('; no ratio')[0]}")
    if not any(key in r for r in rows):
        return f"no {key} column in these rows"
    return f"no {key}: no baseline ran beside these rows (PyTorch missing or not on this device)"


def with_turn_note(row, turns, impl):
    """A row with no ratio of its own (a baseline's) notes when none of its turns was clean,
    so that a time read under load is not taken for this implementation's."""
    note = turns.turn_note(impl)
    if note:
        row["note"] = note
    return row

