"""gg.graph_of and `gpugrad graph`: the recorded graph of section 4.7's network, its saved bytes
against the memory ledger, its DOT text, the equations of exercise 2, and the CLI's files."""

import re
import shutil
import subprocess

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.app import cli
from gpugrad.app import experiments

DOT = shutil.which("dot")


def _net(bias=False, batch=4):
    J, names, weights, _ = experiments.graph_4_7(d=6, h=5, q=3, batch=batch, bias=bias)
    return J, names, weights


def test_the_4_7_graph_has_its_ops_shapes_leaves_and_edges():
    J, names, weights = _net(batch=4)
    g = gg.graph_of(J, names)
    assert [n.op for n in g.nodes] == ["half_sum_squares", "multiply", "linear", "relu", "linear",
                                       "softmax_cross_entropy", "mean", "add"]
    assert [n.shape for n in g.nodes] == [(), (), (4, 5), (4, 5), (4, 3), (4,), (), ()]
    assert {(leaf.name, leaf.kind, leaf.shape) for leaf in g.leaves} == {
        ("W1", "parameter", (5, 6)), ("W2", "parameter", (3, 5)), ("x", "input", (4, 6))}
    by_name = {n.name: n.id for n in g.nodes} | {leaf.name: leaf.id for leaf in g.leaves}
    edges = {(s, d, w) for s, d, w in g.edges}
    assert (by_name["x"], by_name["z1"], "x") in edges and (by_name["W1"], by_name["z1"], "w") in edges
    assert (by_name["z1"], by_name["h1"], "x") in edges and (by_name["h1"], by_name["z2"], "x") in edges
    assert len(g.edges) == 12 and g.outputs == [by_name["J"]]
    assert all(n.device == "cpu" or n.device == J.device for n in g.nodes)


@pytest.mark.parametrize("batch", [1, 7])
def test_saved_bytes_are_the_memory_ledgers(batch):
    J, names, weights = _net(batch=batch)
    g = gg.graph_of(J, names)
    report = gg.memory.saved(J, weights)
    assert g.saved_bytes == report.activations > 0
    per_op = {}
    for n in g.nodes:
        per_op[n.op] = per_op.get(n.op, 0) + n.saved_bytes
    assert {k: v for k, v in per_op.items() if v} == report.by_op
    # relu keeps nothing of its own: the second linear keeps h anyway (no double save)
    assert next(n for n in g.nodes if n.op == "relu").saved_bytes == 0
    x_bytes = batch * 6 * np.dtype(J.dtype).itemsize
    assert next(n for n in g.nodes if n.name == "z1").saved_bytes == x_bytes


def test_lines_are_noted_only_when_asked():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    with gg.autograd.record():
        y = (x * x).sum()
    assert all(n.line is None for n in gg.graph_of(y).nodes)
    with gg.autograd.note_lines(), gg.autograd.record():
        y = (x * x).sum()  # the line the graph names
    lines = [n.line for n in gg.graph_of(y).nodes]
    assert all(re.search(r"test_drawing\.py:\d+ in test_lines_are_noted_only_when_asked: "
                         r"y = \(x \* x\)\.sum\(\)", line) for line in lines)


def _check_dot_structure(text):
    assert text.startswith("digraph gpugrad {") and text.rstrip().endswith("}")
    declared = set(re.findall(r"^  ([a-z]\d+) \[", text, re.M))
    edges = re.findall(r"^  ([a-z]\d+) -> ([a-z]\d+) ", text, re.M)
    assert edges and all(a in declared and b in declared for a, b in edges)
    assert text.count('"') % 2 == 0
    return declared, edges


def test_dot_text_declares_every_node_its_edges_use():
    J, names, _ = _net()
    g = gg.graph_of(J, names)
    declared, edges = _check_dot_structure(g.to_dot('a "quoted" title'))
    assert len(declared) == len(g.nodes) + len(g.leaves) and len(edges) == len(g.edges)


@pytest.mark.skipif(DOT is None, reason="Graphviz's dot program is not on the PATH "
                                         "(apt-get install graphviz)")
def test_dot_text_parses_with_graphviz(tmp_path):
    J, names, weights = _net(bias=True)
    for g in (gg.graph_of(J, names), gg.graph_of(gg.autograd.grad(J, weights, create_graph=True), names)):
        out = subprocess.run([DOT, "-Tsvg"], input=g.to_dot().encode(), capture_output=True)
        assert out.returncode == 0, out.stderr
        assert b"<svg" in out.stdout and b"W1" in out.stdout
    path = g.render(tmp_path / "g.svg")
    assert path.read_bytes().lstrip().startswith(b"<?xml")


def test_render_errors_name_what_is_missing(tmp_path, monkeypatch):
    J, names, _ = _net()
    g = gg.graph_of(J, names)
    with pytest.raises(ValueError, match=r"unknown format '.jpeg'"):
        g.render(tmp_path / "g.jpeg")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"needs Graphviz's `dot` program.*apt-get install graphviz"):
        g.render(tmp_path / "g.svg")
    assert g.render(tmp_path / "g.dot").read_text() == g.to_dot()


def test_graph_of_refuses_what_has_no_graph():
    with pytest.raises(ValueError, match="no recorded graph"):
        gg.graph_of(gg.ones(3))
    with pytest.raises(TypeError, match="expected tensors"):
        gg.graph_of([np.ones(3)])
    J, names, _ = _net()
    J.backward()
    with pytest.raises(ValueError, match="freed by backward"):
        gg.graph_of(J)
    with pytest.raises(TypeError, match="names maps 'W1' to a ndarray"):
        gg.graph_of(_net()[0], {"W1": np.ones(2)})


# Exercise 2 by hand: with a bias b1 in the hidden layer, for one example x (a row) and
# J = L + s, L = mean over the rows of l(o, y), s = lambda/2 (|W1|^2 + |W2|^2):
#   z = x W1^T + b1, h = relu(z), o = h W2^T
#   dJ/do = (softmax(o) - onehot(y)) / N,  dJ/dW2 = dJ/do^T h + lambda W2,  dJ/dh = dJ/do W2,
#   dJ/dz = dJ/dh * (z > 0),  dJ/dW1 = dJ/dz^T x + lambda W1,  dJ/db1 = dJ/dz (summed over rows).
EXERCISE_2_FORWARD = [
    "s1 = (||W1||^2 + ||W2||^2) / 2 : ()",
    "v1 = 0.001 * s1 : ()",
    "z1 = x @ W1.T + b1 : (1, 5)",
    "h1 = relu(z1) : (1, 5)",
    "z2 = h1 @ W2.T : (1, 3)",
    "l1 = cross_entropy(z2, y) : (1,)",
    "L1 = mean(l1) : ()",
    "J = L1 + v1 : ()",
]
EXERCISE_2_BACKWARD = [
    "dJ/dJ = 1 : ()",
    "dJ/dL1 = dJ/dJ : ()",
    "dJ/dv1 = dJ/dJ : ()",
    "dJ/dl1 = dJ/dL1 / 1 (to every element) : (1,)",
    "dJ/dz2 = (softmax(z2) - onehot(y)) * dJ/dl1 : (1, 3)",
    "dJ/dh1 = dJ/dz2 @ W2 : (1, 5)",
    "dJ/dW2 = dJ/dz2.T @ h1 : (3, 5)",
    "dJ/dz1 = dJ/dh1 * (z1 > 0) : (1, 5)",
    "dJ/dW1 = dJ/dz1.T @ x : (5, 6)",
    "dJ/db1 = sum_rows(dJ/dz1) : (5,)",
    "dJ/ds1 = dJ/dv1 * 0.001 : ()",
    "dJ/dW1 += dJ/ds1 * W1 : (5, 6)",
    "dJ/dW2 += dJ/ds1 * W2 : (3, 5)",
]


def test_exercise_2_equations_match_the_hand_derivation():
    J, names, weights = _net(bias=True, batch=1)
    g = gg.graph_of(J, names)
    assert g.forward_equations() == EXERCISE_2_FORWARD
    assert g.backward_equations() == EXERCISE_2_BACKWARD


def test_the_equations_compute_the_gradients_gpugrad_gives():
    """The backward equations above, evaluated with NumPy, equal gpugrad's gradients."""
    J, names, weights = _net(bias=True, batch=1)
    W1, b1, W2 = (np.asarray(w.numpy(), dtype=np.float64) for w in weights)
    x = np.asarray(names["x"].numpy(), dtype=np.float64)
    W1g, b1g, W2g = (g.numpy() for g in gg.autograd.grad(J, weights))
    rng = np.random.default_rng(0)  # graph_4_7's draws, in its order: x, then the labels
    rng.standard_normal((1, 6))
    y = rng.integers(0, 3, 1)
    z1 = x @ W1.T + b1
    h1 = np.maximum(z1, 0)
    z2 = h1 @ W2.T
    p = np.exp(z2 - z2.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dz2 = (p - np.eye(3)[y]) * 1.0  # dJ/dl1 = dJ/dL1 / 1
    dh1 = dz2 @ W2
    dz1 = dh1 * (z1 > 0)
    np.testing.assert_allclose(W2g, dz2.T @ h1 + 0.001 * W2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(W1g, dz1.T @ x + 0.001 * W1, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b1g, dz1.sum(axis=0), rtol=1e-5, atol=1e-7)


def test_the_second_order_graph_is_bigger_and_its_hvp_is_right():
    report = experiments.second_order_4_7(d=6, h=5, q=3, batch=2, dtype="float64")
    first, second = report["first"], report["second"]
    assert len(second.nodes) > len(first.nodes)
    assert {"relu_backward_from_output", "softmax_cross_entropy_backward"} <= {n.op for n in second.nodes}
    assert second.saved_bytes >= first.saved_bytes > 0
    # the timed Hessian-vector product is one: H v by central differences of the gradient
    hv = [h.numpy() for h in report["steps"]["hessian-vector product"]()]
    weights, vs, eps = report["weights"], report["v"], 1e-6
    start = [w.data.copy() for w in weights]
    sides = []
    for sign in (1, -1):
        for w, w0, v in zip(weights, start, vs):
            w.data[...] = w0 + sign * eps * v.data
        sides.append([g.numpy() for g in report["steps"]["gradient"]()])
    for w, w0 in zip(weights, start):
        w.data[...] = w0
    for h, plus, minus in zip(hv, *sides):
        np.testing.assert_allclose(h, (plus - minus) / (2 * eps), rtol=1e-5, atol=1e-7)


def test_cli_graph_writes_its_files_and_prints_the_equations(tmp_path, capsys):
    out = tmp_path / "figs"
    assert cli.main(["graph", "--bias", "--second-order", "--d", "6", "--h", "5", "--q", "3",
                     "--out", str(out), "--json", str(tmp_path / "g.json")]) == 0
    printed = capsys.readouterr().out
    for line in EXERCISE_2_FORWARD + EXERCISE_2_BACKWARD:
        assert "  " + line in printed
    assert re.search(r"graph of the gradient: +\d+ ops", printed)
    assert re.search(r"Hessian-vector product [\d.]+ ms: [\d.]+x", printed)
    files = {p.name for p in out.iterdir()}
    assert {"graph-4.7-bias.dot", "graph-4.7-bias-second-order.dot"} <= files
    assert ("graph-4.7-bias.svg" in files) == (DOT is not None)
    _check_dot_structure((out / "graph-4.7-bias.dot").read_text())
    record = __import__("json").loads((tmp_path / "g.json").read_text())
    assert record["forward"] == EXERCISE_2_FORWARD and record["second order"]["ops"] > record["ops"]
