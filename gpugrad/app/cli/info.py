"""`gpugrad info`: versions, backends, devices, nvcc and the kernels."""

import json
import platform
import shutil

import numpy as np

import gpugrad
from gpugrad import devices
from gpugrad.app.cli import arguments
from gpugrad.devices.cuda import kernels


def register(subparsers):
    parser = arguments.add_command(subparsers, "info", ["device", "json"],
                                   "versions, backends, devices, nvcc (--device: check it is usable)")
    parser.add_argument("--compile", action="store_true",
                        help="without a GPU, check that every kernel compiles with nvcc")
    parser.set_defaults(func=run)


def info_report(compile_kernels=False):
    """Versions, backends and devices, as a dict (what `gpugrad info` prints)."""
    cupy_version = devices.cupy_version()
    nvcc = shutil.which("nvcc")
    cuda_ok = gpugrad.cuda.is_available()
    present = ["cpu"]
    if cuda_ok:
        cp = devices.get("cuda:0").xp
        for i in range(gpugrad.cuda.device_count()):
            props = cp.cuda.runtime.getDeviceProperties(i)
            present.append(f"cuda:{i} ({props['name'].decode()})")
    return {
        "gpugrad": gpugrad.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cupy": cupy_version or "not installed",
        "cuda available": cuda_ok,
        "cuda unavailable because": None if cuda_ok else gpugrad.cuda.unavailable_reason(),
        "devices": present,
        "default device": devices.default_device(),
        "default dtype": str(devices.get_default_dtype()),
        "nvcc": f"{nvcc}: {kernels.nvcc_version(nvcc)}" if nvcc else "not found",
        "differentiable ops": len(gpugrad.OPS),
        "tf32 matmul": ("on" if gpugrad.backends.matmul.allow_tf32 else "off")
        + " (gg.backends.matmul.allow_tf32; CUDA only)",
        **kernels.compile_report(devices.get("cuda:0").xp if cuda_ok else None, compile_kernels),
    }


def print_table(rows):
    width = max(len(k) for k in rows)
    for k, v in rows.items():
        if isinstance(v, list):
            v = ", ".join(v)
        if v is not None:
            print(f"{k:<{width}}  {v}")


def run(args):
    if args.device:
        devices.get(devices.canonical_device(args.device))  # a clear error if unusable
    report = info_report(compile_kernels=args.compile)
    print_table(report)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0
