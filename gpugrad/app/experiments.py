"""Section 4.7's experiments: the memory experiment (exercise 3), behind `gpugrad memory` and
the memory benchmark (the network, its loss, PyTorch's saved bytes beside gpugrad's, and the
rows of formula, estimate and measurement per batch size; the accounting itself is
gpugrad/memory/), and the recorded graph of exercises 2 and 4 behind `gpugrad graph`."""

import time

import numpy as np

from gpugrad import amp
from gpugrad import autograd
from gpugrad import devices
from gpugrad import memory
from gpugrad import ops
from gpugrad.engine import checkpoint as recompute
from gpugrad import tensors


def mlp_4_7(d, h, q, layers=2, activation="relu", dtype="float32", device=None):
    """Section 4.7's network (no bias), with layers - 1 hidden layers of width h."""
    from gpugrad import nn

    sizes = [d] + [h] * (layers - 1) + [q]
    return nn.MLP(sizes, activation=activation, bias=False, dtype=dtype, device=device)


def loss_4_7(model, lam):
    """J = cross_entropy + lambda/2 * sum of |W|^2 over the model's weights."""
    from gpugrad.nn import functional as F

    return lambda o, y: F.cross_entropy(o, y) + lam * F.l2_penalty(model.parameters())


def checkpointed_forward(model):
    """model's forward with everything between the first and last Linear checkpointed."""
    layers = list(model._modules.values())

    def forward(x):
        h = layers[0](x)
        middle = layers[1:-1]

        def segment(t):
            for layer in middle:
                t = layer(t)
            return t
        return layers[-1](recompute.checkpoint(segment, h))
    return forward


def torch_saved_bytes(d, h, q, batch, layers, activation, lam, seed=0, dtype="float32",
                      autocast=None):
    """Bytes PyTorch saves for backward for the same model and loss (in `dtype`, under
    torch.autocast(autocast) when given), each storage once, parameters apart: (activations,
    parameters). Needs torch."""
    import torch

    torch_module = getattr(torch.nn, ops.activation.ACTIVATIONS[activation].module)
    torch.manual_seed(seed)
    mods = []
    sizes = [d] + [h] * (layers - 1) + [q]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(torch.nn.Linear(a, b, bias=False))
        if i < len(sizes) - 2:
            mods.append(torch_module())
    model = torch.nn.Sequential(*mods).to(getattr(torch, str(dtype)))
    x = torch.randn(batch, d, dtype=getattr(torch, str(dtype)))
    y = torch.randint(0, q, (batch,))
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t
    cast = torch.autocast("cpu", dtype=getattr(torch, autocast or "bfloat16"),
                          enabled=autocast is not None)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), cast:
        loss = torch.nn.functional.cross_entropy(model(x), y) + lam / 2 * sum(
            (p * p).sum() for p in model.parameters())
    del loss
    act = sum(n for ptr, n in storages.items() if ptr not in param_ptrs)
    par = sum(n for ptr, n in storages.items() if ptr in param_ptrs)
    return act, par


def experiment(d, h, q, batches, layers=2, activation="relu", dtype="float32", device=None,
               lam=1e-3, with_checkpoint=False, with_torch=False, seed=0, autocast=None):
    """Rows of analytic vs measured, predict vs train, per batch size (gpugrad memory); every
    pass under gg.autocast(autocast) when given."""
    with amp.autocast(autocast or "bfloat16", enabled=autocast is not None):
        return [_experiment_row(d, h, q, batch, layers, activation, dtype, device, lam,
                                with_checkpoint, with_torch, seed, autocast)
                for batch in batches]


def _bytes_by_dtype(buffers):
    """{dtype name: bytes} of the saved activations (not parameters) in a ledger's buffers."""
    out = {}
    for _op, _name, _shape, dtype, nbytes, is_param in buffers:
        if not is_param:
            out[dtype] = out.get(dtype, 0) + nbytes
    return out


def _experiment_row(d, h, q, batch, layers, activation, dtype, device, lam, with_checkpoint,
                    with_torch, seed, autocast):
    """One batch size's row of experiment()."""
    devices.seed(seed)
    model = mlp_4_7(d, h, q, layers, activation, dtype, device)
    x = tensors.randn(batch, d, dtype=dtype, device=device)
    y = np.random.default_rng(seed).integers(0, q, batch)
    loss_fn = loss_4_7(model, lam)
    r = memory.compare(model, x, y, loss_fn)
    est = memory.estimate(model, (batch, d), loss_fn, labels=y)["saved activations"]
    row = {"batch": batch, "parameters": r.train["parameters"],
           "gradients": r.train["gradients"],
           "saved (formula)": (memory.mlp_formula(d, h, q, batch, dtype, activation=activation,
                                                  autocast=autocast)
                               ["saved activations"] if layers == 2 else None),
           "saved (measured)": r.train["saved activations"],
           "saved (estimate)": est,
           "predict peak": r.predict["total peak"], "train peak": r.train["total peak"],
           "train/predict peak": r.train["total peak"] / r.predict["total peak"],
           "saved by op": r.by_op, "saved by dtype": _bytes_by_dtype(r.buffers)}
    if with_torch:
        row["saved (torch)"] = torch_saved_bytes(d, h, q, batch, layers, activation, lam, seed,
                                                 dtype, autocast)[0]
    if with_checkpoint:
        row.update(_checkpoint_row(model, x, y, loss_fn, device))
    return row


def _checkpoint_row(model, x, y, loss_fn, device):
    forward = checkpointed_forward(model)
    be = devices.get(device)

    def step(fwd):
        with autograd.record():
            loss = loss_fn(fwd(x), y)
        kept = memory.saved(loss, model.parameters()).activations
        loss.backward()
        be.synchronize()
        return kept

    def median_time(fwd, n=5):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            step(fwd)
            times.append(time.perf_counter() - t0)
        return sorted(times)[n // 2]
    kept = step(forward)
    plain_t, ckpt_t = median_time(model), median_time(forward)
    return {"saved (checkpoint)": kept, "checkpoint step time ratio": ckpt_t / plain_t}


# ---------------------------------------------------------------------------- the 4.7 graph


def graph_4_7(d=784, h=256, q=10, batch=1, bias=False, lam=1e-3, device=None, seed=0,
              dtype=None):
    """Section 4.7's network and objective J = l(o, y) + lambda/2 (|W1|^2 + |W2|^2), recorded
    once (with each op's line), with a bias in the hidden layer for exercise 2 (bias=True).
    Returns (J, names, weights): names {symbol: tensor} for gg.graph_of, weights the tensors
    the gradient is taken for (W1, b1 when there, W2)."""
    from gpugrad import nn
    from gpugrad.nn import functional as F

    devices.seed(seed)
    hidden = nn.Linear(d, h, bias=bias, dtype=dtype, device=device)
    out = nn.Linear(h, q, bias=False, dtype=dtype, device=device)
    rng = np.random.default_rng(seed)
    x = tensors.tensor(rng.standard_normal((batch, d)), dtype=hidden.weight.dtype, device=device)
    y = rng.integers(0, q, batch)
    names = {"W1": hidden.weight, "W2": out.weight, "x": x}
    if bias:
        names["b1"] = hidden.bias
    weights = [hidden.weight] + ([hidden.bias] if bias else []) + [out.weight]

    def objective():
        # the penalty is on the weights alone, as the book's s = lambda/2 (|W1|^2 + |W2|^2)
        return F.cross_entropy(out(ops.relu(hidden(x))), y) + lam * F.l2_penalty(
            [hidden.weight, out.weight])

    with autograd.note_lines(), autograd.record():
        J = objective()
    return J, names, weights, objective


def second_order_4_7(**kwargs):
    """Exercise 4: the graphs of J (first order) and of its gradient recorded with
    create_graph=True (what a second derivative differentiates), and the two steps to time
    side by side: one gradient, and one Hessian-vector product (reverse over reverse)."""
    from gpugrad import drawing

    J, names, weights, objective = graph_4_7(**kwargs)
    first = drawing.graph_of(J, names)
    grads = autograd.grad(J, weights, create_graph=True)
    second = drawing.graph_of(grads, names)
    rng = np.random.default_rng(1)
    vs = [tensors.tensor(rng.standard_normal(w.shape), dtype=w.dtype, device=J.device)
          for w in weights]

    def gradient():
        with autograd.record():
            j = objective()
        return autograd.grad(j, weights)

    def hessian_vector():
        with autograd.record():
            j = objective()
            gs = autograd.grad(j, weights, create_graph=True)
            gv = ops.sum(gs[0] * vs[0])
            for g, v in zip(gs[1:], vs[1:]):
                gv = gv + ops.sum(g * v)
        return autograd.grad(gv, weights)

    return {"first": first, "second": second, "weights": weights, "v": vs,
            "steps": {"gradient": gradient, "hessian-vector product": hessian_vector}}
