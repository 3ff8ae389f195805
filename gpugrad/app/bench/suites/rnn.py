"""The rnn suite: one truncated-BPTT training step of a character model (one-hot input, a
recurrent layer, a linear head on every step, cross-entropy over the sequence, SGD) with
gpugrad's RNN, LSTM and GRU beside PyTorch's nn.RNN/LSTM/GRU and a Python loop of PyTorch's
cells, all from the same weights and data."""

import numpy as np

import gpugrad
from gpugrad import devices
from gpugrad.app.bench import table, torch_baseline
from gpugrad.app.bench.blocks import Blocks
from gpugrad.app.bench.yardstick import Yardstick

KINDS = ("RNN", "LSTM", "GRU")
SHAPES = {True: [(35, 32, 256)], False: [(35, 32, 256), (35, 128, 512)]}  # (T, batch, hidden)
VOCABULARY = 28


def rnn_step_cases(kind, steps, batch, hidden, device, lr=0.1):
    """{impl: step()} for one training step of `kind` over `steps` time steps."""
    from gpugrad import nn
    from gpugrad.nn import functional as F

    rng = np.random.default_rng(steps * batch + hidden)
    tokens = rng.integers(0, VOCABULARY, (steps + 1, batch))
    x_host = np.eye(VOCABULARY, dtype=np.float32)[tokens[:-1]]  # (T, batch, vocabulary)
    y_host = tokens[1:].reshape(-1)
    devices.seed(0)
    layer = getattr(nn, kind)(VOCABULARY, hidden, device=device)
    head = nn.Linear(hidden, VOCABULARY, device=device)
    params = layer.parameters() + head.parameters()
    opt = gpugrad.optim.SGD(params, lr=lr)
    x = gpugrad.tensor(x_host, device=device)
    labels = devices.get(device).asarray(y_host)

    def ours():
        with gpugrad.autograd.record():
            out, _ = layer(x)
            loss = F.cross_entropy(head(out.reshape(-1, hidden)), labels)
        loss.backward()
        opt.step()
    # gg.compile: a CUDA graph on CUDA; on the CPU the step's NumPy calls recorded and replayed
    cases = {"gpugrad": ours, "gpugrad compiled": gpugrad.compile(ours, device=device)}
    cases.update(torch_baseline.rnn_step_cases(
        kind, {k: p.numpy() for k, p in layer.named_parameters()},
        {k: p.numpy() for k, p in head.named_parameters()}, x_host, y_host, lr,
        devices.get(device)))
    return cases


def rnn_suite(device, quick=True, progress=None, yardstick=None):
    """Step time of gpugrad's recurrent layers beside PyTorch's layers and cell loops."""
    yardstick = yardstick if yardstick is not None else Yardstick()
    work = [(kind, shape) for shape in SHAPES[quick] for kind in KINDS]
    rows = []
    for i, (kind, (steps, batch, hidden)) in enumerate(work):
        cases = rnn_step_cases(kind, steps, batch, hidden, device)
        columns = {"torch": "gpugrad / torch layer", "torch cells": "gpugrad / torch cells"}
        pairs = {(mine, columns[theirs]): (mine, theirs) for mine in ("gpugrad", "gpugrad compiled")
                 for theirs in columns if theirs in cases}
        blocks = Blocks(cases, device, blocks=3 if quick else 5, min_seconds=0.2,
                        yardstick=yardstick)
        verdicts = blocks.settle(list(pairs.values()))
        for impl in cases:
            row = {"suite": "rnn", "layer": kind, "T, batch, hidden": f"{steps}, {batch}, {hidden}",
                   "impl": impl, "median ms": blocks.median(impl) * 1e3}
            mine = [verdicts[pair] for (who, _), pair in pairs.items() if who == impl]
            for col in columns.values():
                pair = pairs.get((impl, col))
                row[col] = table.ratio_of(verdicts[pair]) if pair else None
            rows.append(table.with_verdicts(row, mine) if mine
                        else table.with_turn_note(row, blocks, impl))
        if progress:
            progress(i + 1, len(work), f"rnn {kind} {steps}x{batch}x{hidden}")
    return rows
