"""The training loop behind `gpugrad train`: the 2-, 3- and 4-layer MLPs of the lecture's
exercise on digits or MNIST, with per-epoch loss and accuracy."""

import time

import numpy as np

from gpugrad import autograd
from gpugrad import data
from gpugrad import nn
from gpugrad import optim
from gpugrad import tensors


def build_mlp(layers, n_in, hidden, n_out, device=None):
    """layers=2: y = W x + b; 3: W2 relu(W1 x + b1) + b2; 4: one more hidden layer."""
    if layers not in (2, 3, 4):
        raise ValueError(f"--layers must be 2, 3 or 4, got {layers}")
    sizes = [n_in] + [hidden] * (layers - 2) + [n_out]
    return nn.MLP(sizes, activation="relu", device=device)


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


def train(dataset, layers=3, hidden=256, epochs=20, batch=32, lr=0.1, momentum=0.9,
          weight_decay=0.0, device=None, seed=0, progress=None, on_epoch=None,
          distributed=False):
    """Train an MLP; returns (model, history) with one dict per epoch.

    on_epoch(model, entry), if given, is called as each epoch finishes, so a caller can show it
    at once and keep what an interrupt (KeyboardInterrupt propagates) must not lose.
    distributed: data parallel over the ranks mpirun started (gg.distributed): each rank takes
    its shard of every batch, the gradients are averaged before each update, and the figures
    are over all ranks.
    """
    from gpugrad import backend

    backend.seed(seed)
    n_classes = int(max(dataset.train_y.max(), dataset.test_y.max())) + 1
    model = build_mlp(layers, dataset.train_x.shape[1], hidden, n_classes, device=device)
    device = model.parameters()[0].device
    dist = None
    if distributed:
        from gpugrad import distributed as dist

        dist.init()
        dist.broadcast_parameters(model)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    history = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        losses, correct = [], 0
        batches = data.batches(dataset.train_x, dataset.train_y, batch, seed=seed * 1000 + epoch)
        n_batches = (len(dataset.train_x) + batch - 1) // batch
        for xb, yb in (progress(batches, n_batches, epoch) if progress else batches):
            if dist is not None:
                part = dist.shard(len(xb))
                xb, yb = xb[part], yb[part]
            x = tensors.tensor(xb, device=device)
            with autograd.record():
                logits = model(x)
                loss = nn.functional.cross_entropy(logits, yb)
            loss.backward()
            if dist is not None:
                dist.average_gradients(model)
            opt.step()
            losses.append(loss.item())
            correct += int((logits.numpy().argmax(axis=1) == yb).sum())
        if dist is not None:  # every rank saw its shards: the epoch's figures are their sums
            correct = int(dist.sum_over_ranks(correct))
            losses = [dist.sum_over_ranks(float(np.mean(losses))) / dist.world_size()]
        history.append({
            "epoch": epoch, "loss": float(np.mean(losses)),
            "train accuracy": correct / len(dataset.train_x),
            "test accuracy": accuracy(model, dataset.test_x, dataset.test_y, device),
            "seconds": time.perf_counter() - t0,
        })
        if on_epoch is not None:
            on_epoch(model, history[-1])
    return model, history


def rnn_gradient_norms(steps=50, hidden=32, input_size=8, classes=10, seed=0, device=None):
    """||dE_T / ds_k|| for k = 0..steps-1, where E_T is the cross-entropy of a linear readout
    of the last state, for a tanh RNN, a ReLU RNN and an LSTM (its hidden state h) on the same
    random sequence, readout and target, plus an LSTM whose forget-gate bias starts at +1.
    Returns {model: [norm at k = 0, ..., steps - 1]}."""
    from gpugrad import backend

    backend.seed(seed)
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


def minibatch_sweep(dataset, batches, epochs=5, layers=3, hidden=256, lr=0.1, momentum=0.9,
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
