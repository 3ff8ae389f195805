"""The `gpugrad` command line: `gpugrad info` reports what this machine can run."""

import argparse
import json
import math
import os
import pathlib
import platform
import shutil
import statistics
import sys

import numpy as np

import gpugrad
from gpugrad import backend
from gpugrad import kernels
from gpugrad import ops


# ---------------------------------------------------------------------------- argument types
# Every number and output path is checked when the arguments are parsed, so a bad one stops
# the command at once with argparse's usage message, never after minutes of work.


def _integer(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def _real(low=None, high=None, low_open=False, high_open=False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or too_low or too_high:
            lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
            raise argparse.ArgumentTypeError(
                f"must be a finite number {' and '.join(x for x in (lo, hi) if x)}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


def _batch_sizes(text):
    sizes = []
    for part in text.split(","):
        try:
            sizes.append(_integer(1)(part.strip()))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"batch sizes are comma-separated integers >= 1: "
                                             f"{e}") from None
    return sizes


def _device_name(text):
    """The device's canonical name; whether it is usable here is checked when the command starts."""
    try:
        return backend.canonical_device(text)
    except (ValueError, TypeError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _dataset(text):
    if text == "digits":
        return text
    if text.startswith("mnist:"):
        directory = pathlib.Path(text[len("mnist:"):])
        if not directory.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: the directory {directory} does not exist")
        return text
    raise argparse.ArgumentTypeError(f"unknown dataset {text!r}: use 'digits' or 'mnist:DIR'")


_PLOT_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg")


def _output_file(kind):
    """An output path whose directory exists and is writable (checked before any work)."""
    def parse(text):
        path = pathlib.Path(text)
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name")
        parent = path.parent if str(path.parent) else pathlib.Path(".")
        if not parent.is_dir():
            raise argparse.ArgumentTypeError(f"the directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise argparse.ArgumentTypeError(f"the directory {parent} is not writable")
        if kind == "plot" and path.suffix.lower().lstrip(".") not in _PLOT_FORMATS:
            raise argparse.ArgumentTypeError(f"{text}: the file name must end in one of "
                                             f"{', '.join('.' + f for f in _PLOT_FORMATS)}")
        return text
    parse.__name__ = f"{kind} file"
    return parse


def _output_dir(text):
    """A folder to write into: made if missing, refused if a file is there or it cannot be made."""
    path = pathlib.Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    existing = next(p for p in (path, *path.parents) if p.exists()) if path.parents else path
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot make or write the folder {text} "
                                         f"({existing} is not a writable folder)")
    return text


_output_dir.__name__ = "folder"


def info_report(compile_kernels=False):
    """Versions, backends and devices, as a dict (what `gpugrad info` prints)."""
    cupy_version = backend.cupy_version()
    nvcc = shutil.which("nvcc")
    cuda_ok = gpugrad.cuda.is_available()
    devices = ["cpu"]
    if cuda_ok:
        cp = backend.get("cuda:0").xp
        for i in range(gpugrad.cuda.device_count()):
            props = cp.cuda.runtime.getDeviceProperties(i)
            devices.append(f"cuda:{i} ({props['name'].decode()})")
    return {
        "gpugrad": gpugrad.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cupy": cupy_version or "not installed",
        "cuda available": cuda_ok,
        "cuda unavailable because": None if cuda_ok else gpugrad.cuda.unavailable_reason(),
        "devices": devices,
        "default device": backend.default_device(),
        "default dtype": str(backend.get_default_dtype()),
        "nvcc": f"{nvcc}: {kernels.nvcc_version(nvcc)}" if nvcc else "not found",
        "differentiable ops": len(gpugrad.OPS),
        **kernels.compile_report(backend.get("cuda:0").xp if cuda_ok else None, compile_kernels),
    }


def _print_table(rows):
    width = max(len(k) for k in rows)
    for k, v in rows.items():
        if isinstance(v, list):
            v = ", ".join(v)
        if v is not None:
            print(f"{k:<{width}}  {v}")


def cmd_info(args):
    if args.device:
        backend.get(backend.canonical_device(args.device))  # a clear error if unusable
    report = info_report(compile_kernels=args.compile)
    _print_table(report)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0


def _progress(done, total, what):
    if not sys.stderr.isatty():  # a log file or a pipe gets no carriage-return animation
        return
    width = 30
    filled = width * done // total
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {what:<28}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def cmd_bench(args):
    from gpugrad import benchmarks

    device = _setup(args)
    env = benchmarks.environment(device)
    suites = list(benchmarks.SUITES) if args.suite == "all" else [args.suite]
    if args.batch is not None and suites != ["mlp"]:
        raise ValueError(f"--batch sets the mlp suite's batch sizes, not {args.suite}'s: "
                         f"gpugrad bench mlp --batch {','.join(map(str, args.batch))}")
    print(", ".join(f"{k}: {v}" for k, v in env.items() if v is not None))
    if benchmarks.torch_or_none() is None:
        print("note: PyTorch is not installed, so there are no PyTorch baselines "
              "(pip install torch==2.13.0)")
    results = {"environment": env, "quick": not args.full, "rows": []}
    options = {"batches": args.batch} if args.batch is not None else {}  # mlp alone takes it
    for suite in suites:
        rows = benchmarks.SUITES[suite](device, quick=not args.full, progress=_progress, **options)
        results["rows"] += rows
        print(f"\n{suite} ({device}):")
        print(benchmarks.format_table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"\nwrote {args.json}")
    if args.plot:
        _plot_bench(results["rows"], suites, args.plot, device)
    return 0


# per suite: (the ratio plotted, how each bar is labelled)
_BENCH_PLOTS = {
    "kernels": ("% of copy", lambda r: f"{r['activation']} 2^{r['n'].bit_length() - 1} {r['impl']}"),
    "mlp": ("gpugrad / torch", lambda r: f"{r['model'].split()[0]} b{r['batch']}"),
    "memory": ("train / predict", lambda r: f"batch {r['batch']}"),
    "jacobian": ("gpugrad / torch", lambda r: f"{r['shape (m, n)']} {r['impl'].split()[-1]}"),
    "overhead": ("gpugrad / torch", lambda r: r["mode"]),
}


def _plot_bench(rows, suites, path, device):
    plt = _pyplot()
    per_suite = {s: [r for r in rows if r["suite"] == s and r.get(_BENCH_PLOTS[s][0]) is not None]
                 for s in suites}
    heights = [max(2.0, 0.22 * len(per_suite[s]) + 1.0) for s in suites]  # room for every label
    fig, axes = plt.subplots(len(suites), 1, figsize=(9, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, suite in zip(axes[:, 0], suites):
        key, label = _BENCH_PLOTS[suite]
        mine = per_suite[suite]
        ax.barh([label(r) for r in mine], [r[key] for r in mine])
        if "/" in key and "torch" in key:
            ax.axvline(1.0, color="k", lw=0.8)  # parity with the baseline
        ax.set(xlabel=key, title=f"{suite} ({device})")
        ax.tick_params(axis="y", labelsize=7)
    _save_figure(fig, path)


def cmd_train(args):
    from gpugrad import training

    device = _setup(args)
    if args.distributed:  # under mpirun: rank 0 speaks and writes files, the others train
        from gpugrad import distributed

        rank, size = distributed.init()
        if rank != 0:
            sys.stdout = open(os.devnull, "w")
            args.save = args.json = args.plot = None
        print(f"data parallel: {size} rank(s) (gg.distributed over MPI)")
    dataset = training.load_dataset(args.dataset)
    print(f"{args.dataset}: {len(dataset.train_x)} train, {len(dataset.test_x)} test, "
          f"{dataset.train_x.shape[1]} features; {args.layers}-layer MLP, hidden {args.hidden}, "
          f"device {device}")

    def progress(batches, total, epoch):
        try:
            from tqdm import tqdm
        except ImportError:
            return batches
        return tqdm(batches, total=total, desc=f"epoch {epoch}/{args.epochs}", leave=False,
                    file=sys.stderr, disable=None)

    history, finished = [], {}

    def on_epoch(model, entry):
        # each line as its epoch ends (flushed: a pipe or a log file sees it too), and the
        # parameters of the last finished epoch kept for --save in case of an interrupt
        history.append(entry)
        print(f"{entry['epoch']:>5}  {entry['loss']:>8.4f}  {entry['train accuracy']:>9.2%}  "
              f"{entry['test accuracy']:>8.2%}  {entry['seconds']:>7.2f}", flush=True)
        if args.save:
            finished["state"] = {n: p.numpy() for n, p in model.named_parameters()}

    print(f"{'epoch':>5}  {'loss':>8}  {'train acc':>9}  {'test acc':>8}  {'seconds':>7}", flush=True)
    interrupted = False
    try:
        training.train(
            dataset, layers=args.layers, hidden=args.hidden, epochs=args.epochs,
            batch=args.batch, lr=args.lr, momentum=args.momentum,
            weight_decay=args.weight_decay, device=device, seed=args.seed, progress=progress,
            on_epoch=on_epoch, distributed=args.distributed)
    except KeyboardInterrupt:
        interrupted = True
        print(f"interrupted during epoch {len(history) + 1}: keeping the {len(history)} "
              f"finished epoch(s)", flush=True)
    if history:
        total = sum(h["seconds"] for h in history)
        print(f"final test accuracy {history[-1]['test accuracy']:.2%} after {total:.1f} s of "
              f"training ({len(history)} epoch(s))")
    if args.save and finished:
        gpugrad.save(finished["state"], args.save)
        print(f"saved the parameters after epoch {len(history)} to {args.save}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args) | {"func": None}, "history": history,
                       "interrupted": interrupted}, fh, indent=2)
    if args.plot and history:
        _plot_history(history, args.plot, f"{args.layers}-layer MLP on {args.dataset}")
    return 130 if interrupted else 0


def _setup(args):
    """The command's device, checked usable now; with --plot, matplotlib checked present."""
    device = backend.canonical_device(args.device) if args.device else backend.default_device()
    backend.get(device)  # a clear error before any work if the device is unusable
    if getattr(args, "plot", None):
        _require_matplotlib()
    return device


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    print(f"wrote {path}")


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'gpugrad[plot]'") from None


def _plot_history(history, path, title):
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [h["loss"] for h in history], marker="o")
    a.set(xlabel="epoch", ylabel="training loss", title=title)
    b.plot(epochs, [h["train accuracy"] for h in history], marker="o", label="train")
    b.plot(epochs, [h["test accuracy"] for h in history], marker="o", label="test")
    b.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    b.legend()
    _save_figure(fig, path)


def cmd_rnn_grads(args):
    from gpugrad import training

    device = _setup(args)
    norms = training.rnn_gradient_norms(steps=args.steps, hidden=args.hidden, seed=args.seed,
                                        device=device)
    names = list(norms)
    T = args.steps
    print(f"||dE_T / ds_k|| for E_T at step T = {T}, hidden {args.hidden}, seed {args.seed}:")
    print(f"{'steps back':>10}  " + "  ".join(f"{n:>10}" for n in names))
    shown = sorted({0, 1, 2, 5, 10, 20, 30, 40, T - 1} | set(range(0, T, max(T // 10, 1))))
    for back in [b for b in shown if b < T]:
        k = T - 1 - back
        print(f"{back:>10}  " + "  ".join(f"{norms[n][k]:>10.3g}" for n in names))
    print("per-step factor (geometric mean of ||dE/ds_k|| / ||dE/ds_k+1||):")
    for n in names:
        first, last = norms[n][T - 1], norms[n][0]
        factor = (last / first) ** (1 / (T - 1)) if first > 0 and last > 0 else 0.0
        print(f"  {n:<9} {factor:.3f}   ({last:.3g} at {T - 1} steps back vs {first:.3g} at 0)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"steps": T, "hidden": args.hidden, "seed": args.seed, "norms": norms}, fh, indent=2)
    if args.plot:
        fig, ax = _pyplot().subplots(figsize=(7, 4))
        for n in names:
            ax.semilogy(range(T), [norms[n][T - 1 - b] for b in range(T)], label=n)
        ax.set(xlabel="steps back from T", ylabel="||dE_T / ds_k||",
               title=f"gradient reaching earlier states (T={T}, hidden {args.hidden})")
        ax.legend()
        _save_figure(fig, args.plot)
    return 0


def cmd_memory(args):
    from gpugrad import experiments

    device = _setup(args)
    if args.compare_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ValueError("--compare-torch needs PyTorch: pip install torch==2.13.0") from None
    batches = args.batch
    rows = experiments.experiment(args.d, args.h, args.q, batches, layers=args.layers,
                             activation=args.activation, dtype=args.dtype, device=device,
                             lam=args.lam, with_checkpoint=args.checkpoint,
                             with_torch=args.compare_torch)
    print(f"section 4.7 network: d={args.d}, h={args.h}, q={args.q}, {args.layers} weight layers, "
          f"{args.activation}, {args.dtype}, no bias, J = L + lambda/2 sum |W|^2, device {device}")
    cols = [c for c in rows[0] if c != "saved by op"]
    table = [{c: r[c] for c in cols} for r in rows]
    from gpugrad import benchmarks

    print(benchmarks.format_table([{**t, "suite": None} for t in table]))
    if args.layers == 2:
        ok = all(r["saved (formula)"] == r["saved (measured)"] == r["saved (estimate)"] for r in rows)
        print(f"formula, estimate and measured saved activations: {'equal' if ok else 'DIFFERENT'} "
              f"at every batch size")
    print("saved by op at the largest batch: " + ", ".join(
        f"{op} {b:,}" for op, b in sorted(rows[-1]["saved by op"].items(), key=lambda kv: -kv[1])))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "func"}, "rows": rows}, fh, indent=2)
    if args.plot:
        fig, ax = _pyplot().subplots(figsize=(7, 4))
        for key in ("predict peak", "train peak", "saved (measured)", "saved (formula)",
                    "saved (torch)", "saved (checkpoint)"):
            if rows[0].get(key) is not None:
                ax.loglog(batches, [r[key] for r in rows], marker="o", label=key)
        ax.set(xlabel="batch size", ylabel="bytes", title="memory: training vs prediction")
        ax.legend()
        _save_figure(fig, args.plot)
    return 0


def cmd_graph(args):
    import shutil

    from gpugrad import drawing, experiments

    device = _setup(args)
    sizes = dict(d=args.d, h=args.h, q=args.q, batch=args.batch, bias=args.bias, lam=args.lam,
                 device=device)
    J, names, _, _ = experiments.graph_4_7(**sizes)
    first = drawing.graph_of(J, names)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "graph-4.7" + ("-bias" if args.bias else "")
    title = (f"section 4.7 network{' with a hidden bias' if args.bias else ''}: d={args.d}, "
             f"h={args.h}, q={args.q}, batch {args.batch}")
    graphs = [(stem, first, title)]
    report = None
    if args.second_order:
        report = experiments.second_order_4_7(**sizes)
        graphs.append((stem + "-second-order", report["second"],
                       "the graph of the gradient (create_graph=True)"))
    formats = ["dot"] + (["svg"] if shutil.which("dot") else [])
    written = [str(g.render(out / f"{name}.{fmt}", t)) for name, g, t in graphs for fmt in formats]
    print(f"{title}, device {device}: {len(first.nodes)} ops, {first.saved_bytes:,} bytes saved")
    print("\nforward:")
    print("\n".join("  " + line for line in first.forward_equations()))
    print("\nbackward:")
    print("\n".join("  " + line for line in first.backward_equations()))
    if report is not None:
        second = report["second"]
        print("\nexercise 4, second derivatives:")
        print(f"  graph of J:              {len(report['first'].nodes):3d} ops, "
              f"{report['first'].saved_bytes:,} bytes saved")
        print(f"  graph of the gradient:   {len(second.nodes):3d} ops, "
              f"{second.saved_bytes:,} bytes saved (create_graph=True)")
        from gpugrad import benchmarks

        secs = {name: statistics.median(benchmarks.repeat_times(step, device))
                for name, step in report["steps"].items()}
        ratio = secs["hessian-vector product"] / secs["gradient"]
        print(f"  one gradient {secs['gradient'] * 1e3:.3f} ms, one Hessian-vector product "
              f"{secs['hessian-vector product'] * 1e3:.3f} ms: {ratio:.2f}x")
    print("\nwrote " + ", ".join(written) + ("" if "svg" in formats else
          " (no SVG: Graphviz's dot program is not on the PATH; apt-get install graphviz)"))
    if args.json:
        record = {"args": {k: v for k, v in vars(args).items() if k != "func"},
                  "ops": len(first.nodes), "saved bytes": first.saved_bytes,
                  "forward": first.forward_equations(), "backward": first.backward_equations(),
                  "files": written}
        if report is not None:
            record["second order"] = {
                "ops": len(report["second"].nodes), "saved bytes": report["second"].saved_bytes,
                "seconds": secs, "hvp / gradient": ratio}
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=2)
    return 0


def cmd_minibatch(args):
    from gpugrad import benchmarks, training

    device = _setup(args)
    dataset = training.load_dataset(args.dataset)
    print(f"{args.dataset}: {len(dataset.train_x)} train, {len(dataset.test_x)} test; "
          f"{args.layers}-layer MLP, hidden {args.hidden}, {args.epochs} epochs at each batch "
          f"size, lr {args.lr}, momentum {args.momentum}, device {device}")
    rows = training.minibatch_sweep(dataset, args.batch, epochs=args.epochs, layers=args.layers,
                                    hidden=args.hidden, lr=args.lr, momentum=args.momentum,
                                    device=device, seed=args.seed)
    print(benchmarks.format_table([{**r, "suite": None} for r in rows]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "func"},
                       "rows": rows}, fh, indent=2)
    return 0


def cmd_selftest(args):
    from gpugrad import selftest

    return selftest.main(args)


def _option_parents():
    """The options several commands share, declared once (argparse parents)."""
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", type=_device_name,
                        help="cpu, cuda, cuda:N or strict (default: the default device)")
    json_file = argparse.ArgumentParser(add_help=False)
    json_file.add_argument("--json", metavar="FILE", type=_output_file("json"),
                           help="write the figures as JSON")
    plot = argparse.ArgumentParser(add_help=False)
    plot.add_argument("--plot", metavar="FILE.png", type=_output_file("plot"),
                      help="draw the figures (png, svg, pdf, jpg)")
    training = argparse.ArgumentParser(add_help=False)
    training.add_argument("--dataset", type=_dataset, default="digits",
                          help="digits or mnist:DIR (default digits)")
    training.add_argument("--layers", type=int, default=3, choices=[2, 3, 4],
                          help="weight layers: 3 is one hidden layer, section 4.7's network")
    training.add_argument("--hidden", type=_integer(1), default=256)
    training.add_argument("--lr", type=_real(0, low_open=True), default=0.1)
    training.add_argument("--momentum", type=_real(0, 1, high_open=True), default=0.9)
    training.add_argument("--seed", type=int, default=0)
    return device, json_file, plot, training


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gpugrad", description=gpugrad.__doc__)
    parser.add_argument("--version", action="version", version=f"gpugrad {gpugrad.__version__}")
    sub = parser.add_subparsers(dest="command")
    device, json_file, plot, training = _option_parents()
    info = sub.add_parser("info", parents=[device, json_file],
                          help="versions, backends, devices, nvcc (--device: check it is usable)")
    info.add_argument("--compile", action="store_true",
                      help="without a GPU, check that every kernel compiles with nvcc")
    info.set_defaults(func=cmd_info)
    from gpugrad import benchmarks

    bench = sub.add_parser("bench", parents=[device, json_file, plot],
                           help="time gpugrad beside its baselines (default: all, quick)")
    bench.add_argument("suite", nargs="?", default="all", choices=["all", *benchmarks.SUITES])
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", default=True,
                      help="fewer sizes, well under a minute on a 2-core CPU (the default)")
    size.add_argument("--full", action="store_true", help="every size")
    bench.add_argument("--batch", type=_batch_sizes, default=None,
                       help="mlp only: comma-separated batch sizes (default 32,1024; with "
                            "--full 32,128,512,1024,4096); --quick or --full still sets the "
                            "blocks per case (3 or 5)")
    bench.set_defaults(func=cmd_bench)
    train = sub.add_parser("train", parents=[device, json_file, plot, training],
                           help="train the lecture's 2-, 3- or 4-layer MLP")
    train.add_argument("--epochs", type=_integer(1), default=20)
    train.add_argument("--batch", type=_integer(1), default=32)
    train.add_argument("--weight-decay", type=_real(0), default=0.0)
    train.add_argument("--distributed", action="store_true",
                       help="data parallel over the ranks of mpirun (needs the distributed extra)")
    train.add_argument("--save", metavar="FILE", type=_output_file("state"),
                       help="write the trained parameters (.npz)")
    train.set_defaults(func=cmd_train)
    grads = sub.add_parser("rnn-grads", parents=[device, json_file, plot],
                           help="how fast the gradient vanishes back through time")
    grads.add_argument("--steps", type=_integer(2), default=50)
    grads.add_argument("--hidden", type=_integer(1), default=32)
    grads.add_argument("--seed", type=int, default=0)
    grads.set_defaults(func=cmd_rnn_grads)
    mem = sub.add_parser("memory", parents=[device, json_file, plot],
                         help="training vs prediction memory, analytic and measured")
    mem.add_argument("--d", type=_integer(1), default=784)
    mem.add_argument("--h", type=_integer(1), default=256)
    mem.add_argument("--q", type=_integer(1), default=10)
    mem.add_argument("--batch", type=_batch_sizes, default="1,64,256,1024",
                     help="comma-separated batch sizes")
    mem.add_argument("--layers", type=_integer(2), default=2,
                     help="weight layers (2: section 4.7's network)")
    mem.add_argument("--activation", default="relu", choices=sorted(ops.activation.ACTIVATIONS))
    mem.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    mem.add_argument("--lam", type=_real(0), default=1e-3, help="the L2 penalty's lambda")
    mem.add_argument("--checkpoint", action="store_true", help="also checkpoint the hidden layers")
    mem.add_argument("--compare-torch", action="store_true", help="what PyTorch saves, beside")
    mem.set_defaults(func=cmd_memory)
    draw = sub.add_parser("graph", parents=[device, json_file],
                          help="draw section 4.7's graph and print its equations (exercises 2, 4)")
    draw.add_argument("--d", type=_integer(1), default=784)
    draw.add_argument("--h", type=_integer(1), default=256)
    draw.add_argument("--q", type=_integer(1), default=10)
    draw.add_argument("--batch", type=_integer(1), default=1,
                      help="examples per step (default 1, the book's single x)")
    draw.add_argument("--lam", type=_real(0), default=1e-3, help="the L2 penalty's lambda")
    draw.add_argument("--bias", action="store_true",
                      help="a bias in the hidden layer (exercise 2)")
    draw.add_argument("--second-order", action="store_true",
                      help="also the gradient's own graph and a Hessian-vector product's time")
    draw.add_argument("--out", type=_output_dir, default=".",
                      help="folder for the .dot (and .svg) files (made if missing)")
    draw.set_defaults(func=cmd_graph)
    sweep = sub.add_parser("minibatch", parents=[device, json_file, training],
                           help="train at several batch sizes: memory, time, accuracy (ex. 5)")
    sweep.add_argument("--batch", type=_batch_sizes, default="1,8,32,128,512",
                       help="comma-separated batch sizes")
    sweep.add_argument("--epochs", type=_integer(1), default=5)
    sweep.set_defaults(func=cmd_minibatch)
    check = sub.add_parser("selftest", parents=[device, json_file],
                           help="check this install on a device: the bundled tests, the kernels, "
                                "a short benchmark, one verdict")
    check.add_argument("--no-bench", action="store_true", help="skip the short benchmark")
    check.set_defaults(func=cmd_selftest)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (backend.DeviceError, ValueError, ImportError, FileNotFoundError) as e:
        print(f"gpugrad {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a command with work to keep (train) handles it itself
        print(f"\ngpugrad {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
