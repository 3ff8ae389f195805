"""`gpugrad rnn-grads`: how fast the gradient vanishes back through time in RNNs and LSTMs."""

import json

from gpugrad.app import training
from gpugrad.app.cli import arguments, plotting, refusals


def register(subparsers):
    parser = arguments.add_command(subparsers, "rnn-grads", ["device", "json", "plot"],
                                   "how fast the gradient vanishes back through time")
    parser.add_argument("--steps", type=arguments.integer(2), default=50, help="sequence length")
    parser.add_argument("--hidden", type=arguments.integer(1), default=32, help="state width")
    parser.add_argument("--seed", type=arguments.seed, default=0, help="seeds the sequence and the weights")
    parser.set_defaults(func=run)


def run(args):
    device = refusals.setup(args)
    h, steps, n_in = args.hidden, args.steps, 8
    # two RNNs (W_ih, W_hh, two biases) and two LSTMs (four gates each), float32, and per step
    # at least each model's state kept for the backward
    parameters = 4 * (2 * (h * n_in + h * h + 2 * h) + 2 * (4 * h * n_in + 4 * h * h + 8 * h))
    refusals.check_fits(device, {"parameters": parameters, "saved states": 4 * 4 * steps * h,
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
        fig, ax = plotting.pyplot().subplots(figsize=(7, 4))
        for n in names:
            ax.semilogy(range(T), [norms[n][T - 1 - b] for b in range(T)], label=n)
        ax.set(xlabel="steps back from T", ylabel="||dE_T / ds_k||",
               title=f"gradient reaching earlier states (T={T}, hidden {args.hidden})")
        ax.legend()
        plotting.save_figure(fig, args.plot)
    return 0
