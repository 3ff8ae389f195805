"""gg.save / gg.load: nested state as .npz, without pickle, written atomically.

A file is a zip of .npy members (so numpy.load can read its arrays too). Its first member is a
manifest (JSON) holding the object's structure, its plain values (None, bools, ints, floats,
strings) and every array member's shape and dtype; each tensor or array is a member of its own.
gg.save writes to a temporary file beside the target (beside the real file when the target is a
symbolic link), syncs it to disk and renames it over the target, so an interrupted or failed
save leaves the previous file as it was. gg.load checks the file against its manifest and every
member's size against what its header declares before reading it, so a file missing an array,
damaged or truncated is refused with StateFileError, never half-read, and never makes it
allocate what a damaged header claims.
"""

import collections.abc
import contextlib
import errno
import io
import json
import math
import numbers
import os
import tempfile
import warnings
import zipfile

import numpy as np

from gpugrad import devices
from gpugrad import tensors

MANIFEST = "__gpugrad_state__"
FORMAT, VERSION = "gpugrad-state", 2
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field
_DEFLATE_MAX_RATIO = 1032  # deflate never expands more than this (zlib's technical notes)


class StateFileError(ValueError):
    """A file that gg.load cannot read as a complete gpugrad state file."""


# ---------------------------------------------------------------------------- save


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
        if dtype.kind not in "biuf":
            raise TypeError(f"gg.save: {_shown(keys)} has dtype {dtype}; only boolean, "
                            f"integer and floating-point arrays are stored")
        device = value.device if kind == "tensor" else devices.device_of_array(value)
        if device == "meta":
            raise TypeError(f"gg.save: {_shown(keys)} is on the meta device, which holds a "
                            f"shape and a dtype but no values")
        member = _member_name(keys, arrays)
        arrays[member] = [list(value.shape), dtype.newbyteorder("=").str]
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


# ---------------------------------------------------------------------------- load


def load(path, device=None):
    """Read a file written by gg.save: the object that was saved, its tensors and arrays on
    `device` (default: the default device).

    Tensors come back as Tensors, arrays as arrays of that device (numpy.ndarray on the CPU),
    NumPy scalars as NumPy scalars, dicts (in their order), lists and tuples as such. A file of
    the first format (version 1: a flat dict of arrays) or a plain numpy.savez file (with a
    warning: nothing can tell whether it is complete) gives a dict of name -> Tensor. Never
    unpickles; any file that is not a complete state file raises StateFileError naming the
    file and what is wrong.
    """
    path = os.fspath(path)
    if device is not None:
        device = devices.canonical_device(device)  # a bad name is refused before any reading
    with open(path, "rb") as fh:  # a missing file raises FileNotFoundError as open() does
        head = fh.read(len(_NPY_MAGIC))
        if head.startswith(_NPY_MAGIC):
            raise StateFileError(f"gg.load: {path} is a single NumPy array (.npy), not a "
                                 f"gpugrad state file; read it with numpy.load")
        if not head.startswith(_ZIP_MAGIC):
            raise StateFileError(f"gg.load: {path} is not a readable gpugrad state file (.npz "
                                 f"written by gg.save): it is not a zip archive")
        archive = _Archive(path, fh)
        try:
            manifest = archive.manifest()
            if manifest is None:
                return {name: tensors.tensor(archive.array(member), device=device)
                        for name, member in _legacy_members(path, archive.names).items()}
            if manifest["version"] == 1:
                return {name: tensors.tensor(archive.array(name + ".npy", declared),
                                             device=device)
                        for name, declared in manifest["arrays"].items()}
            try:
                return _Decoder(archive, manifest["arrays"], device).value(manifest["tree"])
            except RecursionError:
                raise StateFileError(f"gg.load: {path} is damaged: its manifest nests deeper "
                                     f"than Python can follow") from None
        finally:
            archive.zf.close()


class _Archive:
    """The zip's members, each read only after its size was checked against the file's and
    its .npy header's; everything the bytes of a damaged file can make zipfile or NumPy
    raise comes out as StateFileError."""

    def __init__(self, path, fh):
        self.path = path
        self.size = os.fstat(fh.fileno()).st_size
        fh.seek(0)
        with self.damage("its zip directory"):
            self.zf = zipfile.ZipFile(fh)
            self.infos = {}
            for info in self.zf.infolist():
                if info.filename in self.infos:
                    raise StateFileError(f"it holds two members named {info.filename!r}")
                self.infos[info.filename] = info
        self.names = list(self.infos)
        self.versioned = False

    @contextlib.contextmanager
    def damage(self, what):
        try:
            yield
        except StateFileError as e:
            if str(e).startswith("gg.load: "):
                raise
            raise StateFileError(f"gg.load: {self.path} is damaged: {what}: {e}") from None
        except MemoryError:
            raise
        except Exception as e:  # whatever damaged bytes make zipfile or NumPy raise
            raise StateFileError(f"gg.load: {self.path} is not a readable gpugrad state file "
                                 f"(.npz): {what} is damaged or truncated ({type(e).__name__}: "
                                 f"{e})") from e

    def manifest(self):
        """The checked manifest ({"version", "arrays": {member: (shape, dtype)}, "tree"}), or
        None for a zip without one."""
        if MANIFEST + ".npy" not in self.infos:
            return None
        self.versioned = True
        text = self.array(MANIFEST + ".npy", manifest=True)
        with self.damage("its manifest"):
            if text.shape != () or text.dtype.kind != "U":
                raise StateFileError(f"it is an array of shape {text.shape} and dtype "
                                     f"{text.dtype}, not a string")
            manifest = json.loads(str(text[()]))
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise StateFileError("it does not name the gpugrad-state format")
            version = manifest.get("version")
            if type(version) is not int or version not in (1, VERSION):
                raise StateFileError(f"gg.load: {self.path} is a gpugrad state file of version "
                                     f"{version}; this gpugrad reads versions 1 and {VERSION}")
            if set(manifest) != ({"format", "version", "arrays"} |
                                 ({"tree"} if version == VERSION else set())):
                raise StateFileError(f"it has the keys {sorted(manifest)}")
            if not isinstance(manifest["arrays"], dict):
                raise StateFileError("its 'arrays' is not a dict")
            arrays = {name: _declared(entry) for name, entry in manifest["arrays"].items()}
        missing = [name for name in arrays if name + ".npy" not in self.infos]
        if missing:
            raise StateFileError(
                f"gg.load: {self.path} is incomplete: its manifest declares {len(arrays)} "
                f"arrays but {len(missing)} are missing ({', '.join(missing[:5])}); it was "
                f"probably written by a save that did not finish")
        # every member's size against its declaration, before any array is read
        for name, declared in arrays.items():
            self.check_size(name + ".npy", declared)
        manifest["arrays"] = arrays
        return manifest

    def check_size(self, member, declared):
        shape, dtype = declared
        info = self.infos[member]
        with self.damage(f"member {member}"):
            data_bytes = math.prod(shape) * dtype.itemsize
            if info.file_size < data_bytes:
                raise StateFileError(
                    f"the manifest declares {data_bytes:,} bytes of array data (shape {shape}, "
                    f"{dtype}) but the member holds only {info.file_size:,} bytes: truncated "
                    f"or damaged")

    def array(self, member, declared=None, manifest=False):
        """The array in `member`, as a host (NumPy) array; its header must match `declared`
        ((shape, dtype), from the manifest) when given."""
        info = self.infos[member]
        with self.damage(f"member {member}"):
            self._check_extent(info)
            data = self.zf.read(info)  # bounded by the file's size; zipfile checks its CRC
            fp = io.BytesIO(data)
            major, minor = np.lib.format.read_magic(fp)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get((major, minor))
            if read_header is None:
                raise StateFileError(f"its .npy header is of version {major}.{minor}")
            shape, fortran, dtype = read_header(fp)
            if dtype.hasobject or (dtype.kind not in "biuf" and not (manifest and
                                                                     dtype.kind == "U")):
                if dtype.hasobject and not self.versioned:
                    raise StateFileError(
                        f"gg.load: {self.path}: array {member[:-4]!r} holds Python objects, "
                        f"which cannot be read without unpickling; gg.load never does")
                raise StateFileError(f"it holds dtype {dtype}, which gg.save never writes")
            if any(n < 0 for n in shape):
                raise StateFileError(f"its header declares the shape {shape}")
            expected = math.prod(shape) * dtype.itemsize
            available = len(data) - fp.tell()
            if available != expected:
                raise StateFileError(
                    f"its header declares {expected:,} bytes of array data (shape {shape}, "
                    f"{dtype}) but it holds {available:,} bytes: "
                    f"{'truncated' if available < expected else 'more than declared'}")
            if declared is not None and (shape, dtype) != declared:
                raise StateFileError(
                    f"it holds shape {shape} and dtype {dtype} but the manifest says "
                    f"{declared[0]} and {declared[1]}")
            flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=fp.tell())
            return flat.reshape(shape, order="F" if fortran else "C").copy()

    def _check_extent(self, info):
        """The member's bytes must lie inside the file, and what it unpacks to must be what
        its stored bytes can hold, before zipfile reads (and allocates) any of them."""
        if info.flag_bits & 0x1:
            raise StateFileError("it is marked encrypted, which gg.save never writes")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise StateFileError(f"it is stored uncompressed but its sizes differ "
                                     f"({info.compress_size:,} and {info.file_size:,} bytes)")
        elif info.compress_type == zipfile.ZIP_DEFLATED and not self.versioned:
            if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 64:
                raise StateFileError(f"it claims to unpack {info.compress_size:,} bytes into "
                                     f"{info.file_size:,}, more than deflate can")
        else:
            raise StateFileError(f"it is compressed with zip method {info.compress_type}, "
                                 f"which gg.save never uses")
        end = info.header_offset + _LOCAL_HEADER + len(info.orig_filename) + info.compress_size
        if end > self.size:
            raise StateFileError(f"it claims {info.compress_size:,} bytes at offset "
                                 f"{info.header_offset:,}, past the end of the file "
                                 f"({self.size:,} bytes): the file is truncated or damaged")


def _declared(entry):
    """(shape, dtype) from a manifest entry [shape, dtype string]."""
    if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], list)
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                       for n in entry[0]) or not isinstance(entry[1], str)):
        raise StateFileError(f"an array's entry is {entry!r:.80}, not [shape, dtype]")
    dtype = np.dtype(entry[1])
    if dtype.kind not in "biuf":
        raise StateFileError(f"an array's dtype is {dtype}")
    return tuple(entry[0]), dtype


def _legacy_members(path, names):
    """A zip without a manifest: {name: member} of a plain numpy.savez file, read with a
    warning that nothing can tell whether it is complete; anything else is refused by name."""
    if any(m.endswith("data.pkl") for m in names):
        raise StateFileError(f"gg.load: {path} is a PyTorch file (torch.save), not a gpugrad "
                             f"state file; load it with torch.load and pass the arrays to "
                             f"load_state_dict")
    if not names or not all(m.endswith(".npy") for m in names):
        raise StateFileError(f"gg.load: {path} is a zip archive but not a gpugrad state file "
                             f"(.npz written by gg.save)")
    warnings.warn(f"gg.load: {path} has no gpugrad manifest (written by numpy.savez or an older "
                  f"gpugrad), so it cannot be checked for completeness; save it again with gg.save",
                  UserWarning, stacklevel=3)
    return {m[:-len(".npy")]: m for m in names}


class _Decoder:
    """Rebuilds the saved object from the manifest's tree, reading each array as it comes
    (so at most one array is on the host at a time) onto the device."""

    def __init__(self, archive, arrays, device):
        self.archive, self.arrays, self.device = archive, arrays, device
        self.used = set()

    def damaged(self, what):
        return StateFileError(f"gg.load: {self.archive.path} is damaged: its manifest's "
                              f"structure {what}")

    def value(self, node):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if not isinstance(node, dict) or len(node) != 1:
            raise self.damaged(f"holds {node!r:.80}")
        (kind, content), = node.items()
        if kind in ("tensor", "array", "scalar"):
            if not isinstance(content, str) or content not in self.arrays or (
                    content in self.used):
                raise self.damaged(f"names the array {content!r:.80}, which it does not "
                                   f"declare (or names twice)")
            self.used.add(content)
            host = self.archive.array(content + ".npy", self.arrays[content])
            if kind == "scalar":
                return host[()]
            t = tensors.tensor(host, device=self.device)
            return t if kind == "tensor" else t.data
        if kind in ("list", "tuple") and isinstance(content, list):
            items = [self.value(item) for item in content]
            return items if kind == "list" else tuple(items)
        if kind == "dict" and isinstance(content, list):
            out = {}
            for item in content:
                if (not isinstance(item, list) or len(item) != 2 or isinstance(item[0], bool)
                        or not isinstance(item[0], (str, int)) or item[0] in out):
                    raise self.damaged(f"holds the dict item {item!r:.80}")
                out[item[0]] = self.value(item[1])
            return out
        raise self.damaged(f"holds {node!r:.80}")
