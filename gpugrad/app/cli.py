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
import tempfile
import textwrap

import numpy as np

import gpugrad
from gpugrad import devices
from gpugrad.devices.cuda import kernels
from gpugrad import ops
from gpugrad.app import training


# ---------------------------------------------------------------------------- argument types
# Every number and output path is checked when the arguments are parsed, so a bad one stops
# the command at once with argparse's usage message, never after minutes of work.


def _integer(minimum, maximum=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


# NumPy and CuPy generators both take a seed in [0, 2**32)
_seed = _integer(0, 2**32 - 1)


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
        return devices.canonical_device(text)
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


def _cannot_write_in(directory):
    """Why no file can be made in `directory`, or None when one can. A real file is made and
    removed: os.access says yes to root everywhere, /proc and read-only mounts included."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".gpugrad-probe-", dir=directory)
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    os.unlink(probe)
    return None


def _output_file(kind):
    """An output path whose directory exists and is writable (checked before any work)."""
    def parse(text):
        path = pathlib.Path(text)
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name")
        parent = path.parent if str(path.parent) else pathlib.Path(".")
        if not parent.is_dir():
            raise argparse.ArgumentTypeError(f"the directory {parent} does not exist")
        why = _cannot_write_in(parent)
        if why:
            raise argparse.ArgumentTypeError(f"the directory {parent} is not writable ({why})")
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
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"cannot make or write the folder {text} "
                                         f"({existing} is not a folder)")
    why = _cannot_write_in(existing)
    if why:
        raise argparse.ArgumentTypeError(f"cannot make or write the folder {text} "
                                         f"({existing} takes no new files: {why})")
    return text


_output_dir.__name__ = "folder"


def _input_file(text):
    """A file to read, which must exist (checked before any work)."""
    path = pathlib.Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} does not exist" if not path.exists()
                                         else f"{text} is not a file")
    return text


_input_file.__name__ = "file"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults in --help, except where there is none to show (a flag, an option
    that is off unless given) or the help already says it."""

    def _get_help_string(self, action):
        nothing_to_show = any(action.default is v for v in (None, False, argparse.SUPPRESS))
        if nothing_to_show or "default" in action.help:
            return action.help
        return super()._get_help_string(action)


# ---------------------------------------------------------------------------- refusals
# Exit status 2 for "could not run here" as for a bad argument (argparse's own status), each
# one line on stderr: an option's value that cannot work (_OptionError: usage line and the
# option's name, as argparse does), or an extra, a device or memory that this machine lacks
# (_CannotRun). Status 1 is left for a command that ran and failed.


class _OptionError(Exception):
    def __init__(self, option, message):
        super().__init__(f"argument {option}: {message}")


class _CannotRun(Exception):
    pass


def _require(module, needed_by, install, package=None):
    """Import `module` or refuse the command in one line naming what needs it and its extra."""
    try:
        __import__(module)
    except ImportError:
        raise _CannotRun(f"{needed_by} needs {package or module}, which is not installed: "
                         f"{install}") from None


def _require_dataset_extra(spec):
    if spec == "digits":
        _require("sklearn", "the digits dataset (--dataset digits, the default)",
                 "pip install 'gpugrad[data]'", package="scikit-learn")


def _size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"


def available_memory(device):
    """(bytes a new allocation can take on `device`, where that figure comes from), or
    (None, why) where it cannot be known."""
    if device.startswith("cuda"):
        be = devices.get(device)
        with be.active:
            free, _ = be.xp.cuda.runtime.memGetInfo()  # of the current device
            pooled = be.xp.get_default_memory_pool().free_bytes()  # CuPy reuses these first
        return free + pooled, "free on the GPU (cudaMemGetInfo) and in CuPy's pool"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except OSError:
        pass
    try:
        return (os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
                "free physical pages (sysconf)")
    except (AttributeError, ValueError, OSError):
        return None, "this system reports no free memory"


def _check_fits(device, needed, what, options):
    """Refuse before allocating when the estimate `needed` ({term: bytes}, with 'total') is
    more than `device` has free. options maps each term to the option it grows with; the
    option named is the first whose terms alone do not fit, else the one with the most."""
    free, source = available_memory(device)
    total = needed["total"]
    if free is None or total <= free:
        return
    terms = {k: v for k, v in needed.items() if k != "total" and v}
    by_option = {}
    for term, option in options.items():
        by_option[option] = by_option.get(option, 0) + needed.get(term, 0)
    culprit = next((o for o, b in by_option.items() if b > free),
                   max(by_option, key=by_option.get))
    raise _OptionError(culprit, (
        f"{what} needs at least {_size(total)} ("
        + ", ".join(f"{k} {_size(v)}" for k, v in terms.items())
        + f") but {device} has {_size(free)} available ({source})"))


def _options_4_7(args):
    """Which option to name for each term of _network_4_7_bytes: the widest dimension for the
    parameters, the batch for what grows with it."""
    widest = max(("--d", args.d), ("--h", args.h), ("--q", args.q), key=lambda kv: kv[1])[0]
    return {"parameters": widest, "gradients": widest, "input": "--batch",
            "saved activations": "--batch"}


def _network_4_7_bytes(d, h, q, batch, layers=2, activation="relu", dtype="float32", lam=1e-3):
    """The least memory one training step of section 4.7's network takes: parameters,
    gradients, the input and the saved activations, from shapes alone (the meta device)."""
    from gpugrad.app import experiments

    itemsize = np.dtype(dtype).itemsize
    parameters = (d * h + (layers - 2) * h * h + h * q) * itemsize
    terms = {"parameters": parameters, "gradients": parameters, "input": batch * d * itemsize}
    if layers <= 1000:  # tracing costs Python time per layer; past that the terms above must do
        model = experiments.mlp_4_7(d, h, q, layers, activation, dtype, device="meta")
        _, terms["saved activations"] = training.saved_at_batch(
            model, d, batch, experiments.loss_4_7(model, lam))
    return {**terms, "total": sum(terms.values())}


def info_report(compile_kernels=False):
    """Versions, backends and devices, as a dict (what `gpugrad info` prints)."""
    cupy_version = devices.cupy_version()
    nvcc = shutil.which("nvcc")
    cuda_ok = gpugrad.cuda.is_available()
    present = ["cpu"]
    if cuda_ok:
        cp = devices.get("cuda:0").xp
        for i in range(gpugrad.cuda.device_count()):
            props = cp.cuda.runtime.getDeviceProperties(i)
            present.append(f"cuda:{i} ({props['name'].decode()})")
    return {
        "gpugrad": gpugrad.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cupy": cupy_version or "not installed",
        "cuda available": cuda_ok,
        "cuda unavailable because": None if cuda_ok else gpugrad.cuda.unavailable_reason(),
        "devices": present,
        "default device": devices.default_device(),
        "default dtype": str(devices.get_default_dtype()),
        "nvcc": f"{nvcc}: {kernels.nvcc_version(nvcc)}" if nvcc else "not found",
        "differentiable ops": len(gpugrad.OPS),
        **kernels.compile_report(devices.get("cuda:0").xp if cuda_ok else None, compile_kernels),
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
        devices.get(devices.canonical_device(args.device))  # a clear error if unusable
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
    from gpugrad.app.bench import environment, suites, table, torch_baseline

    device = _setup(args)
    env = environment.environment(device)
    names = list(suites.SUITES) if args.suite == "all" else [args.suite]
    if args.batch is not None and names != ["mlp"]:
        raise ValueError(f"--batch sets the mlp suite's batch sizes, not {args.suite}'s: "
                         f"gpugrad bench mlp --batch {','.join(map(str, args.batch))}")
    if args.batch is not None:  # the mlp suite's deep network (784-1024x3-10) at these batches
        batch = max(args.batch)
        _check_fits(device, training.training_bytes(4, 784, 1024, 10, batch, "sgd", 0),
                    f"the mlp suite's deep network at batch {batch}",
                    {"parameters": "--batch", "gradients": "--batch",
                     "optimizer state": "--batch", "saved activations": "--batch"})
    print(", ".join(f"{k}: {v}" for k, v in env.items() if v is not None))
    if torch_baseline.torch_or_none() is None:
        print("note: PyTorch is not installed, so there are no PyTorch baselines "
              "(pip install torch==2.13.0)")
    results = {"environment": env, "quick": not args.full, "rows": []}
    options = {"batches": args.batch} if args.batch is not None else {}  # mlp alone takes it
    for suite in names:
        rows = suites.SUITES[suite](device, quick=not args.full, progress=_progress, **options)
        results["rows"] += rows
        print(f"\n{suite} ({device}):")
        print(table.format_table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"\nwrote {args.json}")
    if args.plot:
        _plot_bench(results["rows"], names, args.plot, device)
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
    from gpugrad.app.bench import table

    plt = _pyplot()
    per_suite = {s: [r for r in rows if r["suite"] == s and r.get(_BENCH_PLOTS[s][0]) is not None]
                 for s in suites}
    heights = [max(2.0, 0.22 * len(per_suite[s]) + 1.0) for s in suites]  # room for every label
    fig, axes = plt.subplots(len(suites), 1, figsize=(9, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, suite in zip(axes[:, 0], suites):
        key, label = _BENCH_PLOTS[suite]
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
    _save_figure(fig, path)


def cmd_train(args):
    device = _setup(args)
    _require_dataset_extra(args.dataset)
    lr = training.OPTIMIZERS[args.optimizer] if args.lr is None else args.lr
    settings = {"dataset": args.dataset, "layers": args.layers, "hidden": args.hidden,
                "batch": args.batch, "optimizer": args.optimizer, "lr": lr,
                "momentum": args.momentum, "weight_decay": args.weight_decay, "seed": args.seed}
    resume = _read_checkpoint(args.resume, settings) if args.resume else None
    if args.distributed:  # under mpirun: rank 0 speaks and writes files, the others train
        from gpugrad import distributed

        _require("mpi4py", "--distributed", "pip install 'gpugrad[distributed]'")
        try:
            rank, size = distributed.init()
        except distributed.DistributedError as e:  # mpi4py without an MPI library
            raise _CannotRun(f"--distributed: {e}") from None
        if rank != 0:
            sys.stdout = open(os.devnull, "w")
            args.save = args.json = args.plot = None
        print(f"data parallel: {size} rank(s) (gg.distributed over MPI)")
    dataset = training.load_dataset(args.dataset)
    n_classes = int(max(dataset.train_y.max(), dataset.test_y.max())) + 1
    n_in = dataset.train_x.shape[1]
    _check_fits(device, training.training_bytes(args.layers, n_in, args.hidden, n_classes,
                                                args.batch, args.optimizer, args.momentum),
                f"training {args.layers} weight layer(s) of hidden width {args.hidden} at batch "
                f"{args.batch} with {args.optimizer}",
                {"parameters": "--hidden", "gradients": "--hidden", "optimizer state": "--hidden",
                 "saved activations": "--batch"})
    print(f"{args.dataset}: {len(dataset.train_x)} train, {len(dataset.test_x)} test, "
          f"{n_in} features; MLP of {args.layers} weight layer(s), hidden {args.hidden}, "
          f"{args.optimizer} lr {lr:g}, device {device}")
    if resume is not None:
        print(f"resuming from {args.resume} after epoch {int(resume['epoch'])}: "
              f"{args.epochs} more epoch(s)")
    first_epoch = int(resume["epoch"]) + 1 if resume is not None else 1
    last_epoch = first_epoch + args.epochs - 1

    def progress(batches, total, epoch):
        try:
            from tqdm import tqdm
        except ImportError:
            return batches
        return tqdm(batches, total=total, desc=f"epoch {epoch}/{last_epoch}", leave=False,
                    file=sys.stderr, disable=None)

    history, finished = [], {}

    def on_epoch(model, entry):
        # each line as its epoch ends (flushed: a pipe or a log file sees it too)
        history.append(entry)
        print(f"{entry['epoch']:>5}  {entry['loss']:>8.4f}  {entry['train accuracy']:>9.2%}  "
              f"{entry['test accuracy']:>8.2%}  {entry['seconds']:>7.2f}", flush=True)

    def on_checkpoint(state):  # the last finished epoch's state, kept for --save (interrupts too)
        finished["state"] = state

    print(f"{'epoch':>5}  {'loss':>8}  {'train acc':>9}  {'test acc':>8}  {'seconds':>7}", flush=True)
    interrupted = False
    try:
        training.train(
            dataset, layers=args.layers, hidden=args.hidden, epochs=args.epochs,
            batch=args.batch, lr=lr, momentum=args.momentum, optimizer=args.optimizer,
            weight_decay=args.weight_decay, device=device, seed=args.seed, progress=progress,
            on_epoch=on_epoch, distributed=args.distributed, resume=resume,
            on_checkpoint=on_checkpoint if args.save else None, dataset_name=args.dataset)
    except KeyboardInterrupt:
        interrupted = True
        print(f"interrupted during epoch {first_epoch + len(history)}: keeping the "
              f"{len(history)} finished epoch(s)", flush=True)
    if history:
        total = sum(h["seconds"] for h in history)
        print(f"final test accuracy {history[-1]['test accuracy']:.2%} after {total:.1f} s of "
              f"training ({len(history)} epoch(s))")
    if args.save and finished:
        gpugrad.save(finished["state"], args.save)
        print(f"saved a checkpoint after epoch {finished['state']['epoch']} to {args.save} "
              f"(go on with --resume {args.save})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args) | {"func": None}, "history": history,
                       "interrupted": interrupted}, fh, indent=2)
    if args.plot and history:
        _plot_history(history, args.plot, f"MLP of {args.layers} weight layer(s) on {args.dataset}")
    return 130 if interrupted else 0


def _read_checkpoint(path, settings):
    """The checkpoint that --resume names, refused (naming the option) unless this run can
    continue it exactly: a gpugrad train checkpoint whose settings this run shares."""
    from gpugrad import serialize

    try:
        state = gpugrad.load(path)
        different = training.check_checkpoint(state, settings)
    except (ValueError, TypeError, KeyError, OSError, serialize.StateFileError) as e:
        raise _OptionError("--resume", f"{path}: {e}") from None
    if different:
        setting, (saved, now) = next(iter(different.items()))
        option = "--" + setting.replace("_", "-")
        raise _OptionError(option, f"{now} here, but {path} was trained with {option} {saved}; "
                                   f"resume with the options it was trained with")
    return state


def _setup(args):
    """The command's device, checked usable now; with --plot, matplotlib checked present."""
    device = devices.canonical_device(args.device) if args.device else devices.default_device()
    devices.get(device)  # a clear error before any work if the device is unusable
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
    _require("matplotlib", "--plot", "pip install 'gpugrad[plot]'")


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
    device = _setup(args)
    h, steps, n_in = args.hidden, args.steps, 8
    # two RNNs (W_ih, W_hh, two biases) and two LSTMs (four gates each), float32, and per step
    # at least each model's state kept for the backward
    parameters = 4 * (2 * (h * n_in + h * h + 2 * h) + 2 * (4 * h * n_in + 4 * h * h + 8 * h))
    _check_fits(device, {"parameters": parameters, "saved states": 4 * 4 * steps * h,
                         "total": parameters + 4 * 4 * steps * h},
                f"rnn-grads with hidden {h} over {steps} steps",
                {"parameters": "--hidden", "saved states": "--steps"})
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
    from gpugrad.app import experiments

    device = _setup(args)
    if args.compare_torch:
        _require("torch", "--compare-torch", "pip install torch==2.13.0", package="PyTorch")
    batches = args.batch
    _check_fits(device, _network_4_7_bytes(args.d, args.h, args.q, max(batches), args.layers,
                                           args.activation, args.dtype, args.lam),
                f"section 4.7's network (d={args.d}, h={args.h}, q={args.q}, {args.layers} "
                f"weight layers) at batch {max(batches)}",
                _options_4_7(args))
    rows = experiments.experiment(args.d, args.h, args.q, batches, layers=args.layers,
                             activation=args.activation, dtype=args.dtype, device=device,
                             lam=args.lam, with_checkpoint=args.checkpoint,
                             with_torch=args.compare_torch)
    print(f"section 4.7 network: d={args.d}, h={args.h}, q={args.q}, {args.layers} weight layers, "
          f"{args.activation}, {args.dtype}, no bias, J = L + lambda/2 sum |W|^2, device {device}")
    cols = [c for c in rows[0] if c != "saved by op"]
    from gpugrad.app.bench import table

    print(table.format_table([{**{c: r[c] for c in cols}, "suite": None} for r in rows]))
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

    from gpugrad import drawing
    from gpugrad.app import experiments

    device = _setup(args)
    _check_fits(device, _network_4_7_bytes(args.d, args.h, args.q, args.batch, lam=args.lam),
                f"section 4.7's network (d={args.d}, h={args.h}, q={args.q}) at batch "
                f"{args.batch}", _options_4_7(args))
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
        from gpugrad.app.bench import timing

        secs = {name: statistics.median(timing.repeat_times(step, device))
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
    from gpugrad.app.bench import table

    device = _setup(args)
    _require_dataset_extra(args.dataset)
    lr = training.OPTIMIZERS["sgd"] if args.lr is None else args.lr
    dataset = training.load_dataset(args.dataset)
    n_classes = int(max(dataset.train_y.max(), dataset.test_y.max())) + 1
    _check_fits(device, training.training_bytes(args.layers, dataset.train_x.shape[1],
                                                args.hidden, n_classes, max(args.batch),
                                                "sgd", args.momentum),
                f"training {args.layers} weight layer(s) of hidden width {args.hidden} at batch "
                f"{max(args.batch)}",
                {"parameters": "--hidden", "gradients": "--hidden", "optimizer state": "--hidden",
                 "saved activations": "--batch"})
    print(f"{args.dataset}: {len(dataset.train_x)} train, {len(dataset.test_x)} test; "
          f"MLP of {args.layers} weight layer(s), hidden {args.hidden}, {args.epochs} epochs at "
          f"each batch size, lr {lr:g}, momentum {args.momentum}, device {device}")
    rows = training.minibatch_sweep(dataset, args.batch, epochs=args.epochs, layers=args.layers,
                                    hidden=args.hidden, lr=lr, momentum=args.momentum,
                                    device=device, seed=args.seed)
    print(table.format_table([{**r, "suite": None} for r in rows]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "func"},
                       "rows": rows}, fh, indent=2)
    return 0


def cmd_selftest(args):
    from gpugrad.app import selftest

    return selftest.main(args)


_LAYERS_HELP = "weight layers: 2 is section 4.7's network (one hidden layer)"


def _option_parents():
    """The options several commands share, declared once (argparse parents)."""
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", type=_device_name,
                        help="cpu, cuda, cuda:N or strict (default: the default device, cpu "
                             "unless GPUGRAD_DEVICE says otherwise)")
    json_file = argparse.ArgumentParser(add_help=False)
    json_file.add_argument("--json", metavar="FILE", type=_output_file("json"),
                           help="write the figures as JSON")
    plot = argparse.ArgumentParser(add_help=False)
    plot.add_argument("--plot", metavar="FILE.png", type=_output_file("plot"),
                      help="draw the figures (png, svg, pdf, jpg; needs the plot extra)")
    learning = argparse.ArgumentParser(add_help=False)
    learning.add_argument("--dataset", type=_dataset, default="digits",
                          help="digits (needs the data extra) or mnist:DIR (its four IDX files)")
    learning.add_argument("--layers", type=int, default=2, choices=[1, 2, 3],
                          help=_LAYERS_HELP + "; 1 is softmax regression, 3 has two hidden layers")
    learning.add_argument("--hidden", type=_integer(1), default=256, help="hidden layer width")
    learning.add_argument("--lr", type=_real(0, low_open=True), default=None,
                          help="learning rate (default: 0.1 with sgd, 0.001 with adam)")
    learning.add_argument("--momentum", type=_real(0, 1, high_open=True), default=0.9,
                          help="SGD's momentum")
    learning.add_argument("--seed", type=_seed, default=0,
                          help="seeds the initialization and each epoch's shuffle")
    return device, json_file, plot, learning


def build_parser():
    """The `gpugrad` parser; each command's subparser is in parser.commands[name]."""
    parser = argparse.ArgumentParser(prog="gpugrad", description=gpugrad.__doc__)
    parser.add_argument("--version", action="version", version=f"gpugrad {gpugrad.__version__}")
    sub = parser.add_subparsers(dest="command")
    device, json_file, plot, learning = _option_parents()

    def command(name, parents, help):
        return sub.add_parser(name, parents=parents, help=help, description=help,
                              formatter_class=_HelpFormatter)

    info = command("info", [device, json_file],
                   "versions, backends, devices, nvcc (--device: check it is usable)")
    info.add_argument("--compile", action="store_true",
                      help="without a GPU, check that every kernel compiles with nvcc")
    info.set_defaults(func=cmd_info)
    from gpugrad.app.bench import suites

    bench = command("bench", [device, json_file, plot],
                    "time gpugrad beside its baselines (default: all, quick)")
    bench.add_argument("suite", nargs="?", default="all", choices=["all", *suites.SUITES],
                       help="which suite")
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", default=True,
                      help="fewer sizes, well under a minute on a 2-core CPU (the default)")
    size.add_argument("--full", action="store_true", help="every size")
    bench.add_argument("--batch", type=_batch_sizes, default=None,
                       help="mlp only: comma-separated batch sizes (default 32,1024; with "
                            "--full 32,128,512,1024,4096); --quick or --full still sets the "
                            "blocks per case (3 or 5)")
    bench.set_defaults(func=cmd_bench)
    train = command("train", [device, json_file, plot, learning],
                    "train an MLP of 1, 2 (section 4.7's network) or 3 weight layers")
    train.add_argument("--epochs", type=_integer(1), default=20,
                       help="epochs to train (with --resume: epochs more)")
    train.add_argument("--batch", type=_integer(1), default=32, help="examples per step")
    train.add_argument("--optimizer", choices=list(training.OPTIMIZERS), default="sgd",
                       help="sgd (with --momentum) or adam")
    train.add_argument("--weight-decay", type=_real(0), default=0.0,
                       help="L2 weight decay, added to the gradient as PyTorch does")
    train.add_argument("--distributed", action="store_true",
                       help="data parallel over the ranks of mpirun (needs the distributed extra)")
    train.add_argument("--save", metavar="FILE", type=_output_file("state"),
                       help="write a checkpoint after the last finished epoch (the model, the "
                            "optimizer, the epoch; gg.save's .npz)")
    train.add_argument("--resume", metavar="FILE", type=_input_file,
                       help="continue from a checkpoint that --save wrote, with the options it "
                            "was trained with, for --epochs more epochs")
    train.set_defaults(func=cmd_train)
    grads = command("rnn-grads", [device, json_file, plot],
                    "how fast the gradient vanishes back through time")
    grads.add_argument("--steps", type=_integer(2), default=50, help="sequence length")
    grads.add_argument("--hidden", type=_integer(1), default=32, help="state width")
    grads.add_argument("--seed", type=_seed, default=0, help="seeds the sequence and the weights")
    grads.set_defaults(func=cmd_rnn_grads)
    mem = command("memory", [device, json_file, plot],
                  "training vs prediction memory, analytic and measured")
    mem.add_argument("--d", type=_integer(1), default=784, help="input width")
    mem.add_argument("--h", type=_integer(1), default=256, help="hidden width")
    mem.add_argument("--q", type=_integer(1), default=10, help="classes")
    mem.add_argument("--batch", type=_batch_sizes, default="1,64,256,1024",
                     help="comma-separated batch sizes")
    mem.add_argument("--layers", type=_integer(2), default=2,
                     help=_LAYERS_HELP + "; each one more adds a hidden layer")
    mem.add_argument("--activation", default="relu", choices=sorted(ops.activation.ACTIVATIONS),
                     help="the hidden layers' activation")
    mem.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                     help="of the parameters and activations")
    mem.add_argument("--lam", type=_real(0), default=1e-3, help="the L2 penalty's lambda")
    mem.add_argument("--checkpoint", action="store_true", help="also checkpoint the hidden layers")
    mem.add_argument("--compare-torch", action="store_true",
                     help="what PyTorch saves, beside (needs torch)")
    mem.set_defaults(func=cmd_memory)
    draw = command("graph", [device, json_file],
                   "draw section 4.7's graph and print its equations (exercises 2, 4)")
    draw.add_argument("--d", type=_integer(1), default=784, help="input width")
    draw.add_argument("--h", type=_integer(1), default=256, help="hidden width")
    draw.add_argument("--q", type=_integer(1), default=10, help="classes")
    draw.add_argument("--batch", type=_integer(1), default=1,
                      help="examples per step (1 is the book's single x)")
    draw.add_argument("--lam", type=_real(0), default=1e-3, help="the L2 penalty's lambda")
    draw.add_argument("--bias", action="store_true",
                      help="a bias in the hidden layer (exercise 2)")
    draw.add_argument("--second-order", action="store_true",
                      help="also the gradient's own graph and a Hessian-vector product's time")
    draw.add_argument("--out", type=_output_dir, default=".",
                      help="folder for the .dot (and .svg) files (made if missing)")
    draw.set_defaults(func=cmd_graph)
    sweep = command("minibatch", [device, json_file, learning],
                    "train at several batch sizes: memory, time, accuracy (ex. 5)")
    sweep.add_argument("--batch", type=_batch_sizes, default="1,8,32,128,512",
                       help="comma-separated batch sizes")
    sweep.add_argument("--epochs", type=_integer(1), default=5, help="epochs at each batch size")
    sweep.set_defaults(func=cmd_minibatch)
    check = command("selftest", [device, json_file],
                    "check this install on a device: the bundled tests, the kernels, a short "
                    "benchmark, one verdict (exit 0 PASS, 1 FAIL, 2 INCOMPLETE)")
    check.add_argument("--no-bench", action="store_true", help="skip the short benchmark")
    check.set_defaults(func=cmd_selftest)
    parser.commands = sub.choices
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except _OptionError as e:  # as argparse reports a bad value: usage, the option, status 2
        parser.commands[args.command].error(str(e))
    except (_CannotRun, devices.DeviceError, ImportError) as e:  # this machine lacks it
        print(f"gpugrad {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:
        print(f"gpugrad {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a command with work to keep (train) handles it itself
        print(f"\ngpugrad {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
