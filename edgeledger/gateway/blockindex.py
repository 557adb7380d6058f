"""Where each sealed block's seal record is: height -> journal position, in O(1) reads.

File layout: a 16-byte header (magic `ELIDX\\0\\0\\1`, base height u64), then one
12-byte entry per block from the base on: (segment u32, offset u64). The base
moves up when pruned blocks are released, so the file stays as small as what is
kept; it is rewritten only when the dead prefix is as large as the live part, so
each entry is copied at most once on average (an SD card sees little extra wear).

The index is written after the journal is synced and can always be rebuilt from
the journal's tail, so it is fsynced with the journal but never trusted blindly:
the ledger checks its last entry on start and drops entries the journal lost.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from edgeledger.atomicfile import replace_file
from edgeledger.gateway.journal import JournalError, Position

MAGIC = b"ELIDX\x00\x00\x01"
HEADER = struct.Struct(">8sQ")
ENTRY = struct.Struct(">IQ")


class BlockIndex:
    """Append-only map from block height to the position of its seal record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.base, entries = self._load()
        self.count = self.base + entries
        self._pending = bytearray()

    def _load(self) -> tuple[int, int]:
        """Read the header (writing one into a new file); cut a torn last entry."""
        size = os.fstat(self._fd).st_size
        if size < HEADER.size:
            self._write_header(0)
            return 0, 0
        magic, base = HEADER.unpack(os.pread(self._fd, HEADER.size, 0))
        if magic != MAGIC:
            raise JournalError(f"block index {self.path}: not an EdgeLedger block index "
                               "(bad magic); move it aside and the agent rebuilds it")
        entries, torn = divmod(size - HEADER.size, ENTRY.size)
        if torn:
            os.ftruncate(self._fd, HEADER.size + entries * ENTRY.size)
        return base, entries

    def _write_header(self, base: int) -> None:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, HEADER.pack(MAGIC, base), 0)
        os.fsync(self._fd)

    @property
    def empty(self) -> bool:
        """True when no block is indexed (a new ledger, or one being rebuilt)."""
        return self.count == self.base

    def _offset(self, height: int) -> int:
        return HEADER.size + (height - self.base) * ENTRY.size

    def get(self, height: int) -> Position:
        """Position of block `height`'s seal record."""
        if not self.base <= height < self.count:
            raise JournalError(f"block index {self.path}: no block {height} "
                               f"(have {self.base}..{self.count - 1})")
        written = self.count - len(self._pending) // ENTRY.size
        if height >= written:
            return Position(*ENTRY.unpack_from(self._pending, (height - written) * ENTRY.size))
        raw = os.pread(self._fd, ENTRY.size, self._offset(height))
        if len(raw) != ENTRY.size:
            raise JournalError(f"block index {self.path}: entry {height} is cut short")
        return Position(*ENTRY.unpack(raw))

    def append(self, height: int, pos: Position) -> None:
        """Record block `height` (which must be the next one) at `pos`.

        An empty index takes any height as its base: after pruning, a rebuild from
        the journal starts at the first block still kept.
        """
        if self.empty and not self._pending and height != self.base:
            self._write_header(height)
            self.base = self.count = height
        if height != self.count:
            raise JournalError(f"block index {self.path}: block {height} out of order, "
                               f"expected {self.count}")
        self._pending += ENTRY.pack(pos.segment, pos.offset)
        self.count += 1

    def flush(self) -> None:
        """Write appended entries; the caller has already made the journal durable."""
        if self._pending:
            os.pwrite(self._fd, bytes(self._pending), self._offset(self.count)
                      - len(self._pending))
            os.fsync(self._fd)
            self._pending.clear()

    def truncate(self, count: int) -> None:
        """Forget blocks from height `count` on (the journal lost them)."""
        self.flush()
        count = max(count, self.base)
        os.ftruncate(self._fd, self._offset(count))
        os.fsync(self._fd)
        self.count = count

    def release_below(self, first_kept: int) -> bool:
        """Note that blocks below `first_kept` were pruned; compact when it pays.

        Rewrites the file (temp, fsync, rename) only once the dead prefix is at least
        as long as the live part. Returns whether it rewrote.
        """
        first_kept = min(first_kept, self.count)
        dead, live = first_kept - self.base, self.count - first_kept
        if dead <= 0 or dead < live:
            return False
        self.flush()
        entries = os.pread(self._fd, live * ENTRY.size, self._offset(first_kept))
        replace_file(self.path, HEADER.pack(MAGIC, first_kept) + entries)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR)
        self.base = first_kept
        return True

    def close(self) -> None:
        """Flush and close."""
        self.flush()
        os.close(self._fd)


def read_index(path: Path) -> tuple[int, list[Position], bool]:
    """Read an index file without changing it: base height, entries, and whether the
    last entry is torn. For tools such as `edgeledger log verify`."""
    raw = path.read_bytes()
    if len(raw) < HEADER.size:
        return 0, [], len(raw) > 0
    magic, base = HEADER.unpack_from(raw, 0)
    if magic != MAGIC:
        raise JournalError(f"block index {path}: bad magic")
    body = raw[HEADER.size:]
    count, torn = divmod(len(body), ENTRY.size)
    return base, [Position(*ENTRY.unpack_from(body, i * ENTRY.size))
                  for i in range(count)], bool(torn)
