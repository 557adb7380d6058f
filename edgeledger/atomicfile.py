"""Replacing a file so that a power cut leaves the old version or the new, never half.

Write a temporary file beside it (mode 0600), fsync it, rename it over the file,
fsync the directory (the rename is data of the directory). Used by the journal,
the block index, state.json and the auditor's state file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def replace_file(path: Path, data: bytes, tmp: Path | None = None) -> None:
    """Atomically and durably make `data` the content of `path` (OSError on failure;
    the temporary file, `path` + ".tmp" unless given, is removed then)."""
    tmp = tmp or path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make renames and new entries in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
