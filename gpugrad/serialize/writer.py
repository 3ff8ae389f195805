"""gg.save: nested state as .npz, without pickle, written atomically.

Every array is declared in the manifest before any is copied to the host, so what cannot be
stored is refused before anything is written. The file is written beside its target, synced and
renamed over it.
"""

import collections.abc
import contextlib
import errno
import json
import numbers
import os
import tempfile
import zipfile

import numpy as np

from gpugrad import devices
from gpugrad import tensors
from gpugrad.serialize.fileformat import FORMAT, MANIFEST, VERSION


def save(obj, path):
    """Write `obj` to `path` as .npz, atomically.

    `obj` is a tensor, an array (NumPy, CuPy or any gpugrad device's), a NumPy scalar, None, a
    bool, int, float or string, or a dict (string or integer keys), list or tuple of these,
    nested to any depth: a model's state_dict(), an optimizer's, or {"model": ..., "epoch": 3}.
    Device arrays are copied to the host here, one at a time. A symbolic link at `path` is
    written through: its target is replaced (atomically, from its own folder) and the link
    stays. A file that open(path, "w") could not write (no write permission for this user, a
    read-only mount) is refused with PermissionError, as open() would, and left as it was.
    """
    path = os.fspath(path)
    members, manifest = [], {"format": FORMAT, "version": VERSION, "arrays": {}}
    manifest["tree"] = _encode(obj, (), members, manifest["arrays"], set())
    real, directory = _target(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(real)}.", suffix=".tmp",
                                   dir=directory)
    except OSError as e:
        raise type(e)(e.errno, f"gg.save: cannot write {path}: no temporary file can be made "
                               f"in {directory} ({e.strerror})", directory) from e
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                _write_member(zf, MANIFEST, np.array(json.dumps(manifest)))
                for member, value in members:
                    _write_member(zf, member, _host_array(value))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _new_file_mode(real))
        os.replace(tmp, real)
    except BaseException as e:  # KeyboardInterrupt included: never leave the temporary file
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, f"gg.save: could not write {path} ({e.strerror}); "
                                   f"the file that was there, if any, is unchanged") from e
        raise
    _sync_directory(directory)


def _target(path):
    """The file to replace (a symbolic link's target, as open() writes through links) and
    its folder; refuses, before anything is written, what open(path, "w") would refuse."""
    try:
        os.stat(path)
    except FileNotFoundError:
        pass  # a new file, or a link to one that does not exist yet: open() creates it
    except OSError as e:  # a loop of links, a component that is not a folder, ...
        raise type(e)(e.errno, f"gg.save: cannot write {path} ({e.strerror})", path) from e
    real = os.path.realpath(path)
    shown = path if real == os.path.abspath(path) else f"{path} (a link to {real})"
    if os.path.isdir(real):
        raise IsADirectoryError(errno.EISDIR, f"gg.save: {shown} is a directory; give a file "
                                              f"name", path)
    directory = os.path.dirname(real)
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, f"gg.save: cannot write {shown}: the directory "
                                              f"{directory} does not exist", path)
    # The rename below needs only the folder's permission, so it would replace a file that
    # open() may not write; ask the question open() asks (permission bits, ACLs, read-only
    # mounts; root may write anything, as with open()).
    if os.path.exists(real) and not _writable(real):
        raise PermissionError(errno.EACCES, f"gg.save: {shown} is read-only (mode "
                                            f"{os.stat(real).st_mode & 0o777:03o}) for this "
                                            f"user; it was left as it was", path)
    return real, directory


def _writable(path):
    if os.access in os.supports_effective_ids:
        return os.access(path, os.W_OK, effective_ids=True)
    return os.access(path, os.W_OK)


def _encode(value, keys, members, arrays, containers):
    """The manifest's JSON for `value` (found at `keys` in the saved object); its arrays are
    appended to `members` and declared in `arrays`, not copied yet. Raises, naming where in the
    object, for what cannot be stored, before anything is written."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (tensors.Tensor, np.generic)) or devices.is_backend_array(value):
        kind = ("tensor" if isinstance(value, tensors.Tensor)
                else "scalar" if isinstance(value, np.generic) else "array")
        dtype = np.dtype(value.dtype)
        if dtype.kind not in "biuf" and dtype != devices.BFLOAT16:
            raise TypeError(f"gg.save: {_shown(keys)} has dtype {dtype}; only boolean, "
                            f"integer and floating-point arrays are stored")
        device = value.device if kind == "tensor" else devices.device_of_array(value)
        if device == "meta":
            raise TypeError(f"gg.save: {_shown(keys)} is on the meta device, which holds a "
                            f"shape and a dtype but no values")
        member = _member_name(keys, arrays)
        arrays[member] = [list(value.shape), "bfloat16" if dtype == devices.BFLOAT16
                          else dtype.newbyteorder("=").str]
        members.append((member, value))
        return {kind: member}
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, (collections.abc.Mapping, list, tuple)):
        if id(value) in containers:
            raise ValueError(f"gg.save: {_shown(keys)} contains itself")
        containers.add(id(value))
        if isinstance(value, collections.abc.Mapping):
            items = []
            for key, item in value.items():
                if isinstance(key, bool) or not isinstance(key, (str, numbers.Integral)):
                    raise TypeError(f"gg.save: keys must be strings or integers; "
                                    f"{_shown(keys)} has the key {key!r}")
                if key == MANIFEST:
                    raise ValueError(f"gg.save: {key!r} cannot be a key (it is the name of the "
                                     f"file's manifest)")
                key = key if isinstance(key, str) else int(key)
                items.append([key, _encode(item, keys + (key,), members, arrays, containers)])
            node = {"dict": items}
        else:
            kind = "list" if isinstance(value, list) else "tuple"  # a namedtuple: a tuple
            node = {kind: [_encode(item, keys + (i,), members, arrays, containers)
                           for i, item in enumerate(value)]}
        containers.discard(id(value))
        return node
    if isinstance(value, float):
        return float(value)  # JSON writes a float so that it reads back as a float, exactly
    raise TypeError(f"gg.save: {_shown(keys)} is of type {type(value).__name__}; gg.save stores "
                    f"tensors, arrays, numbers, strings, None and dicts, lists and tuples of "
                    f"them (never a pickled object)")


def _shown(keys):
    return "obj" + "".join(f"[{k!r}]" for k in keys)


def _member_name(keys, arrays):
    """The member's name: the key path ("model/0.weight", so that numpy.load(path) finds a
    state dict's arrays by name) where that makes a safe, new name, else a numbered one."""
    parts = [str(k) for k in keys]
    name = "/".join(parts)
    if (not parts or name in arrays or name == MANIFEST or not name.isprintable()
            or any(p in ("", ".", "..") or "/" in p or "\\" in p for p in parts)):
        name = f"array_{len(arrays)}"
        while name in arrays:
            name += "_"
    return name


def _host_array(value):
    """A host (NumPy) copy of a tensor, device array or NumPy scalar, in native byte order."""
    if isinstance(value, tensors.Tensor):
        arr = value.numpy()
    elif isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
    else:
        arr = devices.get(devices.device_of_array(value)).to_host(value)
    if arr.dtype == devices.BFLOAT16:
        return arr.view(np.uint16)  # the same bits (fileformat.STORED_AS)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _write_member(zf, name, arr):
    with zf.open(name + ".npy", "w", force_zip64=True) as fid:
        np.lib.format.write_array(fid, arr, allow_pickle=False)


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
