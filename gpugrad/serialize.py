"""gg.save / gg.load: state dicts as .npz, without pickle."""

import zipfile

import numpy as np

from gpugrad import tensor


def save(obj, path):
    """Write a dict of name -> Tensor or array (a state dict) to an .npz file."""
    if not isinstance(obj, dict):
        raise TypeError(f"gg.save stores a dict of arrays (a state dict), got {type(obj).__name__}")
    arrays = {}
    for name, value in obj.items():
        if not isinstance(name, str):
            raise TypeError(f"gg.save: keys must be strings, got {name!r}")
        arr = value.numpy() if isinstance(value, tensor.Tensor) else np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"gg.save: {name!r} is not an array of numbers")
        arrays[name] = arr
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load(path, device=None):
    """Read a file written by gg.save: a dict of name -> Tensor (on `device`)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: tensor.tensor(npz[name], device=device) for name in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"gg.load: {path} is not a readable gpugrad state file (.npz): {e}") from e
