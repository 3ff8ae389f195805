"""The memory suite: section 4.7's network, saved activations by formula and measured, and the
peak of training against prediction."""

from gpugrad.app import experiments


def memory_suite(device, quick=True, progress=None):
    """Section 4.7's network: saved activations formula vs measured, and train vs predict peak."""
    batches = [64, 1024] if quick else [1, 64, 256, 1024, 4096]
    rows = []
    for i, r in enumerate(experiments.experiment(784, 256, 10, batches, device=device)):
        rows.append({"suite": "memory", "batch": r["batch"], "saved (formula)": r["saved (formula)"],
                     "saved (measured)": r["saved (measured)"], "predict peak": r["predict peak"],
                     "train peak": r["train peak"], "train / predict": r["train/predict peak"]})
        if progress:
            progress(i + 1, len(batches), f"memory batch {r['batch']}")
    return rows
