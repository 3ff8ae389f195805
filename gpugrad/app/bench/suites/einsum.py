"""The einsum suite: gg.einsum forward, and forward + backward, beside torch.einsum and (the
forward) NumPy's einsum as users call it and with optimize=True."""

import numpy as np

import gpugrad
from gpugrad import devices
from gpugrad.app.bench import array_baseline, table, torch_baseline
from gpugrad.app.bench.blocks import Blocks
from gpugrad.app.bench.yardstick import Yardstick

# name -> (subscripts, operand shapes): a batched product, attention's scores, a bilinear form
# of three operands (contracted two at a time)
PROBLEMS = {
    "batched matmul": ("bij,bjk->bik", [(32, 64, 64), (32, 64, 64)]),
    "attention scores": ("bhqd,bhkd->bhqk", [(8, 4, 64, 32), (8, 4, 64, 32)]),
    "bilinear, 3 operands": ("bi,ij,bj->b", [(256, 128), (128, 128), (256, 128)]),
}


def einsum_cases(spec, shapes, device):
    """{(impl, mode): fn()}: modes "forward" and "forward + backward" (the gradient of every
    operand, under a sum)."""
    rng = np.random.default_rng(len(spec))
    hosts = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    xs = [gpugrad.tensor(h, device=device) for h in hosts]
    for x in xs:
        x.attach_grad()

    def forward():
        with gpugrad.no_grad():
            gpugrad.einsum(spec, *xs)

    def backward():
        with gpugrad.autograd.record():
            y = gpugrad.sum(gpugrad.einsum(spec, *xs))
        y.backward()

    cases = {("gpugrad", "forward"): forward, ("gpugrad", "forward + backward"): backward}
    be = devices.get(device)
    if be.xp is np:
        library = array_baseline.array_library(device)
        cases[(library, "forward")] = lambda: np.einsum(spec, *hosts)
        cases[(f"{library} optimize=True", "forward")] = lambda: np.einsum(spec, *hosts, optimize=True)
    cases.update(torch_baseline.einsum_cases(spec, hosts, be))
    return cases


def einsum_suite(device, quick=True, progress=None, yardstick=None):
    """gg.einsum beside torch.einsum and NumPy's einsum, on three contractions."""
    names = ("batched matmul", "bilinear, 3 operands") if quick else tuple(PROBLEMS)
    problems = [(k, PROBLEMS[k]) for k in names]
    yardstick = yardstick if yardstick is not None else Yardstick()
    rows = []
    for i, (name, (spec, shapes)) in enumerate(problems):
        cases = einsum_cases(spec, shapes, device)
        pairs = {key: (key, ("torch", key[1])) for key in cases
                 if key[0] == "gpugrad" and ("torch", key[1]) in cases}
        blocks = Blocks(cases, device, blocks=3 if quick else 5, min_seconds=0.05,
                        yardstick=yardstick)
        verdicts = blocks.settle(list(pairs.values()))
        for impl, mode in cases:
            row = {"suite": "einsum", "problem": f"{name} {spec}", "mode": mode, "impl": impl,
                   "median ms": blocks.median((impl, mode)) * 1e3,
                   "gpugrad / torch": table.ratio_of(verdicts[pairs[impl, mode]])
                   if (impl, mode) in pairs else None}
            rows.append(table.with_verdicts(row, [verdicts[pairs[impl, mode]]])
                        if (impl, mode) in pairs else table.with_turn_note(row, blocks, (impl, mode)))
        if progress:
            progress(i + 1, len(problems), f"einsum {name}")
    return rows
