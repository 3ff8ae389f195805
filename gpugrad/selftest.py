"""`gpugrad selftest`: is this install right on this device? The bundled tests run on the device
(GPUGRAD_DEVICE), the kernels are compiled, a short benchmark runs, and one screen says PASS or
FAIL. With --json the whole record (failures by name, figures, versions) is written to a file,
so one command on a machine with a GPU gives the whole sweep.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

from gpugrad import backend

_HERE = pathlib.Path(__file__).resolve().parent


def tests_dir():
    """The bundled tests: inside the installed package (the wheel maps tests/ to gpugrad/_tests),
    else the source tree's tests/."""
    for d in (_HERE / "_tests", _HERE.parent / "tests"):
        if (d / "conftest.py").is_file():
            return d
    return None


def run_tests(device):
    """Run pytest on the bundled tests with `device` as the default device, in a subprocess."""
    d = tests_dir()
    if d is None:
        return {"status": "not run", "why": "the bundled tests were not found"}
    try:
        import pytest  # noqa: F401
    except ImportError:
        return {"status": "not run",
                "why": "pytest is not installed: pip install 'gpugrad[test]'"}
    with tempfile.TemporaryDirectory() as tmp:
        report = pathlib.Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(d),
               f"--junitxml={report}", "-o", "addopts=", "--rootdir", str(d)]
        env = dict(os.environ, GPUGRAD_DEVICE=device)
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
        seconds = time.perf_counter() - start
        if not report.is_file():
            return {"status": "error", "why": (out.stdout + out.stderr)[-2000:]}
        return _junit_summary(report, seconds, out.returncode)


def _junit_summary(path, seconds, returncode):
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in suite.iter("testcase"):
        for kind in ("failure", "error"):
            bad = case.find(kind)
            if bad is not None:
                message = (bad.get("message") or "").splitlines()
                failed.append(f"{case.get('classname')}::{case.get('name')}: "
                              f"{message[0][:160] if message else kind}")
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    ok = returncode == 0 and not failed and passed > 0
    return {"status": "pass" if ok else "fail", "passed": passed,
            "failed": counts["failures"] + counts["errors"], "skipped": counts["skipped"],
            "seconds": round(seconds, 1), "failures": failed}


def check_kernels(device):
    """Compile every kernel source: NVRTC on a CUDA device, else nvcc -ptx when it is here."""
    from gpugrad import kernels

    be = backend.get(device)
    if be.capture == "cuda":
        with be.active:
            results = kernels.check_compiles(be.xp)
        how = "NVRTC on the device"
    else:
        report = kernels.compile_report(None, compile_now=True)
        lines = report.get("kernels compiled (nvcc -ptx sm_90)")
        if lines is None:
            return {"status": "not run", "why": "no GPU and no nvcc to compile the kernels"}
        results = {ln.split(":")[0]: (None if ln.endswith(": ok") else ln) for ln in lines}
        how = "nvcc -ptx sm_90"
    bad = {f: e for f, e in results.items() if e is not None}
    return {"status": "fail" if bad else "pass", "how": how, "files": sorted(results),
            "errors": bad}


def short_benchmark(device):
    """The 4.7 training step and the per-op overhead, quick, beside PyTorch when installed."""
    from gpugrad import benchmarks

    rows = []
    for suite in ("mlp", "overhead"):
        rows += benchmarks.SUITES[suite](device, quick=True)
    return {"status": "done", "rows": rows, "table": benchmarks.format_table(rows)}


def run(device, bench=True):
    """Everything, as a dict; 'verdict' is PASS, FAIL or INCOMPLETE."""
    from gpugrad import benchmarks

    result = {"device": device, "environment": benchmarks.environment(device)}
    result["tests"] = run_tests(device)
    result["kernels"] = check_kernels(device)
    result["benchmark"] = short_benchmark(device) if bench else {"status": "not run",
                                                                 "why": "--no-bench"}
    statuses = [result["tests"]["status"], result["kernels"]["status"]]
    if "fail" in statuses or "error" in statuses:
        result["verdict"] = "FAIL"
    elif result["tests"]["status"] != "pass":
        result["verdict"] = "INCOMPLETE"
    else:
        result["verdict"] = "PASS"
    return result


def format_verdict(result):
    """One screen."""
    env = result["environment"]
    lines = [f"gpugrad selftest on {result['device']}: "
             + ", ".join(f"{k} {v}" for k, v in env.items() if v is not None)]
    t = result["tests"]
    if t["status"] in ("pass", "fail"):
        lines.append(f"tests      {t['status'].upper():<5} {t['passed']} passed, {t['failed']} "
                     f"failed, {t['skipped']} skipped in {t['seconds']} s")
        lines += [f"           FAILED {f}" for f in t["failures"][:12]]
        if len(t["failures"]) > 12:
            lines.append(f"           ... and {len(t['failures']) - 12} more (see --json)")
    else:
        lines.append(f"tests      {t['status'].upper()}: {t['why']}")
    k = result["kernels"]
    if k["status"] in ("pass", "fail"):
        lines.append(f"kernels    {k['status'].upper():<5} {len(k['files'])} files compiled with "
                     f"{k['how']}" + "".join(f"\n           {f}: {e}" for f, e in k["errors"].items()))
    else:
        lines.append(f"kernels    {k['status'].upper()}: {k['why']}")
    b = result["benchmark"]
    if b["status"] == "done":
        lines.append("benchmark")
        lines += ["  " + ln for ln in b["table"].splitlines()]
    lines.append(f"verdict    {result['verdict']}")
    return "\n".join(lines)


def main(args):
    device = backend.canonical_device(args.device) if args.device else backend.default_device()
    backend.get(device)  # a clear error now if the device is unusable
    result = run(device, bench=not args.no_bench)
    print(format_verdict(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2, default=str)
        print(f"wrote {args.json}")
    return {"PASS": 0, "FAIL": 1, "INCOMPLETE": 2}[result["verdict"]]
