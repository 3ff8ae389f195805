"""`gpugrad graph`: section 4.7's graph drawn (.dot, and .svg with Graphviz) and its forward and
backward equations printed; with --second-order the gradient's own graph and a Hessian-vector
product's time (exercises 2 and 4)."""

import json
import pathlib
import shutil
import statistics

from gpugrad import drawing
from gpugrad.app import experiments
from gpugrad.app.bench import timing
from gpugrad.app.cli import arguments, refusals


def register(subparsers):
    parser = arguments.add_command(subparsers, "graph", ["device", "json"],
                                   "draw section 4.7's graph and print its equations (exercises 2, 4)")
    parser.add_argument("--d", type=arguments.integer(1), default=784, help="input width")
    parser.add_argument("--h", type=arguments.integer(1), default=256, help="hidden width")
    parser.add_argument("--q", type=arguments.integer(1), default=10, help="classes")
    parser.add_argument("--batch", type=arguments.integer(1), default=1,
                        help="examples per step (1 is the book's single x)")
    parser.add_argument("--lam", type=arguments.real(0), default=1e-3, help="the L2 penalty's lambda")
    parser.add_argument("--bias", action="store_true",
                        help="a bias in the hidden layer (exercise 2)")
    parser.add_argument("--second-order", action="store_true",
                        help="also the gradient's own graph and a Hessian-vector product's time")
    parser.add_argument("--out", type=arguments.output_dir, default=".",
                        help="folder for the .dot (and .svg) files (made if missing)")
    parser.set_defaults(func=run)


def run(args):
    device = refusals.setup(args)
    refusals.check_fits(
        device, refusals.network_4_7_bytes(args.d, args.h, args.q, args.batch, lam=args.lam),
        f"section 4.7's network (d={args.d}, h={args.h}, q={args.q}) at batch {args.batch}",
        refusals.options_4_7(args))
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
        secs, ratio = _second_order(report, device)
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


def _second_order(report, device):
    """Print exercise 4's figures: both graphs' sizes, and a gradient's and a Hessian-vector
    product's times; returns (those seconds, their ratio)."""
    second = report["second"]
    print("\nexercise 4, second derivatives:")
    print(f"  graph of J:              {len(report['first'].nodes):3d} ops, "
          f"{report['first'].saved_bytes:,} bytes saved")
    print(f"  graph of the gradient:   {len(second.nodes):3d} ops, "
          f"{second.saved_bytes:,} bytes saved (create_graph=True)")
    secs = {name: statistics.median(timing.repeat_times(step, device))
            for name, step in report["steps"].items()}
    ratio = secs["hessian-vector product"] / secs["gradient"]
    print(f"  one gradient {secs['gradient'] * 1e3:.3f} ms, one Hessian-vector product "
          f"{secs['hessian-vector product'] * 1e3:.3f} ms: {ratio:.2f}x")
    return secs, ratio
