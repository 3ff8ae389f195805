"""The mlp suite: one SGD training step of section 4.7's network and of a deep MLP, in gpugrad
(eager, with host labels, compiled: captured on CUDA, recorded on the CPU) beside PyTorch, JAX,
the array library's matrix products and the step written by hand."""

import numpy as np

import gpugrad
from gpugrad import devices
from gpugrad.app import precisions
from gpugrad.app.bench import array_baseline, counting, jax_baseline, table, torch_baseline
from gpugrad.app.bench.blocks import Blocks
from gpugrad.app.bench.yardstick import Yardstick

MLP_MODELS = {"4.7 (784-256-10)": [784, 256, 10], "deep (784-1024x3-10)": [784, 1024, 1024, 1024, 10]}



def mlp_step_cases(sizes, batch, device, lam=1e-3, lr=0.01, precision=None):
    """{impl: step()} for one SGD training step (forward, cross-entropy + L2, backward, update)
    of the same bias-free MLP on the same data, in gpugrad and (when installed) PyTorch; with
    precision also the step in that precision in each library: "tf32" with its TF32 switch on
    for the step (labelled as a no-op off CUDA), "bf16" or "fp16" under its autocast ("gpugrad
    bf16", "torch bf16"; no loss scaling)."""
    be = devices.get(device)
    rng = np.random.default_rng(batch)
    x_host = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y_host = rng.integers(0, sizes[-1], batch)
    params, cases = _gpugrad_cases(sizes, x_host, y_host, device, lam, lr, precision)
    # the step's matrix products alone, in the array library and in PyTorch: the gap between
    # them is the floor under gpugrad / torch
    weights_host = [p.numpy() for p in params]
    acts_host = [rng.standard_normal((batch, n)).astype(np.float32) for n in sizes]
    with be.active:
        weights, acts = ([be.xp.asarray(a) for a in arrays] for arrays in (weights_host, acts_host))
    cases[f"{array_baseline.array_library(device)} matmuls"] = array_baseline.matmul_products(
        be.xp.matmul, weights, acts)
    tag = precisions.label(precision, device) if precision else None
    cases.update(torch_baseline.mlp_step_cases(sizes, weights_host, acts_host, x_host, y_host,
                                               lam, lr, be, precision, tag))
    if be.is_cuda:  # the floor: the same step by hand on CuPy arrays, captured
        with be.active:
            floor_weights = [be.xp.asarray(w) for w in weights_host]
            floor_x, floor_y = be.xp.asarray(x_host), be.xp.asarray(y_host)
        cases["hand-written captured"] = gpugrad.cuda.graph(
            array_baseline.hand_written_step(floor_weights, floor_x, floor_y, lam, lr),
            device=device)
        jax_step = jax_baseline.training_step(weights_host, x_host, y_host, lam, lr)
        if jax_step is not None:
            cases["jax jit"] = jax_step
            if precision is not None:
                cases[f"jax {tag} jit"] = jax_baseline.training_step(
                    weights_host, x_host, y_host, lam, lr, precision)
    elif be.is_cpu:  # the floor under the compiled step: the same step by hand on NumPy
        cases["hand-written"] = array_baseline.hand_written_step(
            [w.copy() for w in weights_host], x_host, y_host, lam, lr)
        jax_step = jax_baseline.training_step(weights_host, x_host, y_host, lam, lr,
                                              platform="cpu")
        if jax_step is not None:  # the other library that compiles a whole step
            cases["jax jit"] = jax_step
    return cases


def _gpugrad_cases(sizes, x_host, y_host, device, lam, lr, precision=None):
    """(the model's parameters, {impl: step()}): gpugrad's step eager, with labels from the host
    (not on the CPU) and captured (on CUDA)."""
    from gpugrad import nn
    from gpugrad import optim
    from gpugrad.nn import functional as F

    be = devices.get(device)
    devices.seed(0)
    model = nn.MLP(sizes, bias=False, device=device)
    opt = optim.SGD(model.parameters(), lr=lr)
    with be.active:
        x, y = gpugrad.tensor(x_host, device=device), be.asarray(y_host)
    params = model.parameters()

    def step_with(labels, precision=None):
        cast = precisions.AUTOCAST[precision] if precision else None

        def step():
            with gpugrad.autograd.record(), gpugrad.autocast(cast or "bfloat16",
                                                             enabled=cast is not None):
                loss = F.cross_entropy(model(x), labels) + lam * F.l2_penalty(params)
            loss.backward()
            opt.step()
            return loss  # as the hand-written step does: compiled, the loss is computed too

        def tf32_step():  # the switch on for the whole step (backward's products too)
            with precisions.matmul_mode("tf32"):
                step()
        return tf32_step if precision == "tf32" else step

    ours = step_with(y)
    cases = {"gpugrad": ours}
    if precision is not None:
        tag = precisions.label(precision, device)
        cases[f"gpugrad {tag}"] = step_with(y, precision)
        if be.is_cuda:  # captured with the switch on: the replays run TF32's products
            cases[f"gpugrad {tag} captured"] = gpugrad.cuda.graph(cases[f"gpugrad {tag}"],
                                                                  device=device)
    if not be.is_cpu:  # labels as a data loader gives them, host data: checked on the host
        # before they move, where labels on the device are read back to be checked (a sync)
        cases["gpugrad host labels"] = step_with(y_host)
    if be.is_cuda:  # the same step captured once and replayed (gg.compile is this on CUDA)
        cases["gpugrad captured"] = gpugrad.cuda.graph(ours, device=device)
    else:  # recorded once and replayed on the CPU; eager under capture's rules on strict
        cases["gpugrad compiled"] = gpugrad.compile(ours, device=device)
    return params, cases


def _torch_counterpart(impl, tag):
    """The PyTorch row a gpugrad row is timed against: products against products, a captured
    step against PyTorch's CUDA graph and an eager one against the eager step, each in the
    row's precision (`tag`, as the row names it)."""
    if impl.endswith(" matmuls"):
        return "torch matmuls"
    precision = f" {tag}" if tag and f" {tag}" in impl else ""
    return f"torch{precision} graph" if impl.endswith(" captured") else f"torch{precision}"


def _pairs(cases, tag):
    """{(row, column): (impl, baseline)}: each gpugrad row against its PyTorch counterpart
    (_torch_counterpart), each precision's row against its fp32 row, and the captured and
    compiled steps against the hand-written floor."""
    pairs = {}
    for impl in cases:
        base = _torch_counterpart(impl, tag)
        if not impl.startswith(("torch", "jax", "hand")) and base in cases:
            pairs[impl, "gpugrad / torch"] = (impl, base)
        fp32 = impl.replace(f" {tag}", "") if tag else None
        if tag and f" {tag}" in impl and fp32 in cases:
            pairs[impl, "time / fp32"] = (impl, fp32)
    for mine, floor, column in _FLOOR_COLUMNS:
        if mine in cases and floor in cases:
            pairs[mine, column] = (mine, floor)
    return pairs


# (gpugrad's row, the row it is timed against, the column): a whole step compiled against
# the step by hand and, on the CPU, against JAX's jit
_FLOOR_COLUMNS = (("gpugrad captured", "hand-written captured", "captured / hand-written"),
                  ("gpugrad compiled", "hand-written", "compiled / hand-written"),
                  ("gpugrad compiled", "jax jit", "compiled / jax jit"))


MLP_BATCHES = {True: [32, 1024], False: [32, 128, 512, 1024, 4096]}  # quick, full


def mlp_suite(device, quick=True, progress=None, batches=None, yardstick=None, precision=None):
    """Step time, samples/s and gpugrad/torch for the section 4.7 and the deep MLP, at
    `batches` (default: MLP_BATCHES[quick]); with precision, the steps under autocast too."""
    batches = MLP_BATCHES[quick] if batches is None else list(batches)
    yardstick = yardstick if yardstick is not None else Yardstick()
    rows = []
    work = [(name, b) for name in MLP_MODELS for b in batches]
    for i, (name, batch) in enumerate(work):
        cases = mlp_step_cases(MLP_MODELS[name], batch, device, precision=precision)
        ops = counting.ops_per_step(cases["gpugrad"])
        strict = devices.get(device).name == "strict"
        calls = sum(counting.device_calls_per_step(cases["gpugrad"]).values()) if strict else None
        captured_calls = (sum(counting.device_calls_per_captured_step(cases["gpugrad"], device).values())
                          if strict else None)
        be_cuda = devices.get(device).is_cuda
        pairs = _pairs(cases, precisions.label(precision, device) if precision else None)
        blocks = Blocks(cases, device, blocks=3 if quick else 5, yardstick=yardstick)
        verdicts = blocks.settle(list(pairs.values()))
        # on CUDA, what one replay of each captured step launches, counted in its graph
        launches = {impl: counting.kernels_per_step(cases[impl])
                    for impl in ("gpugrad captured", "torch graph") if impl in cases}
        for impl in cases:
            secs = blocks.median(impl)
            mine = {col: verdicts[pair] for (who, col), pair in pairs.items() if who == impl}
            row = {"suite": "mlp", "model": name, "batch": batch, "impl": impl,
                   "median ms": secs * 1e3, "samples/s": batch / secs,
                   "ops per step": ops if impl == "gpugrad" else None,
                   **({"device calls per step": calls if impl == "gpugrad" else None,
                       "device calls per captured step":
                           captured_calls if impl == "gpugrad" else None}
                      if calls is not None else {}),
                   **({"kernels per step": launches.get(impl)} if be_cuda else {}),
                   "gpugrad / torch": table.ratio_of(mine["gpugrad / torch"])
                   if "gpugrad / torch" in mine else None,
                   **{col: table.ratio_of(mine[col]) if col in mine else None
                      for _, floor, col in _FLOOR_COLUMNS
                      if floor in cases},
                   **({"time / fp32": table.ratio_of(mine["time / fp32"])
                       if "time / fp32" in mine else None} if precision else {})}
            rows.append(table.with_verdicts(row, list(mine.values())) if mine
                        else table.with_turn_note(row, blocks, impl))
        if progress:
            progress(i + 1, len(work), f"{name} batch {batch}")
    return rows
