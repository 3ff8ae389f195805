"""gg.load: a state file checked against its manifest, member by member, before it is read.

Every member's size is compared with what its manifest entry and its .npy header declare before
its bytes are read, so a damaged or truncated file is refused with StateFileError and never
makes it allocate what a damaged header claims.
"""

import contextlib
import io
import json
import math
import os
import warnings
import zipfile

import numpy as np

from gpugrad import devices
from gpugrad import tensors
from gpugrad.serialize.fileformat import (
    FORMAT, MANIFEST, NAMED, STORED_AS, VERSION, StateFileError,
)

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field
_DEFLATE_MAX_RATIO = 1032  # deflate never expands more than this (zlib's technical notes)


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
            named = declared is not None and declared[1] == devices.BFLOAT16
            if declared is not None and (shape, dtype) != (
                    declared[0], np.dtype(STORED_AS["bfloat16"]) if named else declared[1]):
                raise StateFileError(
                    f"it holds shape {shape} and dtype {dtype} but the manifest says "
                    f"{declared[0]} and {declared[1]}")
            flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=fp.tell())
            flat = flat.view(devices.BFLOAT16) if named else flat
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
    if entry[1] in NAMED:  # bfloat16: stored as the uint16 of its bits
        return tuple(entry[0]), devices.as_dtype(NAMED[entry[1]])
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
