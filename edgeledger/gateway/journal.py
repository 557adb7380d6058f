"""The gateway's append-only journal: length-and-CRC-framed records in segment files.

Theory of operation. One writer appends records to an in-memory buffer; `sync`
writes the buffer to the newest segment and fsyncs it (group commit: the agent
calls it once per durability window, so an SD card sees one fsync a second, not
one per reading). Only what a `sync` has returned is durable.

Record frame: length (u32, payload bytes), CRC-32 (u32, over kind and payload),
kind (u8), payload. A segment is `seg-<number>.log`; a new one starts only after
a seal record, so every segment but the newest holds whole blocks and can be
pruned on its own.

Recovery scans forward from a known-good record (the last indexed seal). Writes
are sequential, so all that was ever fsynced is a prefix of the newest segment:
a bad record there starts the torn tail of a power cut, which is cut off and
reported (if valid records follow it, the file is first copied to `quarantine/`,
since that can also be bit rot). A bad record in an older segment is damage in
the middle: the segment is copied aside to `quarantine/`, rewritten with every
record that still checks out, and the loss is reported, never hidden.
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edgeledger.atomicfile import fsync_dir, replace_file
from edgeledger.core.errors import EdgeLedgerError, TransportError

READING, SEAL, DROP = 1, 2, 3
KINDS = frozenset({READING, SEAL, DROP})
HEADER = struct.Struct(">IIB")
MAX_PAYLOAD = 1 << 20
_PREFIX, _SUFFIX = "seg-", ".log"


class JournalError(EdgeLedgerError):
    """The journal on disk is not what it must be (names the file and offset)."""


class DiskFullError(TransportError):
    """A write failed for lack of space or a read-only filesystem; nothing was lost."""


@dataclass(frozen=True, order=True)
class Position:
    """Where a record starts: segment number and byte offset."""

    segment: int
    offset: int


@dataclass(frozen=True)
class Record:
    """One record read back from the journal."""

    kind: int
    payload: bytes
    pos: Position

    @property
    def size(self) -> int:
        """Bytes the record takes on disk, frame included."""
        return HEADER.size + len(self.payload)


@dataclass
class Damage:
    """What recovery had to cut or set aside."""

    segment: Path
    offset: int
    bytes_lost: int
    torn_tail: bool
    quarantined: Path | None = None

    def describe(self) -> str:
        """One line for the log."""
        if self.torn_tail:
            kept = f"; the file was first copied to {self.quarantined}" if self.quarantined else ""
            return (f"cut torn tail of {self.segment} at offset {self.offset}: "
                    f"{self.bytes_lost} bytes{kept}")
        return (f"damaged records in {self.segment} at offset {self.offset}: {self.bytes_lost} "
                f"bytes unreadable; original kept as {self.quarantined}")


def frame(kind: int, payload: bytes) -> bytes:
    """The on-disk bytes of one record."""
    crc = zlib.crc32(payload, zlib.crc32(bytes((kind,))))
    return HEADER.pack(len(payload), crc, kind) + payload


def parse_at(data: bytes | memoryview, offset: int) -> tuple[int, bytes] | None:
    """The (kind, payload) of a whole, valid record at `offset`, or None."""
    end = offset + HEADER.size
    if end > len(data):
        return None
    length, crc, kind = HEADER.unpack_from(data, offset)
    if kind not in KINDS or length > MAX_PAYLOAD or end + length > len(data):
        return None
    payload = bytes(data[end:end + length])
    if zlib.crc32(payload, zlib.crc32(bytes((kind,)))) != crc:
        return None
    return kind, payload


class FileOps:
    """The file operations the journal uses: one seam for tests to inject faults."""

    def open_append(self, path: Path) -> int:
        """Open `path` for appending, creating it."""
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        """Write some of `data`; return how much."""
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        """Make what was written durable."""
        os.fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        """Cut the file to `size` bytes."""
        os.ftruncate(fd, size)

    def close(self, fd: int) -> None:
        """Close the file."""
        os.close(fd)


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG})
"""Write errors that mean "no room or not writable": wait and retry, never corrupt."""


@dataclass
class Journal:
    """The segment files of one data directory, and the one writer that appends to them."""

    directory: Path
    segment_bytes: int = 4 << 20
    ops: FileOps = field(default_factory=FileOps)
    _buffer: bytearray = field(default_factory=bytearray, init=False)
    _segment: int = field(default=0, init=False)
    _written: int = field(default=0, init=False)
    _fd: int | None = field(default=None, init=False)

    # --- files -------------------------------------------------------------------------

    def segment_path(self, number: int) -> Path:
        """The file of segment `number`."""
        return self.directory / f"{_PREFIX}{number:010d}{_SUFFIX}"

    def segments(self) -> list[int]:
        """Numbers of the segment files present, oldest first."""
        try:
            names = [entry.name for entry in os.scandir(self.directory)]
        except FileNotFoundError:
            return []
        digits = (n[len(_PREFIX):-len(_SUFFIX)] for n in names
                  if n.startswith(_PREFIX) and n.endswith(_SUFFIX))
        return sorted(int(d) for d in digits if d.isdigit())

    def segments_from(self, first: int) -> list[int]:
        """Segment numbers from `first` on, without listing the directory.

        Pruning removes only the oldest segments, so the ones after `first` are
        consecutive: start-up cost does not grow with how many segments are kept.
        """
        numbers = []
        while self.segment_path(first).exists():
            numbers.append(first)
            first += 1
        return numbers

    @property
    def end(self) -> Position:
        """Where the next record will start (buffered records included)."""
        return Position(self._segment, self._written + len(self._buffer))

    @property
    def durable_end(self) -> Position:
        """Everything before this position has been fsynced."""
        return Position(self._segment, self._written)

    @property
    def pending(self) -> int:
        """Bytes appended but not yet synced."""
        return len(self._buffer)

    def size_on_disk(self) -> int:
        """Bytes in all segment files."""
        return sum(self.segment_path(n).stat().st_size for n in self.segments())

    # --- writing ---------------------------------------------------------------------

    def open_for_append(self, segment: int, size: int) -> None:
        """Continue writing at the end of `segment`, which holds `size` valid bytes."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._close()
        self._segment, self._written = segment, size
        fd = self.ops.open_append(self.segment_path(segment))
        if os.fstat(fd).st_size != size:
            try:
                self.ops.truncate(fd, size)
            except OSError:
                self.ops.close(fd)  # never append after bytes that could not be cut
                raise
        self._fd = fd

    def append(self, kind: int, payload: bytes) -> Position:
        """Buffer one record; it is durable after the next `sync`."""
        if len(payload) > MAX_PAYLOAD:
            raise JournalError(f"journal: record of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        pos = self.end
        self._buffer += frame(kind, payload)
        return pos

    def sync(self) -> Position:
        """Write the buffer and fsync; return the new durable end.

        On ENOSPC or a read-only filesystem the file is cut back to its last durable
        size, the buffer is kept, and DiskFullError is raised: call again later.
        """
        if self._buffer:
            fd: int | None = None
            try:
                # Reopening after a failed cut-back can fail on the same full or
                # read-only disk: that is DiskFullError too, not a bare OSError.
                fd = self._fd if self._fd is not None else self._reopen()
                self._write_all(fd, bytes(self._buffer))
                self.ops.fsync(fd)
            except OSError as exc:
                if fd is not None:
                    self._undo_partial_write(fd)
                if exc.errno in DISK_FULL_ERRNOS:
                    raise DiskFullError(f"journal {self.segment_path(self._segment)}: "
                                        f"{os.strerror(exc.errno or 0)}; "
                                        f"{len(self._buffer)} bytes kept in memory") from exc
                raise JournalError(f"journal {self.segment_path(self._segment)}: write failed: "
                                   f"{exc}") from exc
            self._written += len(self._buffer)
            self._buffer.clear()
        return self.durable_end

    def _reopen(self) -> int:
        self.open_for_append(self._segment, self._written)
        if self._fd is None:
            raise JournalError(f"journal {self.segment_path(self._segment)}: cannot reopen")
        return self._fd

    def roll(self) -> bool:
        """Start a new segment if the current one is full; call only after a seal record."""
        if self._written + len(self._buffer) < self.segment_bytes:
            return False
        try:
            self.sync()
        except DiskFullError:
            return False  # the buffer is kept; a later seal rolls (a seal must not fail)
        self.open_for_append(self._segment + 1, 0)
        fsync_dir(self.directory)
        return True

    def close(self) -> None:
        """Sync and close the current segment."""
        if self._buffer:
            self.sync()
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            self.ops.close(self._fd)
            self._fd = None

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self.ops.write(fd, view):]

    def _undo_partial_write(self, fd: int) -> None:
        """Cut a half-written buffer off the file so a later write cannot follow garbage."""
        try:
            self.ops.truncate(fd, self._written)
        except OSError:
            # The file may hold a torn record; recovery cuts it as a torn tail. Reopen
            # so the next sync truncates again before it writes.
            self._close()

    # --- reading ---------------------------------------------------------------------

    def read_segment(self, number: int) -> bytes:
        """The durable bytes of segment `number` (the buffer is not included)."""
        data = self.segment_path(number).read_bytes()
        if number == self._segment and self._fd is not None:
            data = data[:self._written]
        return data

    def scan(self, start: Position) -> Iterator[Record]:
        """Every durable record from `start` on, across segments; stops at the first bad one."""
        for number in self.segments():
            if number < start.segment:
                continue
            data = self.read_segment(number)
            offset = start.offset if number == start.segment else 0
            while offset < len(data):
                parsed = parse_at(data, offset)
                if parsed is None:
                    raise JournalError(f"journal {self.segment_path(number)}: bad record at "
                                       f"offset {offset}")
                yield Record(parsed[0], parsed[1], Position(number, offset))
                offset += HEADER.size + len(parsed[1])

    def read(self, pos: Position) -> Record:
        """The record at `pos`."""
        path = self.segment_path(pos.segment)
        try:
            with open(path, "rb") as f:
                f.seek(pos.offset)
                head = f.read(HEADER.size)
                if len(head) == HEADER.size:
                    head += f.read(min(HEADER.unpack(head)[0], MAX_PAYLOAD))
        except FileNotFoundError as exc:
            raise JournalError(f"journal: segment {path} is gone (pruned?)") from exc
        parsed = parse_at(head, 0)
        if parsed is None:
            raise JournalError(f"journal {path}: bad record at offset {pos.offset}")
        return Record(parsed[0], parsed[1], pos)

    def read_range(self, start: Position, stop: int) -> list[Record]:
        """The records of one segment from `start` up to byte offset `stop`."""
        path = self.segment_path(start.segment)
        try:
            with open(path, "rb") as f:
                f.seek(start.offset)
                data = f.read(stop - start.offset)
        except FileNotFoundError as exc:
            raise JournalError(f"journal: segment {path} is gone (pruned?)") from exc
        records, bad, _ = _read_all(data, start.segment, start.offset)
        if bad is not None:
            raise JournalError(f"journal {path}: bad record at offset {bad}")
        return records

    def remove_segment(self, number: int) -> None:
        """Delete a whole segment (pruning); never the one being written."""
        if number == self._segment:
            raise JournalError(f"journal: segment {number} is being written; not removing it")
        self.segment_path(number).unlink(missing_ok=True)

    # --- recovery --------------------------------------------------------------------

    def recover(self, start: Position) -> tuple[list[Record], list[Damage]]:
        """Read every record from `start` to the end, repairing as the module doc says.

        Returns the records found and what was cut or set aside; leaves the journal
        ready to append at the end of the newest segment.
        """
        numbers = self.segments_from(start.segment)
        if not numbers:
            self.open_for_append(start.segment, 0)
            return [], []
        records: list[Record] = []
        damage: list[Damage] = []
        size = 0
        for number in numbers:
            offset = start.offset if number == start.segment else 0
            found, size, hurt = self._recover_segment(number, offset, number == numbers[-1])
            records += found
            damage += hurt
        self.open_for_append(numbers[-1], size)
        return records, damage

    def _recover_segment(self, number: int, offset: int,
                         newest: bool) -> tuple[list[Record], int, list[Damage]]:
        path = self.segment_path(number)
        with open(path, "rb") as f:
            f.seek(offset)
            tail = f.read()
        records, bad, lost = _read_all(tail, number, offset)
        if bad is None:
            return records, offset + len(tail), []
        data = path.read_bytes()
        if newest:
            after = [r for r in records if r.pos.offset > bad]
            aside = self._quarantine(path) if after else None
            with open(path, "r+b") as f:
                f.truncate(bad)
                os.fsync(f.fileno())
            return ([r for r in records if r.pos.offset < bad], bad,
                    [Damage(path, bad, len(data) - bad, torn_tail=True, quarantined=aside)])
        aside = self._quarantine(path)
        kept = b"".join(data[r.pos.offset:r.pos.offset + r.size] for r in records
                        if r.pos.offset >= offset)
        replace_file(path, data[:offset] + kept)
        moved, end = _read_all(kept, number, offset)[0], offset + len(kept)
        return moved, end, [Damage(path, bad, lost, torn_tail=False, quarantined=aside)]

    def _quarantine(self, path: Path) -> Path:
        aside_dir = self.directory / "quarantine"
        aside_dir.mkdir(exist_ok=True)
        aside = aside_dir / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}.damaged"
        shutil.copy2(path, aside)
        fsync_dir(aside_dir)
        return aside


def _read_all(data: bytes, number: int, base: int = 0) -> tuple[list[Record], int | None, int]:
    """All valid records in `data`, which starts at byte `base` of segment `number`,
    resyncing past damage.

    Returns the records, the segment offset of the first bad byte (None if all is
    sound) and the number of bytes skipped.
    """
    records: list[Record] = []
    first_bad: int | None = None
    lost = offset = 0
    view = memoryview(data)
    while offset < len(data):
        parsed = parse_at(view, offset)
        if parsed is not None:
            records.append(Record(parsed[0], parsed[1], Position(number, base + offset)))
            offset += HEADER.size + len(parsed[1])
            continue
        if first_bad is None:
            first_bad = base + offset
        offset += 1
        lost += 1
    return records, first_bad, lost
