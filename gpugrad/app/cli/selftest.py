"""`gpugrad selftest`: the bundled tests, the kernels and a short benchmark on a device, one
verdict."""

from gpugrad.app import selftest
from gpugrad.app.cli import arguments


def register(subparsers):
    parser = arguments.add_command(subparsers, "selftest", ["device", "json"],
                                   "check this install on a device: the bundled tests, the kernels, a short "
                                   "benchmark, one verdict (exit 0 PASS, 1 FAIL, 2 INCOMPLETE)")
    parser.add_argument("--no-bench", action="store_true", help="skip the short benchmark")
    parser.add_argument("--no-slow", action="store_true",
                        help="leave out the end-to-end tests marked slow (whole CLI and bench "
                             "commands), for a run beside one that has them")
    parser.set_defaults(func=run)


def run(args):
    return selftest.main(args)
