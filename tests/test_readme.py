"""Every ```python block of README.md runs as written, on the default device.

Each block runs alone, in a fresh namespace and a fresh working folder, so each one is complete
the way a reader copies it. A comment on the line just before a block names what it needs
beyond the library:

    <!-- needs: cuda -->      a GPU: runs where gg.cuda.is_available(); on the strict test
                              device it runs with "strict" in place of "cuda" (the stand-in
                              that keeps CuPy's rules); elsewhere it skips with the reason
    <!-- needs: sklearn -->   an extra (sklearn, matplotlib, mpi4py, torch): skips with the
                              reason only when that package cannot be imported

A block that raises fails its test, with the traceback pointing at README's own lines.
"""

import importlib
import pathlib
import re

import pytest

import gpugrad as gg

README = pathlib.Path(__file__).parents[1] / "README.md"

# what each extra installs, for the skip reason
EXTRAS = {"sklearn": "data", "matplotlib": "plot", "mpi4py": "distributed", "torch": None}

_FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_NEEDS = re.compile(r"<!--\s*needs:\s*([\w\s,]+?)\s*-->\s*\n\s*\Z")


def readme_blocks(text):
    """(first line of the code, its needs, the code) for every ```python block, in order."""
    blocks = []
    for match in _FENCE.finditer(text):
        before = text[:match.start()]
        marker = _NEEDS.search(before)
        needs = [n.strip() for n in marker.group(1).split(",")] if marker else []
        blocks.append((before.count("\n") + 2, needs, match.group(1)))
    return blocks


def _cases():
    if not README.is_file():  # the copy of the tests inside an installed wheel (gpugrad selftest)
        return [pytest.param(None, marks=pytest.mark.skip(
            reason="README.md is not beside these tests (they run from an installed wheel)"))]
    return [pytest.param(block, id=f"line{block[0]}") for block in readme_blocks(README.read_text())]


def _prepare(needs, code):
    """The code to run here, after skipping for what this machine lacks."""
    for need in needs:
        if need == "cuda":
            if gg.cuda.is_available():
                continue
            if gg.default_device() == "strict":
                code = code.replace('"cuda"', '"strict"')
                continue
            pytest.skip(f"needs CUDA: {gg.cuda.unavailable_reason()}")
        elif need in EXTRAS:
            try:
                importlib.import_module(need)
            except ImportError:
                extra = EXTRAS[need]
                how = f"pip install 'gpugrad[{extra}]'" if extra else f"pip install {need}"
                pytest.skip(f"needs {need}: {how}")
        else:
            pytest.fail(f"README line before a python block names an unknown need {need!r}")
    return code


@pytest.mark.parametrize("block", _cases())
def test_readme_python_block_runs(block, tmp_path, monkeypatch):
    first_line, needs, code = block
    code = _prepare(needs, code)
    monkeypatch.chdir(tmp_path)  # blocks that save files write them here
    # blank lines in front, so a traceback names the block's own lines in README.md
    compiled = compile("\n" * (first_line - 1) + code, str(README), "exec")
    exec(compiled, {"__name__": "__readme__"})


def test_readme_has_python_blocks_and_every_marker_sits_on_one():
    if not README.is_file():
        pytest.skip("README.md is not beside these tests (they run from an installed wheel)")
    text = README.read_text()
    blocks = readme_blocks(text)
    assert len(blocks) >= 5
    markers = len(re.findall(r"<!--\s*needs:", text))
    assert markers == sum(1 for _, needs, _ in blocks if needs), \
        "a <!-- needs: ... --> comment must sit on the line just before a ```python block"


def test_readme_blocks_are_found_with_their_needs():
    text = ("intro\n\n```python\nx = 1\n```\n\n<!-- needs: cuda, mpi4py -->\n```python\ny = 2\n"
            "```\n\n```bash\nls\n```\n")
    assert readme_blocks(text) == [(4, [], "x = 1\n"), (9, ["cuda", "mpi4py"], "y = 2\n")]
