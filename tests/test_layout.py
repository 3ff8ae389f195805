"""The package's layout holds: the library loads none of its applications, its modules import
each other without a circle, and no module or function outgrows what one reader can hold."""

import ast
import pathlib
import subprocess
import sys

import pytest

import gpugrad

PACKAGE = pathlib.Path(gpugrad.__file__).resolve().parent
MODULE_LINES = 400
FUNCTION_LINES = 60


def _modules():
    """{dotted name: path} of the package's own modules (the shipped tests excluded)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        if "_tests" in rel.parts:
            continue
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


def _imports(name, path, known):
    """The package modules `name` imports at its top level or inside functions."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def test_import_gpugrad_loads_no_application_module():
    code = ("import sys, gpugrad as gg\n"
            "gg.tensor([1.0]).sum()\n"
            "print(sorted(m for m in sys.modules if m.startswith('gpugrad.app')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_library_module_imports_an_application():
    modules = _modules()
    for name, path in modules.items():
        if name.startswith("gpugrad.app"):
            continue
        apps = {m for m in _imports(name, path, modules) if m.startswith("gpugrad.app")}
        assert not apps, f"{name} imports {sorted(apps)}"


def test_the_modules_import_each_other_without_a_circle():
    modules = _modules()
    edges = {name: _imports(name, path, modules) for name, path in modules.items()}
    # a package's face (__init__) importing its own submodules is not a circle of the layers
    for name in edges:
        edges[name] = {m for m in edges[name] if not name.startswith(m + ".")}
    state, path = {}, []

    def visit(n):
        state[n] = "open"
        path.append(n)
        for m in sorted(edges[n]):
            if state.get(m) == "open":
                pytest.fail("import circle: " + " -> ".join(path[path.index(m):] + [m]))
            if m not in state:
                visit(m)
        path.pop()
        state[n] = "done"

    for n in sorted(edges):
        if n not in state:
            visit(n)


def test_every_module_and_function_stays_small():
    too_long = []
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > MODULE_LINES:
            too_long.append(f"module {name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > FUNCTION_LINES:
                    too_long.append(f"function {name}.{node.name}: {n} lines")
    assert not too_long, (f"over {MODULE_LINES} lines a module or {FUNCTION_LINES} a function:\n"
                          + "\n".join(too_long))
