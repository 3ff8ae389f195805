"""The `gpugrad` command's argument types and the options its commands share. Every number and
output path is checked when the arguments are parsed, so a bad one stops the command at once
with argparse's usage message, never after minutes of work."""

import argparse
import functools
import math
import os
import pathlib
import tempfile

from gpugrad import devices


def integer(minimum, maximum=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


# NumPy and CuPy generators both take a seed in [0, 2**32)
seed = integer(0, 2**32 - 1)


def real(low=None, high=None, low_open=False, high_open=False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or too_low or too_high:
            lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
            raise argparse.ArgumentTypeError(
                f"must be a finite number {' and '.join(x for x in (lo, hi) if x)}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


def batch_sizes(text):
    sizes = []
    for part in text.split(","):
        try:
            sizes.append(integer(1)(part.strip()))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"batch sizes are comma-separated integers >= 1: "
                                             f"{e}") from None
    return sizes


def device_name(text):
    """The device's canonical name; whether it is usable here is checked when the command starts."""
    try:
        return devices.canonical_device(text)
    except (ValueError, TypeError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def dataset(text):
    if text == "digits":
        return text
    if text.startswith("mnist:"):
        directory = pathlib.Path(text[len("mnist:"):])
        if not directory.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: the directory {directory} does not exist")
        return text
    raise argparse.ArgumentTypeError(f"unknown dataset {text!r}: use 'digits' or 'mnist:DIR'")


PLOT_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg")


def _cannot_write_in(directory):
    """Why no file can be made in `directory`, or None when one can. A real file is made and
    removed: os.access says yes to root everywhere, /proc and read-only mounts included."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".gpugrad-probe-", dir=directory)
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    os.unlink(probe)
    return None


def output_file(kind):
    """An output path whose directory exists and is writable (checked before any work)."""
    def parse(text):
        path = pathlib.Path(text)
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name")
        parent = path.parent if str(path.parent) else pathlib.Path(".")
        if not parent.is_dir():
            raise argparse.ArgumentTypeError(f"the directory {parent} does not exist")
        why = _cannot_write_in(parent)
        if why:
            raise argparse.ArgumentTypeError(f"the directory {parent} is not writable ({why})")
        if kind == "plot" and path.suffix.lower().lstrip(".") not in PLOT_FORMATS:
            raise argparse.ArgumentTypeError(f"{text}: the file name must end in one of "
                                             f"{', '.join('.' + f for f in PLOT_FORMATS)}")
        return text
    parse.__name__ = f"{kind} file"
    return parse


def output_dir(text):
    """A folder to write into: made if missing, refused if a file is there or it cannot be made."""
    path = pathlib.Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    existing = next(p for p in (path, *path.parents) if p.exists()) if path.parents else path
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"cannot make or write the folder {text} "
                                         f"({existing} is not a folder)")
    why = _cannot_write_in(existing)
    if why:
        raise argparse.ArgumentTypeError(f"cannot make or write the folder {text} "
                                         f"({existing} takes no new files: {why})")
    return text


output_dir.__name__ = "folder"


def input_file(text):
    """A file to read, which must exist (checked before any work)."""
    path = pathlib.Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} does not exist" if not path.exists()
                                         else f"{text} is not a file")
    return text


input_file.__name__ = "file"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults in --help, except where there is none to show (a flag, an option
    that is off unless given) or the help already says it."""

    def _get_help_string(self, action):
        nothing_to_show = any(action.default is v for v in (None, False, argparse.SUPPRESS))
        if nothing_to_show or "default" in action.help:
            return action.help
        return super()._get_help_string(action)


LAYERS_HELP = "weight layers: 2 is section 4.7's network (one hidden layer)"


@functools.cache
def _shared_options():
    """{name: argparse parent}: the options several commands share, declared once."""
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", type=device_name,
                        help="cpu, cuda, cuda:N or strict (default: the default device, cpu "
                             "unless GPUGRAD_DEVICE says otherwise)")
    json_file = argparse.ArgumentParser(add_help=False)
    json_file.add_argument("--json", metavar="FILE", type=output_file("json"),
                           help="write the figures as JSON")
    plot = argparse.ArgumentParser(add_help=False)
    plot.add_argument("--plot", metavar="FILE.png", type=output_file("plot"),
                      help="draw the figures (png, svg, pdf, jpg; needs the plot extra)")
    learning = argparse.ArgumentParser(add_help=False)
    learning.add_argument("--dataset", type=dataset, default="digits",
                          help="digits (needs the data extra) or mnist:DIR (its four IDX files)")
    learning.add_argument("--layers", type=int, default=2, choices=[1, 2, 3],
                          help=LAYERS_HELP + "; 1 is softmax regression, 3 has two hidden layers")
    learning.add_argument("--hidden", type=integer(1), default=256, help="hidden layer width")
    learning.add_argument("--lr", type=real(0, low_open=True), default=None,
                          help="learning rate (default: 0.1 with sgd, 0.001 with adam)")
    learning.add_argument("--momentum", type=real(0, 1, high_open=True), default=0.9,
                          help="SGD's momentum")
    learning.add_argument("--seed", type=seed, default=0,
                          help="seeds the initialization and each epoch's shuffle")
    return {"device": device, "json": json_file, "plot": plot, "learning": learning}


def add_command(subparsers, name, shared, help):
    """The subparser of command `name`, with the shared options named in `shared` (device, json,
    plot, learning) and its defaults shown in --help."""
    return subparsers.add_parser(name, parents=[_shared_options()[s] for s in shared], help=help,
                                 description=help, formatter_class=HelpFormatter)
