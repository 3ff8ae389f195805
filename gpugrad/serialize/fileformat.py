"""The names a gpugrad state file is built on, shared by its writer and its reader."""

MANIFEST = "__gpugrad_state__"
FORMAT, VERSION = "gpugrad-state", 2


class StateFileError(ValueError):
    """A file that gg.load cannot read as a complete gpugrad state file."""


# bfloat16 (ml_dtypes) has no .npy type of its own: its members are stored as the uint16 of
# the same bits, and the manifest names the dtype
NAMED = {"bfloat16": "bfloat16"}
STORED_AS = {"bfloat16": "<u2"}
