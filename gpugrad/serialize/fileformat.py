"""The names a gpugrad state file is built on, shared by its writer and its reader."""

MANIFEST = "__gpugrad_state__"
FORMAT, VERSION = "gpugrad-state", 2


class StateFileError(ValueError):
    """A file that gg.load cannot read as a complete gpugrad state file."""
