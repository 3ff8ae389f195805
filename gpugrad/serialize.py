"""gg.save / gg.load: state dicts as .npz, without pickle, written atomically.

A file holds a manifest (its first member) naming every array with its shape and dtype, then
the arrays. gg.save writes to a temporary file beside the target, syncs it to disk and renames
it over the target, so an interrupted or failed save leaves the previous file as it was; gg.load
checks the file against its manifest, so a file missing an array is refused, not half-read.
"""

import contextlib
import json
import os
import tempfile
import warnings
import zipfile
import zlib

import numpy as np

from gpugrad import tensors

MANIFEST = "__gpugrad_state__"
FORMAT, VERSION = "gpugrad-state", 1
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


class StateFileError(ValueError):
    """A file that gg.load cannot read as a complete gpugrad state file."""


def save(obj, path):
    """Write a dict of name -> Tensor or array (a state dict) to `path` as .npz, atomically."""
    arrays = _host_arrays(obj)
    manifest = {"format": FORMAT, "version": VERSION,
                "arrays": {name: [list(a.shape), a.dtype.str] for name, a in arrays.items()}}
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"gg.save: {path} is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"gg.save: the directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                _write_member(zf, MANIFEST, np.array(json.dumps(manifest)))
                for name, arr in arrays.items():
                    _write_member(zf, name, arr)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except BaseException as e:  # KeyboardInterrupt included: never leave the temporary file
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, f"gg.save: could not write {path} ({e.strerror}); "
                                   f"the file that was there, if any, is unchanged") from e
        raise
    _sync_directory(directory)


def load(path, device=None):
    """Read a file written by gg.save: a dict of name -> Tensor (on `device`)."""
    path = os.fspath(path)
    with open(path, "rb") as fh:  # a missing file raises FileNotFoundError as open() does
        head = fh.read(len(_NPY_MAGIC))
    if head.startswith(_NPY_MAGIC):
        raise StateFileError(f"gg.load: {path} is a single NumPy array (.npy), not a gpugrad "
                             f"state file; read it with numpy.load")
    if not head.startswith(_ZIP_MAGIC):
        raise StateFileError(f"gg.load: {path} is not a readable gpugrad state file (.npz "
                             f"written by gg.save): it is not a zip archive")
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.namelist()
            expected = _expected_arrays(path, zf, members)
            out = {}
            for name, (shape, dtype) in expected.items():
                arr = _read_member(path, zf, name)
                if shape is not None and (arr.shape != shape or arr.dtype != dtype):
                    raise StateFileError(
                        f"gg.load: {path}: array {name!r} has shape {arr.shape} and dtype "
                        f"{arr.dtype} but the manifest says {shape} and {dtype}")
                out[name] = tensors.tensor(arr, device=device)
            return out
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as e:
        raise StateFileError(f"gg.load: {path} is not a readable gpugrad state file (.npz): "
                             f"the archive is damaged or truncated ({e})") from e


# ---------------------------------------------------------------------------- helpers


def _host_arrays(obj):
    if not isinstance(obj, dict):
        raise TypeError(f"gg.save stores a dict of arrays (a state dict), got {type(obj).__name__}")
    arrays = {}
    for name, value in obj.items():
        if not isinstance(name, str):
            raise TypeError(f"gg.save: keys must be strings, got {name!r}")
        if name == MANIFEST or "/" in name or not name:
            raise ValueError(f"gg.save: {name!r} cannot be a key (empty, has '/', or is the "
                             f"manifest's name)")
        arr = value.numpy() if isinstance(value, tensors.Tensor) else np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"gg.save: {name!r} has dtype {arr.dtype}; only boolean, integer "
                            f"and floating-point arrays are stored")
        arrays[name] = arr
    return arrays


def _write_member(zf, name, arr):
    with zf.open(name + ".npy", "w", force_zip64=True) as fid:
        np.lib.format.write_array(fid, arr, allow_pickle=False)


def _read_member(path, zf, name):
    try:
        with zf.open(name + ".npy") as fid:
            return np.lib.format.read_array(fid, allow_pickle=False)
    except ValueError as e:  # an object array, or a header NumPy cannot parse
        raise StateFileError(f"gg.load: {path}: array {name!r} cannot be read without "
                             f"unpickling, which gg.load never does ({e})") from e


def _expected_arrays(path, zf, members):
    """name -> (shape, dtype) from the manifest; every declared array must be in the archive."""
    if MANIFEST + ".npy" not in members:
        return _legacy_arrays(path, members)
    try:
        manifest = json.loads(str(_read_member(path, zf, MANIFEST)[()]))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}")
        if manifest.get("version") != VERSION:
            raise StateFileError(f"gg.load: {path} is a gpugrad state file of version "
                                 f"{manifest.get('version')}; this gpugrad reads version {VERSION}")
        declared = {name: (tuple(shape), np.dtype(dtype))
                    for name, (shape, dtype) in manifest["arrays"].items()}
    except StateFileError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise StateFileError(f"gg.load: {path} has a damaged manifest ({e})") from e
    missing = [n for n in declared if n + ".npy" not in members]
    if missing:
        raise StateFileError(
            f"gg.load: {path} is incomplete: its manifest declares {len(declared)} arrays but "
            f"{len(missing)} are missing ({', '.join(missing[:5])}); it was probably written by "
            f"a save that did not finish")
    return declared


def _legacy_arrays(path, members):
    """A zip without a manifest: a plain numpy.savez file is read (with a warning that nothing
    can tell whether it is complete); anything else is refused by name."""
    if any(m.endswith("data.pkl") for m in members):
        raise StateFileError(f"gg.load: {path} is a PyTorch file (torch.save), not a gpugrad "
                             f"state file; load it with torch.load and pass the arrays to "
                             f"load_state_dict")
    if not members or not all(m.endswith(".npy") for m in members):
        raise StateFileError(f"gg.load: {path} is a zip archive but not a gpugrad state file "
                             f"(.npz written by gg.save)")
    warnings.warn(f"gg.load: {path} has no gpugrad manifest (written by numpy.savez or an older "
                  f"gpugrad), so it cannot be checked for completeness; save it again with gg.save",
                  UserWarning, stacklevel=3)
    return {m[:-len(".npy")]: (None, None) for m in members}


def _new_file_mode(path):
    """The mode of the file being replaced, else what open() would give a new file."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _sync_directory(directory):
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
