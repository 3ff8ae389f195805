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

from gpugrad.serialize.fileformat import FORMAT, MANIFEST, VERSION, StateFileError
from gpugrad.serialize.reader import load
from gpugrad.serialize.writer import save

__all__ = ["FORMAT", "MANIFEST", "VERSION", "StateFileError", "load", "save"]
