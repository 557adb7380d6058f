"""Where each sealed block's seal record is: height -> journal position, in O(1) reads.

A flat file of fixed-size entries, entry h at byte 12*h: (segment u32, offset u64).
It is written after the journal is synced and can always be rebuilt from the
journal's tail, so it is fsynced with the journal but never trusted blindly: the
ledger checks its last entry on start and drops entries the journal lost.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from edgeledger.gateway.journal import JournalError, Position

ENTRY = struct.Struct(">IQ")


class BlockIndex:
    """Append-only map from block height to the position of its seal record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = os.fstat(self._fd).st_size
        self.count = size // ENTRY.size
        if size % ENTRY.size:
            os.ftruncate(self._fd, self.count * ENTRY.size)  # a torn last entry
        self._pending = bytearray()

    def get(self, height: int) -> Position:
        """Position of block `height`'s seal record."""
        if not 0 <= height < self.count:
            raise JournalError(f"block index {self.path}: no block {height} "
                               f"(have 0..{self.count - 1})")
        written = self.count - len(self._pending) // ENTRY.size
        if height >= written:
            at = (height - written) * ENTRY.size
            return Position(*ENTRY.unpack_from(self._pending, at))
        raw = os.pread(self._fd, ENTRY.size, height * ENTRY.size)
        if len(raw) != ENTRY.size:
            raise JournalError(f"block index {self.path}: entry {height} is cut short")
        return Position(*ENTRY.unpack(raw))

    def append(self, height: int, pos: Position) -> None:
        """Record block `height` (which must be the next one) at `pos`."""
        if height != self.count:
            raise JournalError(f"block index {self.path}: block {height} out of order, "
                               f"expected {self.count}")
        self._pending += ENTRY.pack(pos.segment, pos.offset)
        self.count += 1

    def flush(self) -> None:
        """Write appended entries; the caller has already made the journal durable."""
        if self._pending:
            at = self.count * ENTRY.size - len(self._pending)
            os.pwrite(self._fd, bytes(self._pending), at)
            os.fsync(self._fd)
            self._pending.clear()

    def truncate(self, count: int) -> None:
        """Forget blocks from height `count` on (the journal lost them)."""
        self.flush()
        os.ftruncate(self._fd, count * ENTRY.size)
        os.fsync(self._fd)
        self.count = count

    def close(self) -> None:
        """Flush and close."""
        self.flush()
        os.close(self._fd)
