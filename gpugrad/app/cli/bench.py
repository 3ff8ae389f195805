"""`gpugrad bench`: the suites' tables, beside their baselines, with a progress line on a
terminal."""

import json
import sys

from gpugrad.app import precisions, training
from gpugrad.app.bench import environment, jax_baseline, suites, table, torch_baseline
from gpugrad.app.cli import arguments, plotting, refusals


def register(subparsers):
    parser = arguments.add_command(subparsers, "bench", ["device", "json", "plot"],
                                   "time gpugrad beside its baselines (default: all, quick)")
    parser.add_argument("suite", nargs="?", default="all", choices=["all", *suites.SUITES],
                        help="which suite")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", default=True,
                      help="fewer sizes, well under a minute on a 2-core CPU (the default)")
    size.add_argument("--full", action="store_true", help="every size")
    parser.add_argument("--batch", type=arguments.batch_sizes, default=None,
                        help="mlp only: comma-separated batch sizes (default 32,1024; with "
                             "--full 32,128,512,1024,4096); --quick or --full still sets the "
                             "blocks per case (3 or 5)")
    parser.add_argument("--precision", choices=["tf32", "bf16", "fp16"], default=None,
                        help="mlp only: also time each step in this precision: tf32 (float32 "
                             "with each library's TF32 switch on for the step; no effect off "
                             "CUDA) or under autocast in bf16 or fp16 (gg.autocast beside "
                             "torch.autocast; no loss scaling)")
    parser.set_defaults(func=run)


def progress(done, total, what):
    if not sys.stderr.isatty():  # a log file or a pipe gets no carriage-return animation
        return
    width = 30
    filled = width * done // total
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {what:<28}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def run(args):
    device = refusals.setup(args)
    env = environment.environment(device)
    names = list(suites.SUITES) if args.suite == "all" else [args.suite]
    if args.batch is not None and names != ["mlp"]:
        raise ValueError(f"--batch sets the mlp suite's batch sizes, not {args.suite}'s: "
                         f"gpugrad bench mlp --batch {','.join(map(str, args.batch))}")
    if args.batch is not None:  # the mlp suite's deep network (784-1024x3-10) at these batches
        batch = max(args.batch)
        refusals.check_fits(device, training.training_bytes(4, 784, 1024, 10, batch, "sgd", 0),
                    f"the mlp suite's deep network at batch {batch}",
                    {"parameters": "--batch", "gradients": "--batch",
                     "optimizer state": "--batch", "saved activations": "--batch"})
    print(", ".join(f"{k}: {v}" for k, v in env.items() if v is not None))
    if torch_baseline.torch_or_none() is None:
        print("note: PyTorch is not installed, so there are no PyTorch baselines "
              "(pip install torch==2.13.0)")
    if "mlp" in names and jax_baseline.version() is None:
        print("note: JAX is not installed, so the mlp suite has no 'jax jit' row (optional: "
              "pip install jax)")
    results = {"environment": env, "quick": not args.full, "rows": []}
    if args.precision is not None and names != ["mlp"]:
        raise ValueError(f"--precision times the mlp suite's steps, not {args.suite}'s: "
                         f"gpugrad bench mlp --precision {args.precision}")
    options = {"batches": args.batch} if args.batch is not None else {}  # mlp alone takes it
    if args.precision is not None:
        options["precision"] = args.precision
        note = precisions.note(args.precision, device)  # tf32 off CUDA: float32's numbers
        if note:
            print(note)
            results["note"] = note
    for suite in names:
        rows = suites.SUITES[suite](device, quick=not args.full, progress=progress, **options)
        results["rows"] += rows
        print(f"\n{suite} ({device}):")
        print(table.format_table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"\nwrote {args.json}")
    if args.plot:
        plotting.plot_bench(results["rows"], names, args.plot, device)
    return 0
