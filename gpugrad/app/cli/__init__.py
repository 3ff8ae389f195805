"""The `gpugrad` command line: `gpugrad info` reports what this machine can run.

One module per command, each with register(subparsers) and run(args); arguments holds the
argument types and shared options, refusals what stops a command before any work, plotting
the figures of --plot."""

import argparse
import sys

import gpugrad
from gpugrad import devices
from gpugrad.app.cli import (bench, graph, info, memory, minibatch, refusals, rnn_grads, selftest,
                             train)

# in the order `gpugrad --help` lists them
COMMANDS = (info, bench, train, rnn_grads, memory, graph, minibatch, selftest)


def build_parser():
    """The `gpugrad` parser; each command's subparser is in parser.commands[name]."""
    parser = argparse.ArgumentParser(prog="gpugrad", description=gpugrad.__doc__)
    parser.add_argument("--version", action="version", version=f"gpugrad {gpugrad.__version__}")
    subparsers = parser.add_subparsers(dest="command")
    for command in COMMANDS:
        command.register(subparsers)
    parser.commands = subparsers.choices
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except refusals.OptionError as e:  # as argparse reports a bad value: usage, the option, status 2
        parser.commands[args.command].error(str(e))
    except (refusals.CannotRun, devices.DeviceError, ImportError) as e:  # this machine lacks it
        print(f"gpugrad {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:
        print(f"gpugrad {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a command with work to keep (train) handles it itself
        print(f"\ngpugrad {args.command}: interrupted", file=sys.stderr)
        return 130
