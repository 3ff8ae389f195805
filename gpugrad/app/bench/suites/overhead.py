"""The overhead suite: microseconds per op of the framework itself, beside the array library's
own call (the floor) and PyTorch's."""

import numpy as np

import gpugrad
from gpugrad import devices
from gpugrad.app.bench import array_baseline, table, torch_baseline
from gpugrad.app.bench.blocks import Blocks
from gpugrad.app.bench.yardstick import Yardstick


def overhead_cases(n_ops, device):
    """{(impl, mode): fn()} running a chain of n_ops tanh on a 16-element vector: the arrays are
    so small that the time is the framework's own, per op. Modes: "no grad" (not recorded),
    "record" (recorded, no backward) and "record + backward"."""
    x_host = np.linspace(-1, 1, 16, dtype=np.float32)
    x = gpugrad.tensor(x_host, device=device)
    x.attach_grad()

    def chain(v, tanh):
        for _ in range(n_ops):
            v = tanh(v)
        return v

    def plain():
        with gpugrad.no_grad():
            chain(x, gpugrad.tanh)

    def record():
        with gpugrad.autograd.record():
            chain(x, gpugrad.tanh)

    def backward():
        with gpugrad.autograd.record():
            y = chain(x, gpugrad.tanh).sum()
        y.backward()

    be = devices.get(device)
    raw = x.data

    def array_calls():  # the array library's own per-call cost: the floor under every op
        with be.active:
            chain(raw, be.xp.tanh)

    cases = {("gpugrad", "no grad"): plain, ("gpugrad", "record"): record,
             ("gpugrad", "record + backward"): backward,
             (array_baseline.array_library(device), "no grad"): array_calls}
    cases.update(torch_baseline.overhead_cases(chain, x_host, be))
    return cases


def overhead_suite(device, quick=True, progress=None, yardstick=None):
    """Microseconds per op of the framework itself: a chain of tanh on 16 elements, beside the
    array library's own call (the floor) and PyTorch's."""
    n_ops = 100
    cases = overhead_cases(n_ops, device)
    pairs = {key: (key, ("torch", key[1])) for key in cases
             if key[0] == "gpugrad" and ("torch", key[1]) in cases}
    blocks = Blocks(cases, device, blocks=3 if quick else 5, min_seconds=0.1,
                    yardstick=yardstick if yardstick is not None else Yardstick())
    verdicts = blocks.settle(list(pairs.values()))
    floor = blocks.median((array_baseline.array_library(device), "no grad")) / n_ops * 1e6
    rows = []
    for (impl, mode) in cases:
        us = blocks.median((impl, mode)) / n_ops * 1e6
        row = {"suite": "overhead", "mode": mode, "impl": impl, "us per op": us,
               "us over the array call": us - floor if impl == "gpugrad" else None,
               "gpugrad / torch": table.ratio_of(verdicts[pairs[impl, mode]])
               if (impl, mode) in pairs else None}
        rows.append(table.with_verdicts(row, [verdicts[pairs[impl, mode]]]) if (impl, mode) in pairs
                    else table.with_turn_note(row, blocks, (impl, mode)))
    if progress:
        progress(1, 1, "overhead")
    return rows

