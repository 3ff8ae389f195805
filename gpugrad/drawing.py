"""See the graph: gg.graph_of(tensor) describes the recorded computation behind a tensor (ops,
shapes, dtypes, devices, bytes saved for backward, the line that recorded each op), writes it as
Graphviz DOT text (no dependency) or, with Graphviz's `dot` program, as SVG/PNG/PDF, and prints
the forward and backward equations of the chain of ops it recorded.

The saved bytes come from the memory ledger (gpugrad/memory/ledger.py): each buffer counts once, under
the first op in backward order that keeps it, so the nodes' bytes add up to
gg.memory.saved(...).activations.
"""

import collections
import pathlib
import shutil
import subprocess

from gpugrad import recording
from gpugrad import memory
from gpugrad import tensors
from gpugrad.engine import backward
from gpugrad.ops import activation

GraphNode = collections.namedtuple(
    "GraphNode", "id name op shape dtype device saved_bytes saved line inputs")
GraphNode.__doc__ = """One recorded op. name: its symbol in the equations (z1, h1, ..., J for
the output); saved: (what, shape, dtype, bytes, is_parameter) per buffer counted here; line: the
user's line that recorded it, when recorded inside gg.autograd.note_lines() or detect_anomaly();
inputs: per input of the op, the id of the node or leaf it came from, a Python scalar, or None
(an optional input left out)."""
GraphLeaf = collections.namedtuple("GraphLeaf", "id name kind shape dtype device")
GraphLeaf.__doc__ = """A tensor the graph starts from: kind 'parameter' (it receives a gradient)
or 'input' (data, labels: no gradient)."""

# symbols of the equations, by op: z = pre-activation, h = activation, l = per-row loss, ...
_SYMBOL = {"linear": "z", "matmul": "z", "softmax_cross_entropy": "l", "mean": "L", "sum": "S",
           "half_sum_squares": "s"}
_ACTIVATIONS = frozenset(activation.ACTIVATIONS)


class Graph:
    """The recorded graph behind one or more tensors: .nodes (in forward order), .leaves,
    .edges ((from id, to id, input name)), .outputs (ids)."""

    def __init__(self, nodes, leaves, edges, outputs):
        self.nodes, self.leaves, self.edges, self.outputs = nodes, leaves, edges, outputs
        self._by_id = {n.id: n for n in nodes}
        self._by_id.update((leaf.id, leaf) for leaf in leaves)

    @property
    def saved_bytes(self):
        """Bytes of activations the graph keeps for backward (parameters not counted)."""
        return sum(n.saved_bytes for n in self.nodes)

    def __repr__(self):
        return (f"<Graph: {len(self.nodes)} ops, {len(self.leaves)} leaves, {len(self.edges)} "
                f"edges, {self.saved_bytes:,} bytes saved>")

    def to_dot(self, title=None):
        """Graphviz DOT text: leaves as ellipses (parameters) and boxes (inputs), ops as boxes
        with their output shape, dtype and saved bytes, edges labelled with the input name."""
        lines = ["digraph gpugrad {", "  rankdir=BT;",
                 '  node [fontname="Helvetica", fontsize=10];', '  edge [fontsize=9];']
        if title:
            lines.append(f"  label={_quote(title)}; labelloc=t;")
        for leaf in self.leaves:
            shape = "ellipse" if leaf.kind == "parameter" else "box"
            fill = "#dbe9f6" if leaf.kind == "parameter" else "#eeeeee"
            label = f"{leaf.name}\\n{_shape(leaf.shape)} {leaf.dtype}"
            lines.append(f"  {leaf.id} [shape={shape}, style=filled, fillcolor={_quote(fill)}, "
                         f"label={_quote(label)}];")
        for n in self.nodes:
            label = f"{n.name} = {n.op}\\n{_shape(n.shape)} {n.dtype}"
            if n.saved_bytes:
                label += f"\\nsaves {_bytes(n.saved_bytes)}"
            peripheries = 2 if n.id in self.outputs else 1
            lines.append(f"  {n.id} [shape=box, style=rounded, peripheries={peripheries}, "
                         f"label={_quote(label)}];")
        for src, dst, what in self.edges:
            lines.append(f"  {src} -> {dst} [label={_quote(what)}];")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def render(self, path, title=None):
        """Write the graph to path: .dot/.gv as DOT text; .svg, .png or .pdf through Graphviz's
        `dot` program (the Debian/Ubuntu package graphviz, or conda's), which must be on the PATH.
        Returns the path."""
        path = pathlib.Path(path)
        text = self.to_dot(title)
        fmt = path.suffix.lstrip(".").lower()
        if fmt in ("dot", "gv"):
            path.write_text(text)
            return path
        if fmt not in ("svg", "png", "pdf"):
            raise ValueError(f"render: unknown format {path.suffix!r} (use .dot, .gv, .svg, "
                             f".png or .pdf)")
        dot = shutil.which("dot")
        if dot is None:
            raise RuntimeError(f"render: drawing {path.name} needs Graphviz's `dot` program, "
                               f"which is not on the PATH: install it (apt-get install graphviz, "
                               f"or conda install graphviz), or write DOT text with a .dot path")
        out = subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=text.encode(),
                             capture_output=True, timeout=120)
        if out.returncode:
            raise RuntimeError(f"render: dot failed: {out.stderr.decode(errors='replace')[:500]}")
        return path

    # ------------------------------------------------------------------------ equations

    def forward_equations(self):
        """One line per op, in the order they ran: `z1 = x @ W1.T + b1 : (32, 256)`."""
        return [f"{n.name} = {self._forward_expr(n)} : {_shape(n.shape)}" for n in self.nodes]

    def backward_equations(self):
        """Reverse mode, one line per gradient contribution, in the order backward computes
        them: `dJ/dh1 = dJ/dz2 @ W2 : (32, 256)`; `+=` where a tensor gets a second one."""
        lines, seen = [], set()
        for n in reversed(self.nodes):
            if n.id in self.outputs:
                lines.append(f"d{self._top}/d{n.name} = 1 : {_shape(n.shape)}")
            g = f"d{self._top}/d{n.name}"
            for i, src in enumerate(n.inputs):
                target = self._by_id.get(src) if isinstance(src, str) else None
                if target is None or (isinstance(target, GraphLeaf) and target.kind == "input"):
                    continue
                expr = self._adjoint(n, i, g)
                sign = "+=" if target.id in seen else "="
                seen.add(target.id)
                lines.append(f"d{self._top}/d{target.name} {sign} {expr} : {_shape(target.shape)}")
        return lines

    @property
    def _top(self):
        return self._by_id[self.outputs[0]].name if self.outputs else "J"

    def _arg(self, n, i):
        src = n.inputs[i]
        if isinstance(src, str):
            return self._by_id[src].name
        return _number(src)

    def _args(self, n):
        return [self._arg(n, i) for i in range(len(n.inputs)) if n.inputs[i] is not None]

    def _forward_expr(self, n):
        a = self._args(n)
        op = n.op
        if op == "linear":
            x, w = self._arg(n, 0), self._arg(n, 1)
            return f"{x} @ {w}.T" + (f" + {self._arg(n, 2)}" if n.inputs[2] is not None else "")
        if op in ("add", "subtract", "multiply", "divide", "matmul") and len(a) == 2:
            return f"{a[0]} {_INFIX[op]} {a[1]}"
        if op == "softmax_cross_entropy":
            return f"cross_entropy({a[0]}, y)"
        if op == "half_sum_squares":
            return "(" + " + ".join(f"||{w}||^2" for w in a) + ") / 2"
        return f"{op}({', '.join(a)})"

    def _adjoint(self, n, i, g):
        """The gradient n sends back to its input i, given g = dJ/d(n's output)."""
        op, a = n.op, self._arg(n, i)
        other = self._arg(n, 1 - i) if len(n.inputs) == 2 else None
        if op == "add":
            return g
        if op == "subtract":
            return g if i == 0 else f"-{g}"
        if op == "multiply":
            return f"{g} * {other}"
        if op == "divide":
            return f"{g} / {other}" if i == 0 else f"-{g} * {self._arg(n, 0)} / {a}^2"
        if op == "matmul":
            return f"{g} @ {other}.T" if i == 0 else f"{other}.T @ {g}"
        if op == "linear":
            x, w = self._arg(n, 0), self._arg(n, 1)
            return {0: f"{g} @ {w}", 1: f"{g}.T @ {x}", 2: f"sum_rows({g})"}[i]
        if op == "relu":
            return f"{g} * ({a} > 0)"
        if op in _ACTIVATIONS:
            return f"{g} * {op}'({a})"
        if op == "softmax_cross_entropy":
            return f"(softmax({a}) - onehot(y)) * {g}"
        if op == "mean":
            source = self._by_id[n.inputs[0]]
            count = 1
            for d in source.shape:
                count *= d
            return f"{g} / {count}" + (" (to every element)" if source.shape else "")
        if op == "sum":
            return f"{g} (to every element)"
        if op == "half_sum_squares":
            return f"{g} * {a}"
        return f"vjp_{op}[{i}]({g})"


_INFIX = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/", "matmul": "@"}


def graph_of(outputs, names=None):
    """The recorded graph behind `outputs` (a tensor or a list of them) as a Graph.

    names: a Module (its parameters are named as in named_parameters()) or a dict
    {name: tensor} naming parameters and inputs (an input is recognised by the array an op
    saved). Unnamed parameters are W1, W2, ... in the order the forward used them; unnamed
    inputs x1, x2, ...
    """
    roots = [t._node for t in _recorded(outputs)]
    return _GraphBuilder(roots, _names(names)).build()


def _recorded(outputs):
    """The output tensors, each checked to have a recorded graph that backward has not freed."""
    outputs = [outputs] if isinstance(outputs, tensors.Tensor) else list(outputs)
    for t in outputs:
        if not isinstance(t, tensors.Tensor):
            raise TypeError(f"graph_of: expected tensors, got {type(t).__name__}")
        if t._node is None:
            raise ValueError("graph_of: this tensor has no recorded graph: compute it inside "
                             "autograd.record() from a tensor with attach_grad()")
        if t._node.op is not None and t._node.freed:
            raise ValueError("graph_of: the graph was freed by backward; draw it before, or "
                             "pass retain_graph=True")
    return outputs


class _GraphBuilder:
    """Walks the recorded nodes in forward order, giving every op, parameter and input an id
    (n0, p1, i2, ...) and a name (z1, h1, W1, x1, ...), and collects the edges between them."""

    def __init__(self, roots, named):
        self.roots, self.named = roots, named
        self.order = list(reversed(backward._toposort(roots)))  # forward order
        params = [leaf.ref() for leaf in self.order if leaf.op is None and leaf.ref() is not None]
        self.ledger = memory.saved_by_node(roots, params)
        self.ids = {}          # id(node or parameter leaf) -> graph id
        self.input_ids = {}    # id(saved input array), or (id(node), i) -> graph id
        self.leaves, self.nodes, self.edges = [], [], []
        self.symbols = collections.Counter()  # ops named so far, per symbol
        self.unnamed = collections.Counter()  # leaves named so far, per prefix (W, x)

    def build(self):
        for node in self.order:
            if node.op is not None:
                self._add_op(node)
        out_ids = [self.ids[id(r)] for r in self.roots if id(r) in self.ids]
        if len(out_ids) == 1:  # the one output is J, as in the book's equations
            k = next(i for i, n in enumerate(self.nodes) if n.id == out_ids[0])
            self.nodes[k] = self.nodes[k]._replace(name="J")
        return Graph(self.nodes, self.leaves, self.edges, out_ids)

    def _add_op(self, node):
        nid = f"n{len(self.nodes)}"
        self.ids[id(node)] = nid
        inputs = []
        for i, parent in enumerate(node.parents):
            if parent is None and node.metas[i] is None:
                # a Python scalar (kept by the node), or an optional input left out
                inputs.append((node.saved or {}).get(i))
                continue
            src = self._source(node, i, parent)
            inputs.append(src)
            self.edges.append((src, nid, node.op.input_name(i)))
        symbol = "h" if node.op.name in _ACTIVATIONS else _SYMBOL.get(node.op.name, "v")
        self.symbols[symbol] += 1
        saved = tuple(self.ledger.get(node, ()))
        shape, dtype, device = node.out_meta
        self.nodes.append(GraphNode(
            nid, f"{symbol}{self.symbols[symbol]}", node.op.name, tuple(shape), str(dtype),
            device, sum(b for *_, b, is_param in saved if not is_param), saved,
            recording._recorded_at.get(node), tuple(inputs)))

    def _source(self, node, i, parent):
        """The graph id input i of `node` comes from: an op, a parameter or an input."""
        if parent is None:
            return self._input_leaf(node, i)
        return self._parameter_leaf(parent) if parent.op is None else self.ids[id(parent)]

    def _parameter_leaf(self, leaf):
        if id(leaf) not in self.ids:
            t = leaf.ref()
            name = self.named.get(id(t)) if t is not None else None
            if name is None:
                name = self._next_unnamed("W")
            lid = f"p{len(self.leaves)}"
            self.ids[id(leaf)] = lid
            described = (tuple(t.shape), str(t.dtype), t.device) if t is not None else ((), "?", "?")
            self.leaves.append(GraphLeaf(lid, name, "parameter", *described))
        return self.ids[id(leaf)]

    def _input_leaf(self, node, i):
        """An input (data, labels) is known by the array an op saved; unsaved, by its place."""
        arr = (node.saved or {}).get(i)
        key = id(arr) if arr is not None and hasattr(arr, "shape") else (id(node), i)
        if key not in self.input_ids:
            name = self.named.get(key) if isinstance(key, int) else None
            if name is None:
                name = self._next_unnamed("x")
            shape, dtype, device = node.metas[i]
            lid = f"i{len(self.leaves)}"
            self.input_ids[key] = lid
            self.leaves.append(GraphLeaf(lid, name, "input", tuple(shape), str(dtype), device))
        return self.input_ids[key]

    def _next_unnamed(self, prefix):
        self.unnamed[prefix] += 1
        return f"{prefix}{self.unnamed[prefix]}"


def _names(names):
    """{id(tensor) or id(its array): name}."""
    if names is None:
        return {}
    items = names.named_parameters() if hasattr(names, "named_parameters") else names.items()
    out = {}
    for name, t in items:
        if not isinstance(t, tensors.Tensor):
            raise TypeError(f"graph_of: names maps {name!r} to a {type(t).__name__}, not a Tensor")
        out[id(t)] = name
        out[id(t.data)] = name
    return out


def _shape(shape):
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _bytes(n):
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _number(v):
    return "?" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def _quote(text):
    """A DOT string; the labels' line breaks are DOT's own `\\n` escapes, kept as they are."""
    return '"' + str(text).replace('"', '\\"') + '"'
