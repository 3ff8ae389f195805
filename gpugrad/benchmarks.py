"""The measurements behind `gpugrad bench` and the pytest-benchmark suites in bench/.

Every figure is taken beside its baseline in the same run (fused vs unfused, gpugrad vs
PyTorch, a device-to-device copy for bandwidth), as the median of many repeats after warm-up;
on CUDA each repeat is timed with CUDA events around the region.
"""

import collections
import datetime
import functools
import platform
import statistics
import time

import numpy as np

import gpugrad
from gpugrad import backend, kernels

# ---------------------------------------------------------------------------- timing


# A measurement whose median is more than this many times its fastest repeat (or blocks whose
# medians differ by as much) caught a machine busy for part of it: it is taken again, and if it
# stays so it is flagged and no ratio is printed from it (a shared machine once made every
# PyTorch kernel row read about 8 ms, and the ratio beside it 0.004).
UNSTABLE_FACTOR = 3.0


class Timing:
    """The repeats of one measurement: median and fastest seconds, and whether it is stable."""

    def __init__(self, times, attempts=1):
        self.times = times
        self.median = statistics.median(times)
        self.fastest = min(times)
        self.attempts = attempts

    @property
    def spread(self):
        """median / fastest repeat (1.0: every repeat alike)."""
        return self.median / self.fastest if self.fastest > 0 else float("inf")

    @property
    def stable(self):
        return self.spread <= UNSTABLE_FACTOR

    def note(self):
        return None if self.stable else (
            f"unstable: median {self.spread:.1f}x its fastest repeat after {self.attempts} "
            f"attempts; no ratio")


def repeat_times(fn, device, warmup=3, min_repeats=15, min_seconds=0.05, max_repeats=500):
    """Seconds of each repeat of fn() on device after warm-up; CUDA events per repeat on a GPU.
    fn runs inside the device's context, so a case need not enter it on every call."""
    be = backend.get(device)
    with be.active:
        for _ in range(warmup):
            fn()
        be.synchronize()
        if be.is_cuda:
            cp = be.xp
            events = [(cp.cuda.Event(), cp.cuda.Event()) for _ in range(max(min_repeats, 50))]
            for start, end in events:
                start.record()
                fn()
                end.record()
            events[-1][1].synchronize()
            return [cp.cuda.get_elapsed_time(s, e) / 1e3 for s, e in events]
        times = []
        start_all = time.perf_counter()
        while len(times) < min_repeats or (time.perf_counter() - start_all < min_seconds
                                           and len(times) < max_repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return times


def timing(fn, device, attempts=3, **repeat_kwargs):
    """A Timing of fn(), taken again (up to `attempts` in all) while it is unstable; the most
    stable attempt is kept."""
    best = None
    for attempt in range(1, attempts + 1):
        t = Timing(repeat_times(fn, device, **repeat_kwargs), attempt)
        if best is None or t.spread < best.spread:
            best = t
        if t.stable:
            break
    best.attempts = attempt
    return best


def alternating_blocks(cases, device, blocks=3, min_seconds=0.2):
    """({impl: [median seconds per block]}, {impls whose timing was unstable}): each case timed
    in a block of its own (warm-up, then timing()), the cases taking turns block after block, so
    that the drift of a shared machine falls on all of them alike and ratios can be taken block
    by block. Blocks, not single calls, take turns: NumPy's and PyTorch's thread pools spin for
    a while after their work, and calls interleaved one by one would time each library against
    the other's spin. A case is unstable if a block stayed unstable or its block medians differ
    by more than UNSTABLE_FACTOR."""
    times = {impl: [] for impl in cases}
    unstable = set()
    for _ in range(blocks):
        for impl, fn in cases.items():
            t = timing(fn, device, warmup=2, min_repeats=5, min_seconds=min_seconds)
            times[impl].append(t.median)
            if not t.stable:
                unstable.add(impl)
    for impl, medians in times.items():
        if max(medians) > UNSTABLE_FACTOR * min(medians):
            unstable.add(impl)
    return times, unstable


def median_ratio(times, impl, baseline, unstable=()):
    """The median over blocks of impl's time / baseline's time in the same block; None if
    either timing was unstable."""
    if impl in unstable or baseline in unstable:
        return None
    return statistics.median(a / b for a, b in zip(times[impl], times[baseline]))


def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def environment(device):
    """Device, date and library versions, stored with every result."""
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "gpugrad": gpugrad.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
    torch = torch_or_none()
    env["torch"] = torch.__version__ if torch else None
    if torch:
        env["torch threads"] = torch.get_num_threads()
    be = backend.get(device)
    if be.is_cuda:
        cp = be.xp
        props = cp.cuda.runtime.getDeviceProperties(be.index)
        env.update({"cupy": cp.__version__, "gpu": props["name"].decode(),
                    "cuda driver": cp.cuda.runtime.driverGetVersion(),
                    "cuda runtime": cp.cuda.runtime.runtimeGetVersion()})
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


# ---------------------------------------------------------------------------- kernels suite

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


def activation_backwards():
    """{activation kernel: (its declared activation, the params selecting it)}: every kernel of
    every declared activation (gpugrad/ops/activation.py), with the declared defaults."""
    from gpugrad.ops import activation as act

    return {kernel: (a, {**dict(a.params), **fixed})
            for a in act.ACTIVATIONS.values() for kernel, fixed in act.variant_params(a)}


# relu's and leaky_relu's backward read from the output, as the networks run it where the next
# layer keeps that output (relu_backward_from_output): {row name: (activation, its params)}
FROM_OUTPUT = {"relu from y": ("relu", {}),
               "leaky_relu from y": ("leaky_relu", {"negative_slope": 0.01, "leaky": True})}


def kernel_cases(activation, n, device):
    """{impl: callable} for one activation backward on n float32 elements, plus bytes moved.

    impls: "gpugrad" (fused on CUDA, the NumPy composition on the CPU), "unfused" (not on NumPy:
    the CuPy composition), "torch" (PyTorch's own backward kernel, when installed for this
    device) and "copy" (a device-to-device copy of n elements, the bandwidth yardstick).
    """
    be = backend.get(device)
    xp = be.xp
    base, params = FROM_OUTPUT.get(activation, (activation, None))
    declared, forward_params = activation_backwards()[base]
    saved_kind = declared.saves
    if params is not None:
        op, saved_kind = gpugrad.OPS["relu_backward_from_output"], "y"
    elif saved_kind == "mask":  # relu and leaky_relu share the backward from the mask
        op = gpugrad.OPS["relu_backward"]
        params = {"negative_slope": forward_params.get("negative_slope", 0.0)}
    else:
        op, params = gpugrad.OPS[f"{declared.name}_backward"], forward_params
    rng = np.random.default_rng(n)
    with be.active:
        x = xp.asarray((rng.standard_normal(n) * 3).astype(np.float32))
        g = xp.asarray(rng.standard_normal(n).astype(np.float32))
        y = gpugrad.OPS[declared.name].forward(xp, x, **forward_params)
        saved = {"x": x, "y": y, "mask": kernels.pack_mask(xp, x > 0)}[saved_kind]
        dst = xp.empty_like(x)

    def run(on):
        if on == kernels.enabled():  # the op as a backward pass calls it: no switch per call
            return functools.partial(op.forward, xp, g, saved, **params)

        def call():
            with kernels.fused(on):
                return op.forward(xp, g, saved, **params)
        return call

    # repeat_times runs every case inside the device's context
    cases = {"gpugrad": run(True), "copy": lambda: xp.copyto(dst, x)}
    if xp is not np:  # a device with fused kernels (CUDA, or the strict device's stand-ins)
        cases["unfused"] = run(False)
    torch = torch_or_none()
    # PyTorch shares NumPy's and CuPy's arrays through DLPack; the strict device's it cannot
    if torch is not None and (xp is np or (be.is_cuda and torch.cuda.is_available())):
        tg, tx, ty = (torch.from_dlpack(a) for a in (g, x, y))
        torch_fn = TORCH_BACKWARDS.get(base)
        if torch_fn is not None:
            aten = torch.ops.aten
            cases["torch"] = lambda: torch_fn(aten, tg, tx, ty)
        else:
            _, torch_vjp = torch.func.vjp(getattr(torch.nn.functional, declared.name), tx)
            cases["torch"] = lambda: torch_vjp(tg)
    moved = g.nbytes + saved.nbytes + g.nbytes  # read g and the saved array, write dx, once each
    return cases, moved, 2 * x.nbytes


def kernels_suite(device, quick=True, progress=None):
    """Rows for every activation backward and size: time, GB/s, % of copy, ratios."""
    be = backend.get(device)
    if not be.is_cuda:
        sizes = [2**16, 2**20] if quick else [2**16, 2**18, 2**20, 2**22]
    else:
        sizes = [2**16, 2**20, 2**24] if quick else [2**16, 2**18, 2**20, 2**22, 2**24, 2**26]
    rows = []
    work = [(a, n) for a in [*activation_backwards(), *FROM_OUTPUT] for n in sizes]
    for i, (activation, n) in enumerate(work):
        cases, moved, copy_bytes = kernel_cases(activation, n, device)
        timings = {impl: timing(fn, device) for impl, fn in cases.items()}
        t = {impl: tm.median for impl, tm in timings.items()}
        copy_ok = timings["copy"].stable
        copy_gbs = copy_bytes / t["copy"] / 1e9
        for impl in ("gpugrad", "unfused", "torch"):
            if impl not in t:
                continue
            ok = timings[impl].stable
            gbs = moved / t[impl] / 1e9
            row = {
                "suite": "kernels", "activation": activation, "n": n, "impl": impl,
                "median_us": t[impl] * 1e6, "GB/s": gbs, "copy GB/s": copy_gbs,
                "% of copy": 100 * gbs / copy_gbs if ok and copy_ok else None,
                "gpugrad time / this": (t["gpugrad"] / t[impl]) if impl != "gpugrad" and ok
                and timings["gpugrad"].stable else None,
            }
            note = timings[impl].note() or (None if copy_ok else "copy " + timings["copy"].note())
            if note:
                row["note"] = note
            rows.append(row)
        if progress:
            progress(i + 1, len(work), f"{activation} n={n}")
    return rows


SUITES = {"kernels": kernels_suite}


def format_table(rows):
    """A fixed-width table of the rows (every key a column)."""
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(k for r in rows for k in r if k != "suite"))

    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)
    table = [cols] + [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in table)


# ---------------------------------------------------------------------------- mlp suite

MLP_MODELS = {"4.7 (784-256-10)": [784, 256, 10], "deep (784-1024x3-10)": [784, 1024, 1024, 1024, 10]}


def mlp_step_cases(sizes, batch, device, lam=1e-3, lr=0.01):
    """{impl: step()} for one SGD training step (forward, cross-entropy + L2, backward, update)
    of the same bias-free MLP on the same data, in gpugrad and (when installed) PyTorch."""
    from gpugrad import nn, optim
    from gpugrad.nn import functional as F

    be = backend.get(device)
    rng = np.random.default_rng(batch)
    x_host = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y_host = rng.integers(0, sizes[-1], batch)
    backend.seed(0)
    model = nn.MLP(sizes, bias=False, device=device)
    opt = optim.SGD(model.parameters(), lr=lr)
    with be.active:
        x, y = gpugrad.tensor(x_host, device=device), be.asarray(y_host)
    params = model.parameters()

    def step_with(labels):
        def step():
            with gpugrad.autograd.record():
                loss = F.cross_entropy(model(x), labels) + lam * F.l2_penalty(params)
            loss.backward()
            opt.step()
        return step

    ours = step_with(y)
    cases = {"gpugrad": ours}
    if not be.is_cpu:  # labels as a data loader gives them, host data: checked on the host
        # before they move, where labels on the device are read back to be checked (a sync)
        cases["gpugrad host labels"] = step_with(y_host)
    if be.is_cuda:  # the same step captured once and replayed (on the CPU it would run eagerly)
        cases["gpugrad captured"] = gpugrad.cuda.graph(ours, device=device)
    # the step's matrix products alone (each layer's forward and weight gradient, and the
    # gradient of every layer's input but the data's, which neither step computes), in the
    # array library and in PyTorch: the gap between them is the floor under gpugrad / torch
    weights_host = [p.numpy() for p in params]
    acts_host = [rng.standard_normal((batch, n)).astype(np.float32) for n in sizes]
    with be.active:
        weights, acts = ([be.xp.asarray(a) for a in arrays] for arrays in (weights_host, acts_host))

    def products(xp_matmul, ws, hs):
        def run():
            for i, (w, h_in, h_out) in enumerate(zip(ws, hs[:-1], hs[1:])):
                xp_matmul(h_in, w.T)   # forward
                if i:
                    xp_matmul(h_out, w)    # gradient of the layer's input
                xp_matmul(h_out.T, h_in)  # gradient of the weight
        return run
    cases[f"{array_library(device)} matmuls"] = products(be.xp.matmul, weights, acts)
    torch = torch_or_none()
    if torch is not None and (not be.is_cuda or torch.cuda.is_available()):
        dev = "cpu" if not be.is_cuda else "cuda"
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(torch.nn.Linear(a, b, bias=False))
            if i < len(sizes) - 2:
                layers.append(torch.nn.ReLU())
        tmodel = torch.nn.Sequential(*layers).to(dev)
        with torch.no_grad():  # the same weights
            for p, tp in zip(params, tmodel.parameters()):
                tp.copy_(torch.from_numpy(p.numpy()))
        topt = torch.optim.SGD(tmodel.parameters(), lr=lr)
        tx, ty = torch.from_numpy(x_host).to(dev), torch.from_numpy(y_host).to(dev)
        cases["torch matmuls"] = products(
            torch.matmul, *([torch.from_numpy(a).to(dev) for a in arrays]
                            for arrays in (weights_host, acts_host)))

        def theirs():
            topt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(tmodel(tx), ty) + lam / 2 * sum(
                (p * p).sum() for p in tmodel.parameters())
            loss.backward()
            topt.step()
        cases["torch"] = theirs
        if be.is_cuda:
            cases["torch graph"] = _torch_graph(torch, theirs, topt)
    if be.is_cuda:  # the floor: the same step by hand on CuPy arrays, captured
        with be.active:
            floor_weights = [be.xp.asarray(w) for w in weights_host]
            floor_x, floor_y = be.xp.asarray(x_host), be.xp.asarray(y_host)
        cases["hand-written captured"] = gpugrad.cuda.graph(
            hand_written_step(floor_weights, floor_x, floor_y, lam, lr), device=device)
        jax_step = _jax_step(weights_host, x_host, y_host, lam, lr)
        if jax_step is not None:
            cases["jax jit"] = jax_step
    return cases


def hand_written_step(weights, x, y, lam, lr):
    """The same SGD step written by hand on raw arrays of one device (no autograd, no Tensor):
    the floor under a step built from the same array library and gpugrad's capturable matmul
    (backend.matmul), which gg.cuda.graph can capture on CUDA. Updates `weights` (arrays,
    (out, in) each) in place and returns the loss (cross-entropy + lam/2 |W|^2, before the
    update); x (N, d) and integer labels y (N,) stay fixed."""
    be = backend.get(backend.device_of_array(x))
    xp, n = be.xp, x.shape[0]
    with be.active:
        rows = xp.arange(n)

    def step():
        with be.active:
            hs, h = [x], x
            for i, w in enumerate(weights):
                z = backend.matmul(xp, h, w.T)
                if i < len(weights) - 1:
                    h = xp.maximum(z, 0)
                    hs.append(h)
            shifted = z - z.max(axis=1, keepdims=True)
            p = xp.exp(shifted)
            total = p.sum(axis=1, keepdims=True)
            loss = (xp.log(total[:, 0]) - shifted[rows, y]).mean()
            loss += backend.sum_of_squares(xp, weights, lam / 2)
            p /= total
            p[rows, y] -= 1
            dz = p
            dz /= n  # d mean(cross-entropy) / d logits
            for i in range(len(weights) - 1, -1, -1):
                w = weights[i]
                grad_w = backend.matmul(xp, dz.T, hs[i])
                if i:
                    dz = backend.matmul(xp, dz, w)
                    dz *= hs[i] > 0
                grad_w += lam * w  # the L2 term's gradient
                w -= lr * grad_w
        return loss
    return step


def _torch_graph(torch, step, opt):
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


def kernels_per_step(case):
    """Work items (kernels, memsets, copies) one replay of a captured step launches: a
    gg.cuda.graph step, or a PyTorch graph from _torch_graph; None where there is no graph."""
    from gpugrad import cuda

    if isinstance(case, cuda.GraphedStep):
        nodes = case.nodes() if case.captured else None
    else:
        try:
            nodes = cuda.graph_nodes(case.cuda_graph.raw_cuda_graph())
        except (AttributeError, RuntimeError):  # an older PyTorch, or a graph not kept
            nodes = None
    return None if nodes is None else sum(nodes.get(k, 0) for k in ("kernel", "memset", "memcpy"))


def _jax_step(weights_host, x_host, y_host, lam, lr):
    """The same step in JAX, jit-compiled, its matmuls at full float32 precision (JAX's default
    on a GPU is TF32); each call waits for its result, as CUDA events cannot see JAX's stream.
    None when JAX or its GPU backend is missing."""
    import os

    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave CuPy its memory
    try:
        import jax
        import jax.numpy as jnp
        gpu = jax.devices("gpu")[0]
    except Exception:  # noqa: BLE001 - not installed, or no GPU backend: no row
        return None

    def loss_fn(ws, x, y):
        h = x
        for i, w in enumerate(ws):
            h = jnp.matmul(h, w.T, precision="highest")
            if i < len(ws) - 1:
                h = jax.nn.relu(h)
        logp = jax.nn.log_softmax(h, axis=1)
        xent = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
        return xent + lam / 2 * sum(jnp.sum(w * w) for w in ws)

    @functools.partial(jax.jit, donate_argnums=0)
    def update(ws, x, y):
        grads = jax.grad(loss_fn)(ws, x, y)
        return [w - lr * g for w, g in zip(ws, grads)]

    state = [jax.device_put(w, gpu) for w in weights_host]
    x, y = jax.device_put(x_host, gpu), jax.device_put(y_host.astype(np.int32), gpu)

    def step():
        state[:] = update(state, x, y)
        state[0].block_until_ready()
    return step


def _unstable_note(impl, unstable):
    return {"note": f"unstable: blocks differ by more than {UNSTABLE_FACTOR:g}x, or a block's "
                    f"median by as much from its fastest repeat; no ratio"} if impl in unstable else {}


def ops_per_step(step):
    """How many ops (registry.apply calls: each one or more array-library calls on the device)
    one call of step() runs, forward, backward and update together."""
    from gpugrad.ops import registry

    count = 0
    real = registry.apply

    def counting(op, inputs, params):
        nonlocal count
        count += 1
        return real(op, inputs, params)

    registry.apply = counting  # the op functions look apply up at call time
    try:
        step()
    finally:
        registry.apply = real
    return count


_TORCH_COUNTERPART = {"gpugrad captured": "torch graph"}


def device_calls_per_step(step):
    """{call name: count} of the calls one step() makes into the strict test device's array
    library (functions, array methods, indexing, fused kernels): on CuPy each is at most one
    kernel launch, a view none, so it bounds a GPU step's kernels from the CPU."""
    from gpugrad import strict

    before = collections.Counter(strict.calls)
    step()
    return strict.calls - before


def device_calls_per_captured_step(step, device):
    """device_calls_per_step of step under gg.cuda.graph on the strict test device, where the
    capture is emulated: its replay runs the step under the capture's rules (matmuls through
    the capturable gemm), so this counts what a captured step calls (gemms not included)."""
    graphed = gpugrad.cuda.graph(step, device=device)
    graphed()  # the eager pass and the capture
    return device_calls_per_step(graphed)


MLP_BATCHES = {True: [32, 1024], False: [32, 128, 512, 1024, 4096]}  # quick, full


def mlp_suite(device, quick=True, progress=None, batches=None):
    """Step time, samples/s and gpugrad/torch for the section 4.7 and the deep MLP, at
    `batches` (default: MLP_BATCHES[quick])."""
    batches = MLP_BATCHES[quick] if batches is None else list(batches)
    rows = []
    work = [(name, b) for name in MLP_MODELS for b in batches]
    for i, (name, batch) in enumerate(work):
        cases = mlp_step_cases(MLP_MODELS[name], batch, device)
        ops = ops_per_step(cases["gpugrad"])
        strict = backend.get(device).name == "strict"
        calls = sum(device_calls_per_step(cases["gpugrad"]).values()) if strict else None
        captured_calls = (sum(device_calls_per_captured_step(cases["gpugrad"], device).values())
                          if strict else None)
        be_cuda = backend.get(device).is_cuda
        times, unstable = alternating_blocks(cases, device, blocks=3 if quick else 5)
        # on CUDA, what one replay of each captured step launches, counted in its graph
        launches = {impl: kernels_per_step(cases[impl])
                    for impl in ("gpugrad captured", "torch graph") if impl in cases}
        for impl, secs in times.items():
            secs = statistics.median(secs)
            # each gpugrad row against its PyTorch counterpart: products with products, the
            # captured step with PyTorch's CUDA graph, the eager step with the eager step
            base = ("torch matmuls" if impl.endswith(" matmuls")
                    else _TORCH_COUNTERPART.get(impl, "torch"))
            rows.append({"suite": "mlp", "model": name, "batch": batch, "impl": impl,
                         "median ms": secs * 1e3, "samples/s": batch / secs,
                         "ops per step": ops if impl == "gpugrad" else None,
                         **({"device calls per step": calls if impl == "gpugrad" else None,
                             "device calls per captured step":
                                 captured_calls if impl == "gpugrad" else None}
                            if calls is not None else {}),
                         **({"kernels per step": launches.get(impl)} if be_cuda else {}),
                         "gpugrad / torch": median_ratio(times, impl, base, unstable)
                         if not impl.startswith(("torch", "jax", "hand")) and base in times else None,
                         **({"captured / hand-written": median_ratio(
                             times, impl, "hand-written captured", unstable)
                             if impl == "gpugrad captured" else None}
                            if "hand-written captured" in times else {}),
                         **_unstable_note(impl, unstable)})
        if progress:
            progress(i + 1, len(work), f"{name} batch {batch}")
    return rows


SUITES["mlp"] = mlp_suite


# ---------------------------------------------------------------------------- memory suite


def memory_suite(device, quick=True, progress=None):
    """Section 4.7's network: saved activations formula vs measured, and train vs predict peak."""
    from gpugrad import experiments

    batches = [64, 1024] if quick else [1, 64, 256, 1024, 4096]
    rows = []
    for i, r in enumerate(experiments.experiment(784, 256, 10, batches, device=device)):
        rows.append({"suite": "memory", "batch": r["batch"], "saved (formula)": r["saved (formula)"],
                     "saved (measured)": r["saved (measured)"], "predict peak": r["predict peak"],
                     "train peak": r["train peak"], "train / predict": r["train/predict peak"]})
        if progress:
            progress(i + 1, len(batches), f"memory batch {r['batch']}")
    return rows


# ---------------------------------------------------------------------------- jacobian suite


def jacobian_cases(m, n, device):
    """{impl: fn()} computing the Jacobian of f(x) = tanh(W x), W of shape (m, n), with
    gg.jacobian in both modes and (on the CPU, when installed) torch.func.jacrev/jacfwd."""
    rng = np.random.default_rng(m * n)
    w_host = rng.standard_normal((m, n)).astype(np.float32)
    x_host = rng.standard_normal(n).astype(np.float32)
    w, x = gpugrad.tensor(w_host, device=device), gpugrad.tensor(x_host, device=device)

    def f(v):
        return gpugrad.tanh(gpugrad.matmul(w, v))
    cases = {"gpugrad rev": lambda: gpugrad.jacobian(f, mode="rev")(x),
             "gpugrad fwd": lambda: gpugrad.jacobian(f, mode="fwd")(x)}
    torch = torch_or_none()
    if torch is not None and not backend.get(device).is_cuda:
        tw, tx = torch.from_numpy(w_host), torch.from_numpy(x_host)
        cases["torch jacrev"] = lambda: torch.func.jacrev(lambda v: torch.tanh(tw @ v))(tx)
        cases["torch jacfwd"] = lambda: torch.func.jacfwd(lambda v: torch.tanh(tw @ v))(tx)
    return cases


def jacobian_suite(device, quick=True, progress=None):
    """gg.jacobian in reverse and forward mode beside torch.func.jacrev/jacfwd, for
    f(x) = tanh(W x) with W of shape (m, n): reverse mode costs m vjps, forward mode n jvps."""
    shapes = [(8, 64), (64, 8)] if quick else [(8, 64), (64, 8), (64, 64), (256, 16)]
    rows = []
    for i, (m, n) in enumerate(shapes):
        cases = jacobian_cases(m, n, device)
        timings = {k: timing(fn, device, warmup=2, min_repeats=7) for k, fn in cases.items()}
        for impl, tm in timings.items():
            mode = impl.split()[-1][-3:]
            base = next((timings[k] for k in timings
                         if k.startswith("torch") and k.endswith(mode)), None)
            ratio_ok = base is not None and impl.startswith("gpugrad") and tm.stable and base.stable
            row = {"suite": "jacobian", "shape (m, n)": f"({m}, {n})", "impl": impl,
                   "median ms": tm.median * 1e3,
                   "gpugrad / torch": tm.median / base.median if ratio_ok else None}
            if tm.note():
                row["note"] = tm.note()
            rows.append(row)
        if progress:
            progress(i + 1, len(shapes), f"jacobian {m}x{n}")
    return rows


# ---------------------------------------------------------------------------- overhead suite


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

    be = backend.get(device)
    raw = x.data

    def array_calls():  # the array library's own per-call cost: the floor under every op
        with be.active:
            chain(raw, be.xp.tanh)

    cases = {("gpugrad", "no grad"): plain, ("gpugrad", "record"): record,
             ("gpugrad", "record + backward"): backward,
             (array_library(device), "no grad"): array_calls}
    torch = torch_or_none()
    if torch is not None and (not be.is_cuda or torch.cuda.is_available()):
        tx = torch.tensor(x_host, device="cpu" if not be.is_cuda else "cuda", requires_grad=True)

        def t_plain():
            with torch.no_grad():
                chain(tx, torch.tanh)

        def t_backward():
            chain(tx, torch.tanh).sum().backward()

        cases.update({("torch", "no grad"): t_plain, ("torch", "record"): lambda: chain(tx, torch.tanh),
                      ("torch", "record + backward"): t_backward})
    return cases


def array_library(device):
    """The name of the device's array library, as the overhead suite labels its row."""
    be = backend.get(device)
    return "numpy" if be.xp is np else "cupy" if be.is_cuda else f"{be.name} xp"


def overhead_suite(device, quick=True, progress=None):
    """Microseconds per op of the framework itself: a chain of tanh on 16 elements, beside the
    array library's own call (the floor) and PyTorch's."""
    n_ops = 100
    cases = overhead_cases(n_ops, device)
    times, unstable = alternating_blocks(cases, device, blocks=3 if quick else 5, min_seconds=0.1)
    floor = statistics.median(times[(array_library(device), "no grad")]) / n_ops * 1e6
    rows = []
    for (impl, mode), secs in times.items():
        base = ("torch", mode)
        us = statistics.median(secs) / n_ops * 1e6
        rows.append({"suite": "overhead", "mode": mode, "impl": impl, "us per op": us,
                     "us over the array call": us - floor if impl == "gpugrad" else None,
                     "gpugrad / torch": median_ratio(times, (impl, mode), base, unstable)
                     if impl == "gpugrad" and base in times else None,
                     **_unstable_note((impl, mode), unstable)})
    if progress:
        progress(1, 1, "overhead")
    return rows


SUITES["memory"] = memory_suite
SUITES["jacobian"] = jacobian_suite
SUITES["overhead"] = overhead_suite
