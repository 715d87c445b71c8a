"""A small hierarchy of typed errors, mapped to exit codes at the CLI boundary.

Every error carries one line that names the field or file at fault. The CLI prints
that line and exits 2; the traceback is shown only with NNRECIPE_DEBUG=1.
"""

from __future__ import annotations


class NNRecipeError(Exception):
    """Base class: the user's spec, data or command line is wrong (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str):
        # One line only: the CLI prints it as is, so keep newlines out of it.
        super().__init__(" ".join(str(message).split("\n")).strip())


class SpecError(NNRecipeError):
    """The experiment spec (YAML or key=value overrides) is invalid."""

    def __init__(self, message: str, errors: list[str] | None = None):
        # `errors` keeps every problem found, one per dotted path, for `nnrecipe validate`.
        self.errors = list(errors) if errors else [message]
        super().__init__(message)


class DataError(NNRecipeError):
    """A data file or dataset cannot be read or does not fit the spec."""


class PluginError(NNRecipeError):
    """User code named by a `factory` could not be loaded, raised, or returned the wrong thing."""


class DeviceError(NNRecipeError):
    """The requested device does not exist on this machine."""


class RunDirError(NNRecipeError):
    """The run directory cannot be created or written."""
