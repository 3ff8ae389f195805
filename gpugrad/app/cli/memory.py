"""`gpugrad memory`: what training keeps against prediction for section 4.7's network, by
formula, by estimate and measured, and by op."""

import json

from gpugrad import ops
from gpugrad.app import experiments
from gpugrad.app.bench import table
from gpugrad.app.cli import arguments, plotting, refusals


def register(subparsers):
    parser = arguments.add_command(subparsers, "memory", ["device", "json", "plot"],
                                   "training vs prediction memory, analytic and measured")
    parser.add_argument("--d", type=arguments.integer(1), default=784, help="input width")
    parser.add_argument("--h", type=arguments.integer(1), default=256, help="hidden width")
    parser.add_argument("--q", type=arguments.integer(1), default=10, help="classes")
    parser.add_argument("--batch", type=arguments.batch_sizes, default="1,64,256,1024",
                        help="comma-separated batch sizes")
    parser.add_argument("--layers", type=arguments.integer(2), default=2,
                        help=arguments.LAYERS_HELP + "; each one more adds a hidden layer")
    parser.add_argument("--activation", default="relu", choices=sorted(ops.activation.ACTIVATIONS),
                        help="the hidden layers' activation")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"],
                        help="of the parameters and activations")
    parser.add_argument("--autocast", choices=["bf16", "fp16"], default=None,
                        help="every pass under gg.autocast in this dtype (parameters in --dtype)")
    parser.add_argument("--lam", type=arguments.real(0), default=1e-3, help="the L2 penalty's lambda")
    parser.add_argument("--checkpoint", action="store_true", help="also checkpoint the hidden layers")
    parser.add_argument("--compare-torch", action="store_true",
                        help="what PyTorch saves, beside (needs torch)")
    parser.set_defaults(func=run)


def run(args):
    device = refusals.setup(args)
    if args.compare_torch:
        refusals.require("torch", "--compare-torch", "pip install torch==2.13.0", package="PyTorch")
    batches = args.batch
    refusals.check_fits(
        device, refusals.network_4_7_bytes(args.d, args.h, args.q, max(batches), args.layers,
                                           args.activation, args.dtype, args.lam),
        f"section 4.7's network (d={args.d}, h={args.h}, q={args.q}, {args.layers} "
        f"weight layers) at batch {max(batches)}",
        refusals.options_4_7(args))
    rows = experiments.experiment(args.d, args.h, args.q, batches, layers=args.layers,
                                  activation=args.activation, dtype=args.dtype, device=device,
                                  lam=args.lam, with_checkpoint=args.checkpoint,
                                  with_torch=args.compare_torch,
                                  autocast={"bf16": "bfloat16", "fp16": "float16"}.get(args.autocast))
    print(f"section 4.7 network: d={args.d}, h={args.h}, q={args.q}, {args.layers} weight layers, "
          f"{args.activation}, {args.dtype}"
          f"{f' under autocast {args.autocast}' if args.autocast else ''}, no bias, "
          f"J = L + lambda/2 sum |W|^2, device {device}")
    cols = [c for c in rows[0] if c not in ("saved by op", "saved by dtype")]
    print(table.format_table([{**{c: r[c] for c in cols}, "suite": None} for r in rows]))
    if args.layers == 2:
        ok = all(r["saved (formula)"] == r["saved (measured)"] == r["saved (estimate)"] for r in rows)
        print(f"formula, estimate and measured saved activations: {'equal' if ok else 'DIFFERENT'} "
              f"at every batch size")
    print("saved by op at the largest batch: " + ", ".join(
        f"{op} {b:,}" for op, b in sorted(rows[-1]["saved by op"].items(), key=lambda kv: -kv[1])))
    print("saved by dtype at the largest batch: " + ", ".join(
        f"{dtype} {b:,}" for dtype, b in sorted(rows[-1]["saved by dtype"].items(), key=lambda kv: -kv[1])))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "func"}, "rows": rows}, fh, indent=2)
    if args.plot:
        fig, ax = plotting.pyplot().subplots(figsize=(7, 4))
        for key in ("predict peak", "train peak", "saved (measured)", "saved (formula)",
                    "saved (torch)", "saved (checkpoint)"):
            if rows[0].get(key) is not None:
                ax.loglog(batches, [r[key] for r in rows], marker="o", label=key)
        ax.set(xlabel="batch size", ylabel="bytes", title="memory: training vs prediction")
        ax.legend()
        plotting.save_figure(fig, args.plot)
    return 0
