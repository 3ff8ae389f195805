"""gg.nn, gg.optim, save/load: modules, losses, optimizers, the section 4.7 network."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn
from gpugrad.nn import functional as F
from conftest import host

torch_missing = "PyTorch is not installed (pip install torch==2.13.0)"


def test_module_registers_parameters_and_submodules():
    gg.seed(0)
    m = nn.MLP([4, 8, 3])
    names = [n for n, _ in m.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [p.shape for p in m.parameters()] == [(8, 4), (8,), (3, 8), (3,)]
    assert all(p.grad_req == "write" for p in m.parameters())
    assert "Linear(in_features=4, out_features=8, bias=True)" in repr(m) and "ReLU()" in repr(m)
    m.eval()
    assert not m.training and not m[0].training
    m.train()
    assert m[2].training


def test_linear_default_init_is_uniform_in_one_over_sqrt_fan_in():
    gg.seed(1)
    lin = nn.Linear(100, 50)
    w, b = host(lin.weight), host(lin.bias)
    assert np.abs(w).max() <= 0.1 and np.abs(b).max() <= 0.1
    assert 0.05 < w.std() < 0.07  # uniform(-0.1, 0.1) has std 0.1 / sqrt(3) = 0.0577
    assert nn.Linear(3, 2, bias=False).bias is None
    with pytest.raises(gg.ShapeError, match="input has 5 features"):
        lin(gg.ones((2, 5)))


def test_state_dict_round_trip_through_save_and_load(tmp_path):
    gg.seed(2)
    a, b = nn.MLP([3, 5, 2]), nn.MLP([3, 5, 2])
    path = tmp_path / "m.npz"
    gg.save(a.state_dict(), path)
    b.load_state_dict(gg.load(path))
    x = gg.randn(4, 3)
    np.testing.assert_array_equal(host(a(x)), host(b(x)))


def test_loading_a_corrupt_or_mismatched_file_fails_clearly(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="not a readable gpugrad state file"):
        gg.load(bad)
    m = nn.MLP([3, 5, 2])
    other = tmp_path / "other.npz"
    gg.save(nn.MLP([3, 6, 2]).state_dict(), other)
    with pytest.raises(ValueError, match=r"0.weight has shape \(6, 3\) in the state but \(5, 3\)"):
        m.load_state_dict(gg.load(other))
    with pytest.raises(KeyError, match="missing"):
        m.load_state_dict({"0.weight": np.zeros((5, 3), np.float32)})
    with pytest.raises(TypeError, match=r"obj\[1\] is of type set"):
        gg.save([1, {2}], tmp_path / "x.npz")


def test_cross_entropy_is_stable_and_checks_its_labels():
    logits = gg.tensor([[1000.0, 0.0], [0.0, 1000.0]], dtype="float64")
    assert F.cross_entropy(logits, [0, 1]).item() == 0.0
    np.testing.assert_allclose(F.cross_entropy(logits, [1, 1], reduction="none").numpy(), [1000, 0])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        F.cross_entropy(logits, [0, 2])
    with pytest.raises(TypeError, match="labels must be integers"):
        F.cross_entropy(logits, [0.0, 1.0])
    with pytest.raises(ValueError, match="2 rows"):
        F.cross_entropy(logits, [0])
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(logits, [0, 1], reduction="avg")


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_n():
    rng = np.random.default_rng(0)
    x = gg.tensor(rng.standard_normal((5, 4)), dtype="float64", requires_grad=True)
    labels = np.array([0, 3, 1, 1, 2])
    with gg.autograd.record():
        loss = F.cross_entropy(x, labels)
    loss.backward()
    p = np.exp(host(x)) / np.exp(host(x)).sum(1, keepdims=True)
    np.testing.assert_allclose(host(x.grad), (p - np.eye(4)[labels]) / 5, rtol=1e-12)
    assert gg.gradcheck(lambda t: F.cross_entropy(t, labels, reduction="sum"), [x], order=2)


def test_mse_and_l2_penalty():
    p = gg.tensor([1.0, 2.0], dtype="float64")
    assert F.mse_loss(p, [0.0, 0.0]).item() == 2.5
    with pytest.raises(gg.ShapeError, match="target has shape"):
        F.mse_loss(p, [[0.0, 0.0]])
    assert F.l2_penalty([p, gg.tensor([3.0], dtype="float64")]).item() == 7.0


def test_section_4_7_gradients_match_the_equations():
    """J = L + s, z = W1 x, h = relu(z), o = W2 h, s = lambda/2 (|W1|^2 + |W2|^2), no bias;
    dJ/dW2 = dJ/do h^T + lambda W2 (4.7.11), dJ/dW1 = dJ/dz x^T + lambda W1 (4.7.14)."""
    rng = np.random.default_rng(3)
    d, h_dim, q, lam = 6, 5, 3, 0.1
    x, y = rng.standard_normal(d), 2
    W1, W2 = rng.standard_normal((h_dim, d)), rng.standard_normal((q, h_dim))
    w1 = gg.tensor(W1, dtype="float64", requires_grad=True)
    w2 = gg.tensor(W2, dtype="float64", requires_grad=True)
    with gg.autograd.record():
        z = w1 @ gg.tensor(x, dtype="float64")
        o = w2 @ gg.relu(z)
        J = F.cross_entropy(o.reshape(1, q), [y]) + lam * F.l2_penalty([w1, w2])
    J.backward()
    # by hand, in NumPy
    z_ = W1 @ x
    h_ = np.maximum(z_, 0)
    o_ = W2 @ h_
    dJ_do = np.exp(o_) / np.exp(o_).sum() - np.eye(q)[y]
    dJ_dW2 = np.outer(dJ_do, h_) + lam * W2
    dJ_dh = W2.T @ dJ_do
    dJ_dz = dJ_dh * (z_ > 0)
    dJ_dW1 = np.outer(dJ_dz, x) + lam * W1
    np.testing.assert_allclose(host(w2.grad), dJ_dW2, rtol=1e-12)
    np.testing.assert_allclose(host(w1.grad), dJ_dW1, rtol=1e-12)


def test_clip_grad_norm_clips_to_the_norm_exactly():
    a = gg.tensor([3.0, 0.0], dtype="float64", requires_grad=True)
    b = gg.tensor([[4.0]], dtype="float64", requires_grad=True)
    a.grad, b.grad = gg.tensor([3.0, 0.0], dtype="float64"), gg.tensor([[4.0]], dtype="float64")
    assert nn.utils.clip_grad_norm([a, b], 1.0) == 5.0
    np.testing.assert_allclose(np.sqrt((host(a.grad) ** 2).sum() + (host(b.grad) ** 2).sum()), 1.0, rtol=1e-15)
    assert nn.utils.clip_grad_norm([a, b], 10.0) == pytest.approx(1.0)  # below: untouched
    np.testing.assert_allclose(host(a.grad), [0.6, 0.0])


def test_embedding_and_dropout():
    gg.seed(4)
    emb = nn.Embedding(10, 3)
    with gg.autograd.record():
        out = emb([1, 1, 7]).sum()
    out.backward()
    g = host(emb.weight.grad)
    assert g[1].tolist() == [2, 2, 2] and g[7].tolist() == [1, 1, 1] and g[0].tolist() == [0, 0, 0]
    with pytest.raises(IndexError, match=r"\[0, 10\)"):
        emb([10])
    drop = nn.Dropout(0.5)
    x = gg.ones(10000)
    assert drop(x) is x  # outside record(): prediction, the identity
    with gg.autograd.record():
        y = host(drop(x))
    assert set(np.unique(y)) == {0.0, 2.0} and 0.45 < (y == 0).mean() < 0.55
    drop.eval()
    with gg.autograd.record():
        assert drop(x) is x


def test_sgd_and_adam_follow_pytorch():
    torch = pytest.importorskip("torch", reason=torch_missing)
    rng = np.random.default_rng(5)
    w0 = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) for _ in range(5)]
    for make_ours, make_theirs in [
        (lambda p: gg.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
         lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01)),
        (lambda p: gg.optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
        (lambda p: gg.optim.Adam(p, lr=0.01, weight_decay=0.01),
         lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01)),
    ]:
        ours = gg.tensor(w0, dtype="float64", requires_grad=True)
        theirs = torch.tensor(w0, requires_grad=True)
        o, t = make_ours([ours]), make_theirs([theirs])
        for g in grads:
            ours.grad = gg.tensor(g, dtype="float64")
            theirs.grad = torch.tensor(g)
            o.step()
            t.step()
        np.testing.assert_allclose(host(ours), theirs.detach().numpy(), rtol=1e-12)


def test_optimizer_refuses_bad_input():
    with pytest.raises(ValueError, match="no parameters"):
        gg.optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="does not receive a gradient"):
        gg.optim.SGD([gg.ones(2)], lr=0.1)
    params = nn.Linear(2, 2).parameters()
    with pytest.raises(ValueError, match=r"lr must be finite and in \(0, inf\), got 0.0"):
        gg.optim.Adam(params, lr=0)
    bad = [(gg.optim.SGD, {"lr": float("nan")}, r"lr must be finite .* got nan"),
           (gg.optim.SGD, {"lr": float("inf")}, r"lr must be finite .* got inf"),
           (gg.optim.SGD, {"lr": 0.1, "momentum": -0.5}, r"momentum must be finite and in \[0, inf\)"),
           (gg.optim.SGD, {"lr": 0.1, "weight_decay": -1e-4}, r"weight_decay must be finite"),
           (gg.optim.Adam, {"betas": (1.0, 0.999)}, r"betas\[0\] must be finite and in \[0, 1\)"),
           (gg.optim.Adam, {"betas": (0.9, -0.1)}, r"betas\[1\] must be finite and in \[0, 1\)"),
           (gg.optim.Adam, {"eps": -1e-8}, r"eps must be finite"),
           (gg.optim.Adam, {"weight_decay": float("nan")}, r"weight_decay must be finite")]
    for cls, kwargs, match in bad:
        with pytest.raises(ValueError, match=match):
            cls(params, **kwargs)
    with pytest.raises(TypeError, match="lr must be a real number, got '0.1'"):
        gg.optim.SGD(params, lr="0.1")
    with pytest.raises(TypeError, match="betas must be a pair"):
        gg.optim.Adam(params, betas=0.9)


def test_mlp_and_cross_entropy_against_torch():
    torch = pytest.importorskip("torch", reason=torch_missing)
    gg.seed(6)
    m = nn.MLP([5, 7, 3], activation="tanh")
    tm = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    with torch.no_grad():
        for (_, p), tp in zip(m.named_parameters(), tm.parameters()):
            tp.copy_(torch.tensor(host(p), dtype=torch.float64))
    x = np.random.default_rng(6).standard_normal((4, 5))
    labels = np.array([0, 2, 1, 2])
    with gg.autograd.record():
        loss = F.cross_entropy(m(gg.tensor(x)), labels)
    loss.backward()
    tl = torch.nn.functional.cross_entropy(tm(torch.tensor(x)), torch.tensor(labels))
    tl.backward()
    np.testing.assert_allclose(loss.item(), tl.item(), rtol=1e-6)
    for p, tp in zip(m.parameters(), tm.parameters()):
        np.testing.assert_allclose(host(p.grad), tp.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_the_ops_per_4_7_training_step_are_counted_exactly(device):
    """Each op is at least one call into the array library (a kernel launch on a GPU, where a
    captured step's replay costs about its kernel count). ops_per_step counts every op of the
    table the step runs: the forward's, applied to Tensors, and those the backward's rules
    run on arrays; a rule's operator arithmetic (g * lam, g / n) is no op, and the L2 term's
    gradient is added into the weight's gradient from its layer (no op). So an undercount
    fails here, and so does a change that adds ops."""
    from gpugrad.app.bench import counting
    from gpugrad.app.bench.suites import mlp as mlp_suite

    def ops_of(hidden_layers):  # a bias-free MLP with this many hidden layers, any widths
        layers = hidden_layers + 1
        forward = (["linear", "relu"] * hidden_layers + ["linear"]
                   + ["softmax_cross_entropy", "mean", "half_sum_squares", "multiply", "add"])
        backward = (["broadcast_to"]  # the mean's; add and multiply by lam are arithmetic
                    + ["softmax_cross_entropy_backward"]
                    + ["transpose", "matmul", "matmul", "relu_backward_from_output"] * (layers - 1)
                    + ["transpose", "matmul"])  # the first layer's weight; the data takes none
        return len(forward) + len(backward)

    assert ops_of(1) == 16 and ops_of(3) == 28
    step = mlp_suite.mlp_step_cases([784, 256, 10], 32, device)["gpugrad"]
    assert counting.ops_per_step(step) == counting.ops_per_step(step) == ops_of(1)
    deep = mlp_suite.mlp_step_cases([784, 1024, 1024, 1024, 10], 32, device)["gpugrad"]
    assert counting.ops_per_step(deep) == ops_of(3)


def test_the_matmuls_baseline_runs_the_products_of_the_step(monkeypatch):
    """`gpugrad bench mlp`'s `numpy matmuls` row, the floor under gpugrad / torch, times the
    products gpugrad's step makes, the same shapes and as many: the gradient of the data (which
    neither step computes) is not among them."""
    from gpugrad.app.bench.suites import mlp as mlp_suite

    made = []
    matmul = np.matmul
    monkeypatch.setattr(np, "matmul", lambda a, b: made.append((a.shape, b.shape)) or matmul(a, b))
    for sizes in ([784, 256, 10], [784, 1024, 1024, 1024, 10]):
        cases = mlp_suite.mlp_step_cases(sizes, 16, "cpu")
        made.clear()
        cases["gpugrad"]()
        of_the_step = sorted(made)
        made.clear()
        cases["numpy matmuls"]()
        assert sorted(made) == of_the_step and len(of_the_step) == 3 * (len(sizes) - 1) - 1


def test_the_hand_written_floor_step_is_the_same_step(device):
    """array_baseline.hand_written_step, the floor gpugrad's captured step is timed against on
    CUDA: the same losses and weights as gpugrad's own step over three steps, graphed as the
    bench graphs it (on the strict device, under the capture's rules)."""
    from gpugrad.app.bench import array_baseline

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((7, 12)), rng.integers(0, 4, 7)
    gg.seed(0)
    model = gg.nn.MLP([12, 9, 5, 4], bias=False, device=device, dtype="float64")
    opt = gg.optim.SGD(model.parameters(), lr=0.1)
    be = gg.devices.get(device)
    with be.active:
        weights = [be.xp.asarray(p.numpy()) for p in model.parameters()]
        floor = gg.cuda.graph(array_baseline.hand_written_step(
            weights, be.xp.asarray(x), be.xp.asarray(y), 1e-3, 0.1), device=device)
    for _ in range(3):
        with gg.autograd.record():
            loss = F.cross_entropy(model(gg.tensor(x, device=device)), y) + \
                1e-3 * F.l2_penalty(model.parameters())
        loss.backward()
        opt.step()
        np.testing.assert_allclose(be.to_host(floor()), host(loss), rtol=1e-12)
    for p, w in zip(model.parameters(), weights):
        np.testing.assert_allclose(be.to_host(w), host(p), rtol=1e-12, atol=1e-15)


def test_the_device_calls_per_training_step_cannot_grow_unnoticed():
    """Calls into the device's array library (on the strict test device, which counts them;
    each at most one kernel launch on CuPy): 36 per 4.7 step and 64 per deep step today (53 and
    105 before relu's mask, dropped for the output the next layer keeps, was made again by the
    mask kernel instead of seven array calls; 47 and 87 before SGD without momentum became one
    kernel per parameter and the mean's gradient reached the cross-entropy kernel unbroadcast;
    45 and 83 before relu's backward read that output in one kernel, with no mask made again;
    42 and 74 before the L2 term's sum of squares started from its first dot product, not 0.0;
    41 and 73 before the L2 term's gradient was added into each weight's gradient in one
    kernel; 39 and 69 before the scalar loss's head gradient, ones, was kept instead of filled
    on every backward; 38 and 68 before the L2 term flattened each weight once, not twice, for
    its dot product). Lower these when a change removes calls."""
    from gpugrad.app.bench import counting
    from gpugrad.app.bench.suites import mlp as mlp_suite

    for sizes, most in (([784, 256, 10], 36), ([784, 1024, 1024, 1024, 10], 64)):
        step = mlp_suite.mlp_step_cases(sizes, 32, "strict")["gpugrad"]
        step()  # the first step also makes the optimizer's state
        calls = counting.device_calls_per_step(step)
        assert calls == counting.device_calls_per_step(step)  # the same every step
        assert sum(calls.values()) <= most, calls.most_common()
        assert calls["kernel softmax_xent_fwd"] == calls["kernel softmax_xent_bwd"] == 1
        assert calls["kernel sgd_update"] == len(sizes) - 1  # one per weight
        assert calls["kernel add_scaled"] == len(sizes) - 1  # the L2 gradient, added in
        assert not calls["ones"]  # the loss's head gradient is kept, not filled each step
        assert calls["kernel relu_bwd_out"] == len(sizes) - 2 and not calls["kernel relu_bwd_mask"]


def test_the_host_labels_step_reads_nothing_back_to_check_its_labels():
    """`gpugrad bench mlp` on a device times the step with labels on the device (read back to
    be checked: one reduction and a sync) and, as `gpugrad host labels`, with the same labels
    as host data (checked before they move); on the CPU the two are one."""
    from gpugrad.app.bench import counting
    from gpugrad.app.bench.suites import mlp as mlp_suite

    cases = mlp_suite.mlp_step_cases([784, 256, 10], 32, "strict")
    cases["gpugrad"]()  # the first step also makes the optimizer's state
    on_device = counting.device_calls_per_step(cases["gpugrad"])
    as_host_data = counting.device_calls_per_step(cases["gpugrad host labels"])
    assert on_device["max"] == 1 and as_host_data["max"] == 0, (on_device, as_host_data)
    assert "gpugrad host labels" not in mlp_suite.mlp_step_cases([8, 4, 2], 4, "cpu")


def test_the_device_calls_per_captured_step_cannot_grow_unnoticed(monkeypatch):
    """The same steps under gg.cuda.graph on the strict device (capture emulated: the replay
    runs under the capture's rules, matmuls through the capturable gemm). Today: 48 calls and
    7 gemms per 4.7 step (5 products, 2 for the L2 term's sum of squares, each added into one
    output: no add or multiply for it), 92 and 15 per deep step; the weight gradients the
    gemm path makes are added into in place (they were views of themselves, 57 and 111 calls).
    Lower these when a change removes calls."""
    from gpugrad import devices
    from gpugrad.app.bench import counting
    from gpugrad.app.bench.suites import mlp as mlp_suite
    from gpugrad.devices import strict

    be = devices.get("strict")
    gemms = []
    monkeypatch.setattr(be, "gemm", lambda *args: gemms.append(1) or strict.gemm(*args))
    for sizes, most, most_gemms in (([784, 256, 10], 48, 7),
                                    ([784, 1024, 1024, 1024, 10], 92, 15)):
        step = mlp_suite.mlp_step_cases(sizes, 32, "strict")["gpugrad"]
        calls = counting.device_calls_per_captured_step(step, "strict")
        graphed = gg.cuda.graph(step, device="strict")
        graphed()  # the eager pass and the capture
        gemms.clear()
        assert calls == counting.device_calls_per_step(graphed)  # one replay
        assert sum(calls.values()) <= most, calls.most_common()
        assert len(gemms) <= most_gemms
        assert calls["kernel add_scaled"] == len(sizes) - 1  # into the layers' gradients
        assert calls["add"] == 1 and not calls["ones"], calls  # cross-entropy + L2 alone


def test_host_labels_are_checked_on_the_host_device_labels_on_the_device():
    """Labels given as host data are range-checked before they move, so the check reads nothing
    back from the device (a GPU sync per step otherwise); device labels are read to check."""
    import collections

    from gpugrad.devices import strict

    logits = gg.tensor(np.zeros((3, 4)), device="strict")
    before = collections.Counter(strict.calls)
    nn.functional.cross_entropy(logits, np.array([0, 1, 3]))
    host_calls = strict.calls - before
    assert host_calls["min"] == host_calls["max"] == 0
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), got min 0, max 4"):
        nn.functional.cross_entropy(logits, [0, 1, 4])
    device_labels = gg.tensor(np.array([0, 1, 5]), dtype="int64", device="strict")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), got min 0, max 5"):
        nn.functional.cross_entropy(logits, device_labels)
    for dtype in ("int32", "int64"):  # a negative label is caught by the same one reduction
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), got min -1, max 2"):
            nn.functional.cross_entropy(logits, gg.tensor([0, -1, 2], dtype=dtype, device="strict"))
        before = collections.Counter(strict.calls)
        nn.functional.cross_entropy(logits, gg.tensor([0, 3, 2], dtype=dtype, device="strict"))
        device_calls = strict.calls - before
        assert device_calls["max"] == 1 and not device_calls["min"], device_calls  # one read
