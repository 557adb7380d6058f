"""The read side of an aggregator store: what the HTTP API needs, as one small Protocol.

`StoreReader` is implemented by SqliteStore (store/sqlite.py) and by any other
backend (PostgreSQL). The HTTP API (edgeledger/aggregator/api/) sees a store only
through it, on connections of its own: a reader never shares the ingest thread's
connection, and never writes.

Rules every implementation keeps, because the API relies on them:

- Cost. Every method is O(log n) reads plus the size of what it returns (an index
  lookup, a bounded range scan); nothing scans a table. Proofs read only the stored
  hashes they need (`read_hashes`, the layout of edgeledger.core.merkle).
- Absence is a value. An unknown device, height or checkpoint is `None` (or an empty
  list), never an exception; the API turns it into a 404.
- Faults. A storage fault (disk, connection, corrupt file) raises EdgeLedgerError
  (or sqlite3.Error / OSError from the SQLite store); the API answers 503 with the
  reason. Bad arguments never reach a reader: the API validates them first (every
  integer argument is within the signed 64-bit range).
- Consistency. Each call sees one committed state. Two calls may see two states
  (ingest commits in between): the API orders its reads so that this is harmless
  (the checkpoint first, then only what it covers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Device:
    """One enrolled device as stored: its key, its status and its tip."""

    dev: str
    public_key: bytes
    enrolled_ms: int
    revoked_ms: int | None
    flagged_ms: int | None
    next_height: int
    prev: bytes


@dataclass(frozen=True)
class DeviceKey:
    """One key a device has had: it signs the device's blocks from `from_height` on
    (until the next key's `from_height`). Enrolling gives the first; each applied
    rotation record adds one."""

    public_key: bytes
    from_height: int
    enrolled_ms: int


@dataclass(frozen=True)
class Event:
    """One journal entry (rejection, gap, equivocation, skew, ...); `id` is the cursor."""

    id: int
    time_ms: int
    kind: str
    dev: str | None
    height: int | None
    reason: str


@dataclass(frozen=True)
class BlockSpan:
    """An accepted block whose readings are stored, with its readings' time range.

    `t0`/`t1` are the block header's smallest and largest reading time (Unix ms).
    (`t0`, `log_index`) is the order `blocks_by_time` returns and resumes from.
    """

    dev: str
    height: int
    hash: bytes
    log_index: int
    t0: int
    t1: int

    @property
    def key(self) -> tuple[int, int]:
        """The position of this block in `blocks_by_time` order."""
        return (self.t0, self.log_index)


class StoreReader(Protocol):
    """Read-only access to the canonical log, checkpoints, devices, blocks and events."""

    # --- the log ---------------------------------------------------------------------

    def size(self) -> int:
        """Number of log entries (may be ahead of the latest checkpoint)."""

    def read_hashes(self, positions: Sequence[int]) -> Sequence[bytes]:
        """Stored hashes at `positions` (edgeledger.core.merkle.stored_index), in order.

        A missing position is left out (the Merkle code then reports the store as
        incomplete); one batch, one round trip.
        """

    def entry(self, index: int) -> bytes:
        """The entry (a block's COSE_Sign1 bytes) at log `index`; EdgeLedgerError if absent."""

    # --- checkpoints -----------------------------------------------------------------

    def last_checkpoint(self) -> str | None:
        """The latest signed checkpoint note, if any."""

    def checkpoint(self, height: int) -> str | None:
        """The signed checkpoint note at canonical `height`, if any."""

    # --- devices and blocks ----------------------------------------------------------

    def device(self, dev: str) -> Device | None:
        """The record of `dev`, if it was ever enrolled (revoked devices included)."""

    def devices(self, after: str = "", limit: int | None = None) -> list[Device]:
        """Devices with an id greater than `after`, by id; at most `limit` (None: all)."""

    def keys(self, dev: str) -> list[DeviceKey]:
        """Every key `dev` has had, oldest first (empty if it was never enrolled)."""

    def block(self, dev: str, height: int) -> tuple[bytes, int] | None:
        """(block hash, log index) of accepted block `dev`/`height`, if any."""

    def readings(self, log_index: int) -> bytes | None:
        """The CBOR array of the readings' bytes of the block at `log_index`, if stored."""

    def blocks_by_time(self, dev: str | None, since: int, until: int,
                       start: tuple[int, int] | None, limit: int) -> list[BlockSpan]:
        """Blocks with stored, non-empty readings whose [t0, t1] overlaps [since, until].

        Only `dev`'s blocks, or every device's when `dev` is None. Ordered by
        (t0, log_index), from `start` (inclusive; None: the beginning), at most
        `limit`. Must not scan: SqliteStore indexes (t0, log_index) per class of
        block duration, so a long block (a clock jump) is still found cheaply.
        """

    # --- the journal -------------------------------------------------------------------

    def events(self, after: int = 0, limit: int = 100, kind: str | None = None,
               dev: str | None = None) -> list[Event]:
        """Up to `limit` events with id greater than `after`, oldest first, optionally
        only of `kind` and/or about device `dev`."""

    def close(self) -> None:
        """Release the connection."""
