"""The one error every reader raises for a file it cannot use, and opening files for it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py

FILE_KEY = "(file)"
# What reading a file whose HDF5 structures are damaged raises (h5py, and names that are
# not UTF-8 and so come back as bytes).
CORRUPT_FILE_ERRORS = (OSError, RuntimeError, ValueError, KeyError, TypeError)


class PDEBenchError(ValueError):
    """A file does not match the layout it claims; names the file, the key and what was expected."""

    def __init__(self, path: str | Path, key: str, expected: str, found: Any = None) -> None:
        self.path = Path(path)
        self.key = key
        self.expected = expected
        self.found = found
        message = f"{self.path}: key '{key}': expected {expected}"
        if found is not None:
            message += f", found {found}"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.key, self.expected, self.found)


@contextlib.contextmanager
def open_h5(path: Path) -> Iterator[h5py.File]:
    """Open ``path`` read-only; a missing, non-regular or non-HDF5 file is a ``PDEBenchError``."""
    if not path.exists():
        raise PDEBenchError(path, FILE_KEY, "an existing HDF5 file", "no such file")
    if not path.is_file():
        raise PDEBenchError(path, FILE_KEY, "an HDF5 file", "a directory or special file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise PDEBenchError(path, FILE_KEY, "an HDF5 file", f"unreadable ({exc})") from exc
    with f:
        yield f
