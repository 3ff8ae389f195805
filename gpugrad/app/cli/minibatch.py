"""`gpugrad minibatch`: the same MLP trained at several batch sizes: memory, time and accuracy
(exercise 5)."""

import json

from gpugrad.app import training
from gpugrad.app.bench import table
from gpugrad.app.cli import arguments, refusals


def register(subparsers):
    parser = arguments.add_command(subparsers, "minibatch", ["device", "json", "learning"],
                                   "train at several batch sizes: memory, time, accuracy (ex. 5)")
    parser.add_argument("--batch", type=arguments.batch_sizes, default="1,8,32,128,512",
                        help="comma-separated batch sizes")
    parser.add_argument("--epochs", type=arguments.integer(1), default=5, help="epochs at each batch size")
    parser.set_defaults(func=run)


def run(args):
    device = refusals.setup(args)
    refusals.require_dataset_extra(args.dataset)
    lr = training.OPTIMIZERS["sgd"] if args.lr is None else args.lr
    dataset = training.load_dataset(args.dataset)
    n_classes = int(max(dataset.train_y.max(), dataset.test_y.max())) + 1
    refusals.check_fits(
        device, training.training_bytes(args.layers, dataset.train_x.shape[1], args.hidden,
                                        n_classes, max(args.batch), "sgd", args.momentum),
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
