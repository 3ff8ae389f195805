"""`gpugrad selftest`: is this install right on this device? The bundled tests run on the device
(GPUGRAD_DEVICE), the kernels are compiled, a short benchmark runs, and one screen says PASS,
FAIL (exit status 1) or INCOMPLETE (2: the tests could not run). Progress goes to stderr as the
tests run (a line per test file), so stdout is the verdict's screen alone. With --json the
whole record (failures by name, figures, versions) is written to a file, so one command on a
machine with a GPU gives the whole sweep.
"""

import collections
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

from gpugrad import devices

_PACKAGE = pathlib.Path(__file__).resolve().parent.parent  # gpugrad/
# the file the pytest subprocess reports its progress into (set for that process only)
PROGRESS_ENV = "GPUGRAD_SELFTEST_PROGRESS"


def tests_dir():
    """The bundled tests: inside the installed package (the wheel maps tests/ to gpugrad/_tests),
    else the source tree's tests/."""
    for d in (_PACKAGE / "_tests", _PACKAGE.parent / "tests"):
        if (d / "conftest.py").is_file():
            return d
    return None


def _tests_cannot_run():
    """Why the bundled tests cannot run here, or None when they can."""
    if tests_dir() is None:
        return "the bundled tests were not found"
    try:
        import pytest  # noqa: F401
    except ImportError:
        return "pytest is not installed: pip install 'gpugrad[test]'"
    return None


def _say(text):
    """Progress, on stderr: stdout keeps the one-screen verdict alone."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class _Progress:
    """Shows the pytest subprocess's progress lines: one line per finished test file into a
    log or a pipe, one line redrawn in place on a terminal."""

    def __init__(self, path, device):
        self.path, self.device, self.offset = path, device, 0
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()
        self.drawn = False

    def poll(self):
        try:
            with open(self.path) as fh:
                fh.seek(self.offset)
                text = fh.read()
        except FileNotFoundError:
            return
        complete = text[:text.rfind("\n") + 1]  # a line still being written waits
        self.offset += len(complete)
        for line in complete.splitlines():
            self._show(json.loads(line))

    def _show(self, event):
        seconds = time.perf_counter() - self.start
        if event["event"] == "collected":
            self._line(f"selftest: running {event['tests']} tests in {event['files']} files on "
                       f"{self.device}", final=True)
        elif event["event"] == "file done":
            status = (f"{event['done']}/{event['total']} tests, {event['failed']} failed, "
                      f"{seconds:.0f} s")
            self._line(f"selftest: {status} ({event['file']} done)", final=not self.tty)

    def _line(self, text, final):
        if self.tty:  # no wider than the terminal: a wrapped line cannot be redrawn with \r
            width = shutil.get_terminal_size().columns - 1
            sys.stderr.write("\r" + text[:width].ljust(width) + ("\n" if final else ""))
            sys.stderr.flush()
            self.drawn = not final
        else:
            _say(text)

    def close(self):
        if self.drawn:  # leave the terminal's last line clean for the verdict
            sys.stderr.write("\r" + " " * (shutil.get_terminal_size().columns - 1) + "\r")
            sys.stderr.flush()


def run_tests(device, progress=True, slow=True):
    """Run pytest on the bundled tests with `device` as the default device, in a subprocess,
    showing its progress on stderr; without `slow`, the end-to-end tests marked slow stay out."""
    why = _tests_cannot_run()
    if why:
        return {"status": "not run", "why": why}
    d = tests_dir()
    with tempfile.TemporaryDirectory() as tmp:
        report = pathlib.Path(tmp) / "junit.xml"
        events = pathlib.Path(tmp) / "progress.jsonl"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-p", "gpugrad.app.selftest", str(d), f"--junitxml={report}", "-o", "addopts=",
               "--rootdir", str(d)] + ([] if slow else ["-m", "not slow"])
        env = dict(os.environ, GPUGRAD_DEVICE=device, **{PROGRESS_ENV: str(events)})
        shown = _Progress(events, device) if progress else None
        if shown:
            _say(f"selftest: collecting the bundled tests ({d})")
        start = time.perf_counter()
        with open(pathlib.Path(tmp) / "pytest.log", "w+") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
            try:
                while proc.poll() is None:
                    time.sleep(0.5)
                    if shown:
                        shown.poll()
            finally:
                if proc.poll() is None:  # interrupted: do not leave pytest running
                    proc.kill()
                    proc.wait()
                if shown:
                    shown.poll()
                    shown.close()
            seconds = time.perf_counter() - start
            log.seek(0)
            output = log.read()
        if not report.is_file():
            return {"status": "error", "why": output[-2000:]}
        return _junit_summary(report, seconds, proc.returncode)


# ---------------------------------------------------------------------------- pytest plugin
# Loaded into the pytest subprocess (-p gpugrad.app.selftest); it writes one JSON line per event to
# the file PROGRESS_ENV names, and does nothing where that is not set.
_plugin = {"left": collections.Counter(), "done": 0, "total": 0, "failed": set()}


def _report(**event):
    path = os.environ.get(PROGRESS_ENV)
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(event) + "\n")


def pytest_collection_finish(session):
    files = collections.Counter(item.nodeid.split("::")[0] for item in session.items)
    _plugin.update(left=files, done=0, total=len(session.items), failed=set())
    _report(event="collected", tests=len(session.items), files=len(files))


def pytest_runtest_logreport(report):
    if report.failed:
        _plugin["failed"].add(report.nodeid)


def pytest_runtest_logfinish(nodeid, location):
    file = nodeid.split("::")[0]
    _plugin["done"] += 1
    _plugin["left"][file] -= 1
    if _plugin["left"][file] <= 0:
        _report(event="file done", file=pathlib.PurePath(file).name, done=_plugin["done"],
                total=_plugin["total"], failed=len(_plugin["failed"]))


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
    from gpugrad.devices.cuda import kernels

    be = devices.get(device)
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
    from gpugrad.app.bench import suites, table

    rows = []
    for suite in ("mlp", "overhead"):
        rows += suites.SUITES[suite](device, quick=True)
    return {"status": "done", "rows": rows, "table": table.format_table(rows)}


def run(device, bench=True, progress=True, slow=True):
    """Everything, as a dict; 'verdict' is PASS, FAIL or INCOMPLETE. When the tests cannot run,
    the benchmark is skipped: the verdict is INCOMPLETE whatever it would time."""
    from gpugrad.app.bench import environment

    result = {"device": device, "environment": environment.environment(device)}
    result["tests"] = run_tests(device, progress=progress, slow=slow)
    if progress:
        _say("selftest: compiling the kernels")
    result["kernels"] = check_kernels(device)
    if not bench:
        result["benchmark"] = {"status": "not run", "why": "--no-bench"}
    elif result["tests"]["status"] == "not run":
        result["benchmark"] = {"status": "not run", "why": "the tests could not run"}
    else:
        if progress:
            _say("selftest: the short benchmark")
        result["benchmark"] = short_benchmark(device)
    result["verdict"] = _verdict(result)
    return result


def _verdict(result):
    statuses = [result["tests"]["status"], result["kernels"]["status"]]
    if "fail" in statuses or "error" in statuses:
        return "FAIL"
    return "PASS" if result["tests"]["status"] == "pass" else "INCOMPLETE"


def _unusable_device(device, why):
    """The result for a device that cannot be used here: nothing ran, INCOMPLETE."""
    import platform

    import gpugrad

    not_run = {"status": "not run", "why": str(why)}
    return {"device": device,
            "environment": {"device": device, "gpugrad": gpugrad.__version__,
                            "python": platform.python_version()},
            "tests": not_run, "kernels": {"status": "not run", "why": "the device is unusable"},
            "benchmark": {"status": "not run", "why": "the device is unusable"},
            "verdict": "INCOMPLETE"}


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
    elif b["why"] != "--no-bench":
        lines.append(f"benchmark  NOT RUN: {b['why']}")
    lines.append(f"verdict    {result['verdict']}")
    return "\n".join(lines)


def main(args):
    """Exit status 0 for PASS, 1 for FAIL (something ran and was wrong), 2 for INCOMPLETE (the
    tests could not run: no pytest, or a device that is unusable here)."""
    device = devices.canonical_device(args.device) if args.device else devices.default_device()
    try:
        devices.get(device)
    except devices.DeviceError as e:  # could not run, not a failure of gpugrad: INCOMPLETE
        result = _unusable_device(device, e)
    else:
        result = run(device, bench=not args.no_bench, slow=not args.no_slow)
    print(format_verdict(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2, default=str)
        print(f"wrote {args.json}")
    return {"PASS": 0, "FAIL": 1, "INCOMPLETE": 2}[result["verdict"]]
