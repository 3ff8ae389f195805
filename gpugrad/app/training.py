"""The training loop behind `gpugrad train`: MLPs of 1, 2 (section 4.7's network) or 3 weight
layers on digits or MNIST, with per-epoch loss and accuracy, and checkpoints to resume from."""

import time

import numpy as np

from gpugrad import amp
from gpugrad import autograd
from gpugrad import devices
from gpugrad import data
from gpugrad import nn
from gpugrad import optim
from gpugrad import tensors
from gpugrad.app import precisions

OPTIMIZERS = {"sgd": 0.1, "adam": 1e-3}  # name -> its default learning rate
CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "gpugrad-train-checkpoint", 1
# what a resumed run must share with the run that saved the checkpoint, for the two to equal
# one uninterrupted run
RESUMED_SETTINGS = ("dataset", "layers", "hidden", "batch", "optimizer", "lr", "momentum",
                    "weight_decay", "seed", "precision")
# --precision: the dtype gg.autocast computes the layers in (None: float32 throughout; tf32
# also turns gg.backends.matmul.allow_tf32 on for the run); fp16 also scales the loss
# (gg.amp.GradScaler), whose state a checkpoint keeps
PRECISIONS = precisions.AUTOCAST
_DEFAULT_SETTINGS = {"precision": "fp32"}  # what a checkpoint from before a setting existed had


def build_mlp(layers, n_in, hidden, n_out, device=None):
    """An MLP of `layers` weight layers (relu between them), as `gpugrad train --layers` and
    `gpugrad memory --layers` count them: 1 is y = W x + b (softmax regression), 2 is section
    4.7's network y = W2 relu(W1 x + b1) + b2, and each one more adds a hidden layer of width
    `hidden`."""
    if isinstance(layers, bool) or not isinstance(layers, (int, np.integer)) or layers < 1:
        raise ValueError(f"layers counts weight layers and must be an integer >= 1, got "
                         f"{layers!r}")
    sizes = [n_in] + [hidden] * (int(layers) - 1) + [n_out]
    return nn.MLP(sizes, activation="relu", device=device)


def make_optimizer(name, params, lr=None, momentum=0.9, weight_decay=0.0):
    """'sgd' (with momentum) or 'adam' over params; lr None is the optimizer's default."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: one of {', '.join(OPTIMIZERS)}")
    lr = OPTIMIZERS[name] if lr is None else lr
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def training_bytes(layers, n_in, hidden, n_out, batch, optimizer="sgd", momentum=0.9):
    """The least memory training needs, in bytes, from shapes alone (the model is built on the
    meta device, so nothing is allocated): parameters, gradients, the optimizer's buffers and
    the activations one step saves for backward. Returns a dict of those terms and 'total'."""
    model = build_mlp(layers, n_in, hidden, n_out, device="meta")
    parameters, saved = saved_at_batch(model, n_in, batch, nn.functional.cross_entropy)
    copies = 2 if optimizer == "adam" else (1 if momentum else 0)  # Adam: m, v; SGD: velocity
    terms = {"parameters": parameters, "gradients": parameters,
             "optimizer state": copies * parameters, "saved activations": saved}
    return {**terms, "total": sum(terms.values())}


def saved_at_batch(model, n_in, batch, loss_fn):
    """(parameter bytes, bytes of activations one training step saves) of a model on the meta
    device at `batch`. The graph is traced at batches 1 and 2 and the line through them
    extended, since what an MLP saves grows linearly with the batch: tracing at the batch
    itself would allocate its labels."""
    from gpugrad import memory

    one, two = (memory.estimate(model, (b, n_in), loss_fn) for b in (1, 2))
    per_example = two["saved activations"] - one["saved activations"]
    return one["parameters"], one["saved activations"] + per_example * (batch - 1)


def load_dataset(spec):
    """'digits' or 'mnist:DIR'."""
    if spec == "digits":
        return data.load_digits()
    if spec.startswith("mnist:"):
        return data.load_mnist(spec[len("mnist:"):])
    raise ValueError(f"unknown dataset {spec!r}: use 'digits' or 'mnist:DIR'")


def accuracy(model, x, y, device, batch=2048):
    correct = 0
    for start in range(0, len(x), batch):  # prediction: outside record(), nothing is kept
        logits = model(tensors.tensor(x[start:start + batch], device=device))
        correct += int((logits.numpy().argmax(axis=1) == y[start:start + batch]).sum())
    return correct / max(len(x), 1)


def _host_copy(obj):
    """obj with every tensor and device array replaced by a copy on the CPU (a Tensor): a
    snapshot that later in-place updates cannot change."""
    if isinstance(obj, dict):
        return {k: _host_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_host_copy(v) for v in obj]
    if isinstance(obj, tensors.Tensor):
        return tensors.tensor(obj.numpy(), device="cpu")
    if devices.is_backend_array(obj):
        host = devices.get(devices.device_of_array(obj)).to_host(obj)
        return tensors.tensor(np.array(host, copy=True), device="cpu")
    return obj


def checkpoint(model, opt, epoch, settings, history=(), scaler=None):
    """What resuming needs, as host copies (gg.save writes it): the model's and optimizer's
    state dicts, the epochs done and their history, and the settings a resumed run must share.
    No random state is needed: the model's initialization is replaced by its saved state, and
    each epoch's batch order comes from (seed, epoch)."""
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "epoch": int(epoch),
            "settings": dict(settings), "model": _host_copy(model.state_dict()),
            "optimizer": _host_copy(opt.state_dict()), "history": _host_copy(list(history)),
            **({"scaler": scaler.state_dict()} if scaler is not None and scaler.enabled else {})}


def check_checkpoint(state, settings):
    """The settings in which a checkpoint (gg.load of what `gpugrad train --save` wrote)
    differs from this run's, as {setting: (saved, this run's)}: empty when this run can
    resume it exactly. ValueError when `state` is no such checkpoint."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError("it is not a checkpoint written by gpugrad train --save")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"it is a checkpoint of version {state.get('version')}; this gpugrad "
                         f"reads version {CHECKPOINT_VERSION}")
    saved = state.get("settings", {})
    saved = {**_DEFAULT_SETTINGS, **saved}
    return {k: (saved.get(k), settings[k]) for k in RESUMED_SETTINGS
            if _plain(saved.get(k)) != _plain(settings[k])}


def _plain(value):
    """A setting as saved and read back (gg.load may give NumPy scalars) compared by value."""
    return value.item() if isinstance(value, np.generic) else value


def train(dataset, layers=2, hidden=256, epochs=20, batch=32, lr=None, momentum=0.9,
          weight_decay=0.0, device=None, seed=0, progress=None, on_epoch=None,
          distributed=False, optimizer="sgd", resume=None, on_checkpoint=None,
          dataset_name=None, precision="fp32"):
    """Train an MLP of `layers` weight layers; returns (model, history) with one dict per epoch.

    on_epoch(model, entry), if given, is called as each epoch finishes, so a caller can show it
    at once and keep what an interrupt (KeyboardInterrupt propagates) must not lose.
    distributed: data parallel over the ranks mpirun started (gg.distributed): each rank takes
    its shard of every batch, the gradients are averaged before each update, and the figures
    are over all ranks.
    optimizer: 'sgd' (momentum, weight decay) or 'adam'; lr None is its default (0.1, 1e-3).
    precision: 'fp32', 'tf32' (float32 with gg.backends.matmul.allow_tf32 on until the run
    ends, then as it was; no effect off CUDA), 'bf16' (the layers under
    gg.autocast(bfloat16)) or 'fp16' (under gg.autocast(float16), the loss scaled by a
    gg.amp.GradScaler); parameters stay float32.
    resume: a checkpoint (checkpoint(), or gg.load of what `gpugrad train --save` wrote) to
    continue from: `epochs` more epochs, numbered on from its epoch, so that 3 epochs and 2
    resumed equal 5 bit for bit. on_checkpoint(state), if given, gets checkpoint() after each
    epoch (call gg.save on it to write it).
    """
    lr = OPTIMIZERS.get(optimizer, 0.1) if lr is None else lr
    settings = {"dataset": dataset_name, "layers": layers, "hidden": hidden, "batch": batch,
                "optimizer": optimizer, "lr": lr, "momentum": momentum,
                "weight_decay": weight_decay, "seed": seed, "precision": precision}
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    scaler = amp.GradScaler(enabled=precision == "fp16")
    devices.seed(seed)
    n_classes = int(max(dataset.train_y.max(), dataset.test_y.max())) + 1
    model = build_mlp(layers, dataset.train_x.shape[1], hidden, n_classes, device=device)
    device = model.parameters()[0].device
    opt = make_optimizer(optimizer, model.parameters(), lr, momentum, weight_decay)
    history, done = [], 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        done = int(resume["epoch"])
        if "scaler" in resume:
            scaler.load_state_dict(resume["scaler"])
        history = [dict(h) for h in resume.get("history", [])]
    dist = None
    if distributed:
        from gpugrad import distributed as dist

        dist.init()
        dist.broadcast_parameters(model)
    with precisions.matmul_mode(precision):
        for epoch in range(done + 1, done + epochs + 1):
            history.append(_epoch(model, opt, dataset, batch, seed, epoch, device, dist,
                                  progress, PRECISIONS[precision], scaler))
            if on_epoch is not None:
                on_epoch(model, history[-1])
            if on_checkpoint is not None:
                on_checkpoint(checkpoint(model, opt, epoch, settings, history, scaler))
    return model, history[done:]


def _epoch(model, opt, dataset, batch, seed, epoch, device, dist, progress, cast, scaler):
    """One epoch of training and its entry in the history."""
    t0 = time.perf_counter()
    loss, correct = _run_epoch(model, opt, dataset, batch, seed, epoch, device, dist, progress,
                               cast, scaler)
    return {"epoch": epoch, "loss": loss, "train accuracy": correct / len(dataset.train_x),
            "test accuracy": accuracy(model, dataset.test_x, dataset.test_y, device),
            "seconds": time.perf_counter() - t0}


def _run_epoch(model, opt, dataset, batch, seed, epoch, device, dist, progress, cast=None,
               scaler=None):
    """One pass over the training set: (mean loss, examples classified right), over all ranks
    when `dist` (gg.distributed) is given."""
    losses, correct = [], 0
    # the order is a function of (seed, epoch) alone, which is what makes resuming exact
    batches = data.batches(dataset.train_x, dataset.train_y, batch, seed=seed * 1000 + epoch)
    n_batches = (len(dataset.train_x) + batch - 1) // batch
    for xb, yb in (progress(batches, n_batches, epoch) if progress else batches):
        if dist is not None:
            part = dist.shard(len(xb))
            xb, yb = xb[part], yb[part]
        x = tensors.tensor(xb, device=device)
        with autograd.record(), amp.autocast(cast or "bfloat16", enabled=cast is not None):
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, yb)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if dist is not None:
            dist.average_gradients(model)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        losses.append(loss.item())
        correct += int((logits.numpy().argmax(axis=1) == yb).sum())
    if dist is not None:  # every rank saw its shards: the epoch's figures are their sums
        correct = int(dist.sum_over_ranks(correct))
        losses = [dist.sum_over_ranks(float(np.mean(losses))) / dist.world_size()]
    return float(np.mean(losses)), correct


def rnn_gradient_norms(steps=50, hidden=32, input_size=8, classes=10, seed=0, device=None):
    """||dE_T / ds_k|| for k = 0..steps-1, where E_T is the cross-entropy of a linear readout
    of the last state, for a tanh RNN, a ReLU RNN and an LSTM (its hidden state h) on the same
    random sequence, readout and target, plus an LSTM whose forget-gate bias starts at +1.
    Returns {model: [norm at k = 0, ..., steps - 1]}."""
    devices.seed(seed)
    x = tensors.randn(steps, 1, input_size, device=device)
    target = [int(np.random.default_rng(seed).integers(classes))]
    readout = nn.Linear(hidden, classes, device=device)
    models = {
        "tanh RNN": nn.RNN(input_size, hidden, nonlinearity="tanh", device=device),
        "ReLU RNN": nn.RNN(input_size, hidden, nonlinearity="relu", device=device),
        "LSTM": nn.LSTM(input_size, hidden, device=device),
        "LSTM f+1": nn.LSTM(input_size, hidden, device=device),
    }
    forget = models["LSTM f+1"].bias_hh  # forget gate starts open: sigmoid(b + 1) instead of ~0.5
    forget.data[hidden:2 * hidden] += 1.0
    norms = {}
    for name, model in models.items():
        with autograd.record():
            hs = [state[0] for state in model.steps(x)]
            loss = nn.functional.cross_entropy(readout(hs[-1]), target)
        grads = autograd.grad(loss, hs)
        norms[name] = [float(np.sqrt((g.numpy().astype(np.float64) ** 2).sum())) for g in grads]
    return norms


def minibatch_sweep(dataset, batches, epochs=5, layers=2, hidden=256, lr=0.1, momentum=0.9,
                    device=None, seed=0):
    """Section 4.7 exercise 5, the minibatch half: the same MLP trained for the same number of
    epochs at each batch size. One row per batch: updates per epoch, bytes of activations one
    step saves (measured), microseconds of training per sample, and the final loss and
    accuracies. Smaller batches make more updates per epoch and keep less per step; larger ones
    spend less time per sample."""
    from gpugrad import memory

    rows = []
    for batch in batches:
        model, history = train(dataset, layers=layers, hidden=hidden, epochs=epochs, batch=batch,
                               lr=lr, momentum=momentum, device=device, seed=seed)
        params = model.parameters()
        # copies, as a training batch is: a view would keep (and count) the whole dataset
        x = tensors.tensor(dataset.train_x[:batch].copy(), device=params[0].device)
        with autograd.record():
            loss = nn.functional.cross_entropy(model(x), dataset.train_y[:batch].copy())
        saved = memory.saved(loss, params).activations
        seconds = sum(h["seconds"] for h in history)
        rows.append({"batch": batch, "updates per epoch": -(-len(dataset.train_x) // batch),
                     "saved bytes per step": saved,
                     "us per sample": seconds / (epochs * len(dataset.train_x)) * 1e6,
                     "loss": history[-1]["loss"], "train accuracy": history[-1]["train accuracy"],
                     "test accuracy": history[-1]["test accuracy"]})
    return rows
