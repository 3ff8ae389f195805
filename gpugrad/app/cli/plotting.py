"""The figures the commands draw with --plot (matplotlib, files only)."""

import textwrap

from gpugrad.app.bench import table

# per suite: (the ratio plotted, how each bar is labelled)
BENCH_PLOTS = {
    "kernels": ("% of copy", lambda r: f"{r['activation']} 2^{r['n'].bit_length() - 1} {r['impl']}"),
    "mlp": ("gpugrad / torch", lambda r: f"{r['model'].split()[0]} b{r['batch']}"),
    "memory": ("train / predict", lambda r: f"batch {r['batch']}"),
    "jacobian": ("gpugrad / torch", lambda r: f"{r['shape (m, n)']} {r['impl'].split()[-1]}"),
    "overhead": ("gpugrad / torch", lambda r: r["mode"]),
    "einsum": ("gpugrad / torch", lambda r: f"{r['problem'].split(' ')[0]} {r['mode']}"),
    "rnn": ("gpugrad / torch layer", lambda r: f"{r['layer']} {r['T, batch, hidden']}"),
}


def plot_bench(rows, suites, path, device):
    plt = pyplot()
    per_suite = {s: [r for r in rows if r["suite"] == s and r.get(BENCH_PLOTS[s][0]) is not None]
                 for s in suites}
    heights = [max(2.0, 0.22 * len(per_suite[s]) + 1.0) for s in suites]  # room for every label
    fig, axes = plt.subplots(len(suites), 1, figsize=(9, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, suite in zip(axes[:, 0], suites):
        key, label = BENCH_PLOTS[suite]
        mine = per_suite[suite]
        if mine:
            ax.barh([label(r) for r in mine], [r[key] for r in mine])
            if "/" in key and "torch" in key:
                ax.axvline(1.0, color="k", lw=0.8)  # parity with the baseline
        else:  # an empty panel says why it is empty
            why = table.why_no_ratio([r for r in rows if r["suite"] == suite], key)
            ax.text(0.5, 0.5, textwrap.fill(why, 100), ha="center", va="center", fontsize=8,
                    transform=ax.transAxes)
            ax.set(xticks=[], yticks=[])
        ax.set(xlabel=key, title=f"{suite} ({device})")
        ax.tick_params(axis="y", labelsize=7)
    save_figure(fig, path)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    print(f"wrote {path}")


def plot_history(history, path, title):
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [h["loss"] for h in history], marker="o")
    a.set(xlabel="epoch", ylabel="training loss", title=title)
    b.plot(epochs, [h["train accuracy"] for h in history], marker="o", label="train")
    b.plot(epochs, [h["test accuracy"] for h in history], marker="o", label="test")
    b.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    b.legend()
    save_figure(fig, path)
