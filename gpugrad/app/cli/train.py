"""`gpugrad train`: an MLP of 1, 2 or 3 weight layers, epoch by epoch, with checkpoints that
--resume continues bit for bit."""

import json
import os
import sys

import gpugrad
from gpugrad.app import precisions, training
from gpugrad.app.cli import arguments, plotting, refusals


def register(subparsers):
    parser = arguments.add_command(subparsers, "train", ["device", "json", "plot", "learning"],
                                   "train an MLP of 1, 2 (section 4.7's network) or 3 weight layers")
    parser.add_argument("--epochs", type=arguments.integer(1), default=20,
                        help="epochs to train (with --resume: epochs more)")
    parser.add_argument("--batch", type=arguments.integer(1), default=32, help="examples per step")
    parser.add_argument("--optimizer", choices=list(training.OPTIMIZERS), default="sgd",
                        help="sgd (with --momentum) or adam")
    parser.add_argument("--weight-decay", type=arguments.real(0), default=0.0,
                        help="L2 weight decay, added to the gradient as PyTorch does")
    parser.add_argument("--precision", choices=list(training.PRECISIONS), default="fp32",
                        help="fp32; tf32 (float32 with gg.backends.matmul.allow_tf32 on for "
                             "the run: TF32 tensor cores on CUDA, no effect elsewhere); or the "
                             "layers under gg.autocast in bf16 or fp16 (with loss scaling); "
                             "parameters stay float32")
    parser.add_argument("--distributed", action="store_true",
                        help="data parallel over the ranks of mpirun (needs the distributed extra)")
    parser.add_argument("--save", metavar="FILE", type=arguments.output_file("state"),
                        help="write a checkpoint after the last finished epoch (the model, the "
                             "optimizer, the epoch; gg.save's .npz)")
    parser.add_argument("--resume", metavar="FILE", type=arguments.input_file,
                        help="continue from a checkpoint that --save wrote, with the options it "
                             "was trained with, for --epochs more epochs")
    parser.set_defaults(func=run)


def run(args):
    device = refusals.setup(args)
    refusals.require_dataset_extra(args.dataset)
    lr = training.OPTIMIZERS[args.optimizer] if args.lr is None else args.lr
    settings = {"dataset": args.dataset, "layers": args.layers, "hidden": args.hidden,
                "batch": args.batch, "optimizer": args.optimizer, "lr": lr,
                "momentum": args.momentum, "weight_decay": args.weight_decay, "seed": args.seed,
                "precision": args.precision}
    resume = read_checkpoint(args.resume, settings) if args.resume else None
    if args.distributed:
        _join_ranks(args)
    dataset = training.load_dataset(args.dataset)
    _check_fits_and_announce(args, dataset, device, lr, resume)
    history, finished, interrupted = _train(args, dataset, device, lr, resume)
    _report(args, device, history, finished, interrupted)
    return 130 if interrupted else 0


def _join_ranks(args):
    """Under mpirun: rank 0 speaks and writes files, the others train."""
    from gpugrad import distributed

    refusals.require("mpi4py", "--distributed", "pip install 'gpugrad[distributed]'")
    try:
        rank, size = distributed.init()
    except distributed.DistributedError as e:  # mpi4py without an MPI library
        raise refusals.CannotRun(f"--distributed: {e}") from None
    if rank != 0:
        sys.stdout = open(os.devnull, "w")
        args.save = args.json = args.plot = None
    print(f"data parallel: {size} rank(s) (gg.distributed over MPI)")


def _check_fits_and_announce(args, dataset, device, lr, resume):
    n_classes = int(max(dataset.train_y.max(), dataset.test_y.max())) + 1
    n_in = dataset.train_x.shape[1]
    refusals.check_fits(
        device, training.training_bytes(args.layers, n_in, args.hidden, n_classes, args.batch,
                                        args.optimizer, args.momentum),
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
    note = precisions.note(args.precision, device)  # tf32 off CUDA: float32's numbers
    if note:
        print(note)


def _train(args, dataset, device, lr, resume):
    """(the finished epochs' entries, {"state": the last one's checkpoint} with --save, whether
    an interrupt ended it), printing each epoch's line as it ends."""
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
            on_checkpoint=on_checkpoint if args.save else None, dataset_name=args.dataset,
            precision=args.precision)
    except KeyboardInterrupt:
        interrupted = True
        print(f"interrupted during epoch {first_epoch + len(history)}: keeping the "
              f"{len(history)} finished epoch(s)", flush=True)
    return history, finished, interrupted


def _report(args, device, history, finished, interrupted):
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
            note = precisions.note(args.precision, device)
            json.dump({"args": vars(args) | {"func": None}, "history": history,
                       "interrupted": interrupted, **({"note": note} if note else {})},
                      fh, indent=2)
    if args.plot and history:
        plotting.plot_history(history, args.plot, f"MLP of {args.layers} weight layer(s) on {args.dataset}")


def read_checkpoint(path, settings):
    """The checkpoint that --resume names, refused (naming the option) unless this run can
    continue it exactly: a gpugrad train checkpoint whose settings this run shares."""
    from gpugrad import serialize

    try:
        state = gpugrad.load(path)
        different = training.check_checkpoint(state, settings)
    except (ValueError, TypeError, KeyError, OSError, serialize.StateFileError) as e:
        raise refusals.OptionError("--resume", f"{path}: {e}") from None
    if different:
        setting, (saved, now) = next(iter(different.items()))
        option = "--" + setting.replace("_", "-")
        raise refusals.OptionError(option, f"{now} here, but {path} was trained with {option} {saved}; "
                                   f"resume with the options it was trained with")
    return state
