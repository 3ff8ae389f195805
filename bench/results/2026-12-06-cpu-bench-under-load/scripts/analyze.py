"""The ratio cells of `gpugrad bench --json` runs, quiet against loaded.

    python analyze.py DIR...   (each DIR holds TREE-SUITE-MODE-N.json.gz and .txt: run.sh's
                                .json, gzipped here)

A run is quiet when its label says quiet and its log says other processes kept under
MAX_OTHERS cores busy on average during it; a "quiet" run with more (another engineer's tests
started during it) is counted with the loaded runs, as "natural". For each tree (before,
after) and suite: the quiet runs' [min, max] of each ratio cell, and how many ratios the
loaded runs printed, how many they flagged, and how many printed ratios fall outside the quiet
[min, max] (and by how much)."""

import collections
import glob
import gzip
import json
import os
import re
import sys

MAX_OTHERS = 0.25
COLS = {"kernels": ["% of copy", "gpugrad time / this"], "jacobian": ["gpugrad / torch"],
        "mlp": ["gpugrad / torch"], "overhead": ["gpugrad / torch"]}


def cell_key(r):
    s = r["suite"]
    if s == "kernels":
        return (r["activation"], r["n"], r["impl"])
    if s == "jacobian":
        return (r["shape (m, n)"], r["impl"])
    if s == "overhead":
        return (r["mode"], r["impl"])
    return (r["model"], r["batch"], r["impl"])


def others(path):
    """Cores other processes kept busy during the run, from its log (None if not recorded)."""
    m = re.search(r"# rc .*other processes kept ([0-9.]+) cores", open(path).read())
    return float(m.group(1)) if m else None


def main(dirs):
    runs = collections.defaultdict(dict)  # (tree, suite, mode) -> {label: rows}
    natural = []
    for d in dirs:
        for f in sorted(glob.glob(os.path.join(d, "*.json.gz"))):
            label = os.path.basename(f)[:-8]
            log = f[:-8] + ".txt"
            tree, _, mode, _ = label.split("-")
            if mode not in ("quiet", "load"):  # partial: a light load beside the run
                mode = "load"
            if mode == "quiet" and not (others(log) or 0) < MAX_OTHERS:
                natural.append(f"{label} ({others(log)} cores)")
                mode, label = "load", label.replace("quiet", "natural")
            for r in json.load(gzip.open(f))["rows"]:
                if r["suite"] in COLS:
                    runs[tree, r["suite"], mode].setdefault(label, []).append(r)
    summary, details = [], []
    for tree in ("before", "after"):
        for suite in COLS:
            quiet = runs.get((tree, suite, "quiet"), {})
            loaded = runs.get((tree, suite, "load"), {})
            if not quiet and not loaded:
                continue
            cells = collections.defaultdict(lambda: {"quiet": [], "flagged": 0, "load": {}})
            for rows in quiet.values():
                for r in rows:
                    for c in COLS[suite]:
                        if c in r and r[c] is not None:
                            cells[cell_key(r), c]["quiet"].append(r[c])
                        elif c in r and r.get("note"):
                            cells[cell_key(r), c]["flagged"] += 1
            printed = flagged = 0
            outside = []
            for label, rows in loaded.items():
                for r in rows:
                    for c in COLS[suite]:
                        if c not in r:
                            continue
                        cell = cells[cell_key(r), c]
                        run = label.split("-", 2)[2]
                        if r[c] is None:
                            if r.get("note"):
                                flagged += 1
                                cell["load"][run] = "flagged"
                            continue
                        printed += 1
                        cell["load"][run] = f"{r[c]:.3g}"
                        if cell["quiet"]:
                            lo, hi = min(cell["quiet"]), max(cell["quiet"])
                            if not lo <= r[c] <= hi:
                                off = max(r[c] / hi, lo / r[c])
                                outside.append((off, label, cell_key(r), c, r[c], lo, hi))
            outside.sort(reverse=True)
            line = (f"{tree:>6} {suite:>8}: {len(quiet)} quiet runs, {len(loaded)} loaded; under "
                    f"load {printed} ratios printed, {flagged} flagged; printed outside the quiet "
                    f"[min, max]: {len(outside)}")
            if outside:
                off, label, k, c, v, lo, hi = outside[0]
                line += (f" (beyond 1.2x of it: {sum(o[0] > 1.2 for o in outside)}; furthest "
                         f"{off:.3g}x: {label} {k} {c} = {v:.3g}, quiet {lo:.3g}-{hi:.3g})")
            summary.append(line)
            details += [f"{tree} {suite} {label}: {k} {c} = {v:.4g}, quiet {lo:.4g}-{hi:.4g} "
                        f"({off:.3g}x outside)" for off, label, k, c, v, lo, hi in outside]
            for (k, c), cell in sorted(cells.items(), key=lambda kv: str(kv[0])):
                quiet_values = ", ".join(f"{v:.3g}" for v in cell["quiet"]) or "-"
                flags = f" ({cell['flagged']} flagged)" if cell["flagged"] else ""
                load = ", ".join(f"{run}: {v}" for run, v in sorted(cell["load"].items())) or "-"
                details.append(f"  [{tree} {suite}] {k} {c}: quiet {quiet_values}{flags} | {load}")
    print("quiet runs counted as loaded (other processes busy during them): "
          + ("; ".join(natural) or "none"))
    print("\n".join(summary))
    print()
    print("\n".join(details))


if __name__ == "__main__":
    main(sys.argv[1:])
