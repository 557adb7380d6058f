"""Logging for the long-running commands: one line per event to stderr.

Under systemd (stderr connected to the journal) each line carries a `<priority>`
prefix instead of a timestamp, so journald files it at the right level.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import ClassVar


class _OneLine(logging.Formatter):
    """One line per event; under journald a <priority> prefix instead of a timestamp."""

    PRIORITY: ClassVar[dict[int, int]] = {logging.DEBUG: 7, logging.INFO: 6,
                                          logging.WARNING: 4, logging.ERROR: 3,
                                          logging.CRITICAL: 2}

    def __init__(self, journald: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s" if journald
                         else "%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        """The record on one line."""
        text = super().format(record).replace("\n", " | ")
        if self.journald:
            return f"<{self.PRIORITY.get(record.levelno, 6)}>{text}"
        return text


def setup_logging(level: str) -> None:
    """Log to stderr at `level` ("debug", "info", "warning", "error")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine(journald=_stderr_is_journal()))
    root = logging.getLogger("edgeledger")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def _stderr_is_journal() -> bool:
    """True when systemd connected stderr to the journal ($JOURNAL_STREAM = dev:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"
