"""PyTorch, the baseline beside most rows: its backward kernels, the same training step (eager
and captured in a CUDA graph), torch.func's Jacobians and its per-op overhead. Every case here
is built only when PyTorch is installed and runs on the device."""

import numpy as np

from gpugrad.app.bench import array_baseline


def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


# PyTorch's own backward kernel of an activation kernel (torch.ops.aten), called as
# fn(aten, g, x, y). An activation without one (softsign: PyTorch composes it) is timed as
# PyTorch's autograd runs it: the vjp of torch.nn.functional.<name>.
TORCH_BACKWARDS = {
    "relu": lambda a, g, x, y: a.threshold_backward(g, y, 0),
    "leaky_relu": lambda a, g, x, y: a.leaky_relu_backward(g, x, 0.01, False),
    "elu": lambda a, g, x, y: a.elu_backward(g, 1.0, 1, 1, True, y),
    "gelu": lambda a, g, x, y: a.gelu_backward(g, x, approximate="none"),
    "gelu_tanh": lambda a, g, x, y: a.gelu_backward(g, x, approximate="tanh"),
    "silu": lambda a, g, x, y: a.silu_backward(g, x),
    "softplus": lambda a, g, x, y: a.softplus_backward(g, x, 1.0, 20.0),
    "sigmoid": lambda a, g, x, y: a.sigmoid_backward(g, y),
    "tanh": lambda a, g, x, y: a.tanh_backward(g, y),
}



def activation_backward(be, activation, declared_name, g, x, y):
    """PyTorch's backward of `activation` on the arrays g, x, y of backend `be`, or None where
    PyTorch cannot take them: it shares NumPy's and CuPy's arrays through DLPack, the strict
    device's it cannot."""
    torch = torch_or_none()
    if torch is None or not (be.xp is np or (be.is_cuda and torch.cuda.is_available())):
        return None
    tg, tx, ty = (torch.from_dlpack(a) for a in (g, x, y))
    torch_fn = TORCH_BACKWARDS.get(activation)
    if torch_fn is not None:
        aten = torch.ops.aten
        return lambda: torch_fn(aten, tg, tx, ty)
    _, torch_vjp = torch.func.vjp(getattr(torch.nn.functional, declared_name), tx)
    return lambda: torch_vjp(tg)


def mlp_step_cases(sizes, weights_host, activations_host, x_host, y_host, lam, lr, be,
                   precision=None, tag=None):
    """{impl: step()}: the same bias-free MLP's SGD step in PyTorch ("torch"; "torch graph" on
    CUDA: captured) from the same weights and data, and its matrix products alone ("torch
    matmuls"); with precision also the step in it, named "torch <tag>" (tag: the precision
    unless given): under torch.autocast for bf16 and fp16, with PyTorch's TF32 switches on
    for tf32. None where PyTorch is missing or cannot reach the device."""
    torch = torch_or_none()
    if torch is None or (be.is_cuda and not torch.cuda.is_available()):
        return {}
    dev = "cpu" if not be.is_cuda else "cuda"
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b, bias=False))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    tmodel = torch.nn.Sequential(*layers).to(dev)
    with torch.no_grad():  # the same weights
        for w, tp in zip(weights_host, tmodel.parameters()):
            tp.copy_(torch.from_numpy(w))
    topt = torch.optim.SGD(tmodel.parameters(), lr=lr)
    tx, ty = torch.from_numpy(x_host).to(dev), torch.from_numpy(y_host).to(dev)
    cases = {"torch matmuls": array_baseline.matmul_products(
        torch.matmul, *([torch.from_numpy(a).to(dev) for a in arrays]
                        for arrays in (weights_host, activations_host)))}

    def step_in(cast):
        def theirs():
            topt.zero_grad(set_to_none=True)
            with torch.autocast(dev, dtype=getattr(torch, cast or "bfloat16"),
                                enabled=cast is not None):
                loss = torch.nn.functional.cross_entropy(tmodel(tx), ty) + lam / 2 * sum(
                    (p * p).sum() for p in tmodel.parameters())
            loss.backward()
            topt.step()
        return theirs
    cases["torch"] = step_in(None)
    if be.is_cuda:
        cases["torch graph"] = captured(torch, cases["torch"], topt)
    if precision is not None:
        name = f"torch {tag or precision}"
        cases[name] = (with_tf32(torch, step_in(None)) if precision == "tf32"
                       else step_in({"bf16": "bfloat16", "fp16": "float16"}[precision]))
        if be.is_cuda:  # captured with the switches on, as gpugrad's step is
            cases[f"{name} graph"] = captured(torch, cases[name], topt)
    return cases


def with_tf32(torch, step):
    """step() with torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    on while it runs and as they were after, an error included (on the CPU PyTorch ignores
    both, as NumPy has no TF32 either)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn

    def tf32_step():
        before = matmul.allow_tf32, cudnn.allow_tf32
        matmul.allow_tf32 = cudnn.allow_tf32 = True
        try:
            step()
        finally:
            matmul.allow_tf32, cudnn.allow_tf32 = before
    return tf32_step


def captured(torch, step, opt):
    """PyTorch's step captured whole into a CUDA graph, as its docs show (warm-up on a side
    stream, gradients set to None before the capture), replayed per call."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    opt.zero_grad(set_to_none=True)
    try:  # kept, so that its nodes can be counted (PyTorch >= 2.6)
        graph = torch.cuda.CUDAGraph(keep_graph=True)
    except TypeError:
        graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # zero_grad(set_to_none) inside is host-side only
        step()

    def replay():
        graph.replay()
    replay.cuda_graph = graph
    return replay


def jacobian_cases(w_host, x_host):
    """{impl: fn()}: the Jacobian of tanh(W x) by torch.func.jacrev and jacfwd on the CPU, or
    none without PyTorch."""
    torch = torch_or_none()
    if torch is None:
        return {}
    tw, tx = torch.from_numpy(w_host), torch.from_numpy(x_host)
    return {"torch jacrev": lambda: torch.func.jacrev(lambda v: torch.tanh(tw @ v))(tx),
            "torch jacfwd": lambda: torch.func.jacfwd(lambda v: torch.tanh(tw @ v))(tx)}


def overhead_cases(chain, x_host, be):
    """{("torch", mode): fn()}: chain(v, tanh) run by PyTorch not recorded, recorded, and
    recorded with its backward, or none where PyTorch is missing or cannot reach the device."""
    torch = torch_or_none()
    if torch is None or (be.is_cuda and not torch.cuda.is_available()):
        return {}
    tx = torch.tensor(x_host, device="cpu" if not be.is_cuda else "cuda", requires_grad=True)

    def t_plain():
        with torch.no_grad():
            chain(tx, torch.tanh)

    def t_backward():
        chain(tx, torch.tanh).sum().backward()

    return {("torch", "no grad"): t_plain, ("torch", "record"): lambda: chain(tx, torch.tanh),
            ("torch", "record + backward"): t_backward}


def einsum_cases(spec, hosts, be):
    """{(impl, mode): fn()}: torch.einsum forward, and forward + backward of every operand
    under a sum, on the same operands; none where PyTorch is missing or cannot reach the
    device."""
    torch = torch_or_none()
    if torch is None or not (be.xp is np or (be.is_cuda and torch.cuda.is_available())):
        return {}
    dev = "cuda" if be.is_cuda else "cpu"
    ts = [torch.tensor(h, device=dev, requires_grad=True) for h in hosts]
    sync = torch.cuda.synchronize if be.is_cuda else (lambda: None)

    def forward():
        with torch.no_grad():
            torch.einsum(spec, *ts)
        sync()

    def backward():
        torch.einsum(spec, *ts).sum().backward()
        sync()
    return {("torch", "forward"): forward, ("torch", "forward + backward"): backward}


def rnn_step_cases(kind, layer_weights, head_weights, x_host, y_host, lr, be):
    """{impl: step()}: the same character model's training step with torch.nn.<kind> ("torch",
    cuDNN on CUDA) and with a Python loop of torch.nn.<kind>Cell ("torch cells"), from the
    same weights; none where PyTorch is missing or cannot reach the device."""
    torch = torch_or_none()
    if torch is None or not (be.xp is np or (be.is_cuda and torch.cuda.is_available())):
        return {}
    dev = "cuda" if be.is_cuda else "cpu"
    steps, batch, vocabulary = x_host.shape
    hidden = layer_weights["weight_hh"].shape[1]
    layer = getattr(torch.nn, kind)(vocabulary, hidden).to(dev)
    cell = getattr(torch.nn, f"{kind}Cell")(vocabulary, hidden).to(dev)
    head = torch.nn.Linear(hidden, vocabulary).to(dev)
    with torch.no_grad():
        for name, w in layer_weights.items():
            getattr(layer, f"{name}_l0").copy_(torch.from_numpy(w))
            getattr(cell, name).copy_(torch.from_numpy(w))
        for name, w in head_weights.items():
            getattr(head, name).copy_(torch.from_numpy(w))
    x, y = torch.from_numpy(x_host).to(dev), torch.from_numpy(y_host).to(dev)
    sync = torch.cuda.synchronize if be.is_cuda else (lambda: None)

    def step_with(run, params):
        opt = torch.optim.SGD(params, lr=lr)

        def step():
            opt.zero_grad(set_to_none=True)
            out = run()
            torch.nn.functional.cross_entropy(head(out.reshape(-1, hidden)), y).backward()
            opt.step()
            sync()
        return step

    def cells():
        state, outs = None, []
        for t in range(steps):
            state = cell(x[t], state)
            outs.append(state[0] if kind == "LSTM" else state)
        return torch.stack(outs)
    return {"torch": step_with(lambda: layer(x)[0], [*layer.parameters(), *head.parameters()]),
            "torch cells": step_with(cells, [*cell.parameters(), *head.parameters()])}
