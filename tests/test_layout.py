"""The package's layout holds: the library loads none of its applications."""

import subprocess
import sys


def test_import_gpugrad_loads_no_application_module():
    code = ("import sys, gpugrad as gg\n"
            "gg.tensor([1.0]).sum()\n"
            "print(sorted(m for m in sys.modules if m.startswith('gpugrad.app')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
