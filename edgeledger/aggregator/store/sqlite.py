"""The aggregator's durable store in one SQLite file: the canonical log and what ingest knows.

Theory of operation. The file holds the log (entries and the stored subtree hashes
of edgeledger.core.merkle, one row per position), the checkpoint chain, the enrolled
devices with their tips, the accepted blocks, equivocation evidence and an event
journal. It runs in WAL mode with `synchronous=FULL`, so a COMMIT that returned is
on disk: an ack may be sent after it, never before.

Atomicity. Every write method runs in a transaction. `transaction()` opens one that
the write methods join, so the caller decides what is all-or-nothing:

    with store.transaction():              # one accepted block, all or nothing
        index = log.append(block.cose)     # entry + its new stored hashes
        store.record_block(dev, h, block.hash, index)   # block row + device tip

The batch API is `append_blocks` (or the same `with` around several blocks): one
COMMIT, one fsync, for all of them, which is where the throughput comes from. The
acks of a batch are sent after the `with` ends. If anything inside raises, the
whole transaction rolls back and the file is as it was before the `with`.

One process writes (the sequencer); SQLite's lock makes a second writer wait
`busy_timeout`, then fail, rather than interleave.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeledger.aggregator.log import CanonicalLog
from edgeledger.core import merkle
from edgeledger.core.checkpoint import ZERO_HASH, Checkpoint
from edgeledger.core.errors import ConfigError, EdgeLedgerError

APPLICATION_ID = 0x45444C47
"""`PRAGMA application_id` of our files: "EDLG"."""
SCHEMA_VERSION = 2
"""`PRAGMA user_version` this code writes; older files are migrated, newer refused."""

_SCHEMA = """
CREATE TABLE entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE hashes (pos INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE checkpoints (height INTEGER PRIMARY KEY, size INTEGER NOT NULL,
                          note TEXT NOT NULL);
CREATE TABLE devices (dev TEXT PRIMARY KEY, public_key BLOB NOT NULL,
                      enrolled_ms INTEGER NOT NULL, revoked_ms INTEGER,
                      flagged_ms INTEGER,
                      next_height INTEGER NOT NULL DEFAULT 0, prev BLOB NOT NULL);
CREATE TABLE blocks (dev TEXT NOT NULL REFERENCES devices(dev),
                     height INTEGER NOT NULL, hash BLOB NOT NULL,
                     log_index INTEGER NOT NULL UNIQUE REFERENCES entries(idx),
                     PRIMARY KEY (dev, height)) WITHOUT ROWID;
CREATE TABLE equivocations (id INTEGER PRIMARY KEY AUTOINCREMENT,
                            dev TEXT NOT NULL REFERENCES devices(dev),
                            height INTEGER NOT NULL, hash BLOB NOT NULL,
                            block BLOB NOT NULL, time_ms INTEGER NOT NULL,
                            UNIQUE (dev, height, hash));
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, time_ms INTEGER NOT NULL,
                     kind TEXT NOT NULL, dev TEXT, height INTEGER, reason TEXT NOT NULL);
""" + """
CREATE TABLE readings (log_index INTEGER PRIMARY KEY REFERENCES entries(idx),
                       data BLOB NOT NULL);
CREATE TABLE sensors (dev TEXT NOT NULL REFERENCES devices(dev), sensor TEXT NOT NULL,
                      last_q INTEGER NOT NULL, PRIMARY KEY (dev, sensor)) WITHOUT ROWID;
"""
_MIGRATIONS = {1: _SCHEMA[_SCHEMA.index("CREATE TABLE readings"):]}
"""From user_version N to N + 1: version 2 keeps blocks' readings and each sensor's last q
(blocks appended under version 1 have no readings stored)."""


@dataclass(frozen=True)
class AcceptedBlock:
    """A verified block ready to enter the log: `entry` is its COSE_Sign1 bytes.

    `readings` is the CBOR array of its readings' bytes, as the sync message carried
    them; `last_q` each of its sensors' last q, (sensor, q) pairs.
    """

    dev: str
    height: int
    hash: bytes
    entry: bytes
    readings: bytes = b"\x80"
    last_q: tuple[tuple[str, int], ...] = ()


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
class Equivocation:
    """Evidence: `block` and the accepted block at `log_index` share a height."""

    dev: str
    height: int
    log_index: int
    block: bytes
    time_ms: int


@dataclass(frozen=True)
class Event:
    """One journal entry (rejection, gap, equivocation, skew, ...); `id` is the cursor."""

    id: int
    time_ms: int
    kind: str
    dev: str | None
    height: int | None
    reason: str


class SqliteStore:
    """A LogStore (edgeledger.aggregator.log) plus devices, blocks, evidence and events."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 5.0) -> None:
        self.path = str(path)
        self._depth = 0
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigError(self.path, None, f"cannot open the SQLite store: {exc}") from exc
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ConfigError(self.path, None, f"not an EdgeLedger store ({exc})") from exc
        except EdgeLedgerError:
            self._db.close()
            raise

    def _open(self) -> None:
        """Check the file is ours and current, set durability, create the schema if new."""
        app_id = self._db.execute("PRAGMA application_id").fetchone()[0]
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        tables = self._db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        if app_id != APPLICATION_ID and (tables or version):
            raise ConfigError(self.path, None, f"not an EdgeLedger store (application_id "
                                               f"{app_id:#x}, {tables} schema objects)")
        if version > SCHEMA_VERSION:
            raise ConfigError(self.path, None, f"store schema version {version} is newer than "
                                               f"this program's {SCHEMA_VERSION}; upgrade it")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        if version == 0:
            self._db.executescript("BEGIN IMMEDIATE;" + _SCHEMA +
                                   f"PRAGMA application_id={APPLICATION_ID};"
                                   f"PRAGMA user_version={SCHEMA_VERSION};"
                                   "COMMIT;")
            version = SCHEMA_VERSION
        for old in range(version, SCHEMA_VERSION):
            self._db.executescript("BEGIN IMMEDIATE;" + _MIGRATIONS[old] +
                                   f"PRAGMA user_version={old + 1};COMMIT;")
        self._max_vars = self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)

    def close(self) -> None:
        """Close the connection (uncommitted work is rolled back)."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside are committed together, or rolled back if anything raises.

        Nested uses join the outermost one. The COMMIT is durable when this returns.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        self._db.execute("COMMIT")

    # --- the log (LogStore) --------------------------------------------------------------

    def size(self) -> int:
        """Number of entries."""
        row = self._db.execute("SELECT max(idx) FROM entries").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def read_hashes(self, positions: Sequence[int]) -> list[bytes]:
        """Stored hashes at `positions`, in order, in one query (per SQLite variable limit).

        A missing position is left out, so the Merkle code sees a short answer and
        reports the store as incomplete.
        """
        found: dict[int, bytes] = {}
        unique = list(dict.fromkeys(positions))
        for at in range(0, len(unique), self._max_vars):
            chunk = unique[at:at + self._max_vars]
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(
                f"SELECT pos, hash FROM hashes WHERE pos IN ({marks})", chunk))
        return [found[p] for p in positions if p in found]

    def append(self, entry: bytes, hashes: Sequence[bytes]) -> int:
        """Add one entry and its new stored hashes (from position `stored_count(size)`)."""
        if not hashes:
            raise EdgeLedgerError(f"store {self.path}: an append stores at least the leaf hash")
        with self.transaction():
            index = self.size()
            first = merkle.stored_count(index)
            self._db.execute("INSERT INTO entries (idx, data) VALUES (?, ?)", (index, entry))
            rows = [v for i, h in enumerate(hashes) for v in (first + i, h)]
            self._db.execute("INSERT INTO hashes (pos, hash) VALUES " +
                             ",".join(["(?, ?)"] * len(hashes)), rows)
        return index

    def entry(self, index: int) -> bytes:
        """The entry at `index`."""
        row = self._db.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise EdgeLedgerError(f"store {self.path}: no log entry {index} "
                                  f"(size {self.size()})")
        return bytes(row[0])

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """Entries from `start` up to `stop` (the end by default), in log order."""
        end = self.size() if stop is None else stop
        for (data,) in self._db.execute("SELECT data FROM entries WHERE idx >= ? AND idx < ? "
                                        "ORDER BY idx", (start, end)):
            yield bytes(data)

    def last_checkpoint(self) -> str | None:
        """The latest signed checkpoint note, if any."""
        row = self._db.execute("SELECT note FROM checkpoints ORDER BY height DESC LIMIT 1"
                               ).fetchone()
        return None if row is None else str(row[0])

    def checkpoint(self, height: int) -> str | None:
        """The signed checkpoint note at canonical `height`, if any."""
        row = self._db.execute("SELECT note FROM checkpoints WHERE height = ?",
                               (height,)).fetchone()
        return None if row is None else str(row[0])

    def add_checkpoint(self, note: str) -> None:
        """Record a newly signed checkpoint note (its height must be new)."""
        cp = Checkpoint.parse(note[:note.rfind("\n\n") + 1])
        with self.transaction():
            self._db.execute("INSERT INTO checkpoints (height, size, note) VALUES (?, ?, ?)",
                             (cp.height, cp.size, note))

    # --- devices and blocks --------------------------------------------------------------

    def enroll(self, dev: str, public_key: bytes, now_ms: int) -> None:
        """Enroll `dev` with `public_key`; re-enrolling keeps its tip and history."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO devices (dev, public_key, enrolled_ms, prev) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (dev) DO UPDATE SET public_key = excluded.public_key, "
                "enrolled_ms = excluded.enrolled_ms, revoked_ms = NULL",
                (dev, public_key, now_ms, ZERO_HASH))

    def revoke(self, dev: str, now_ms: int) -> None:
        """Stop accepting blocks from `dev`; its history stays."""
        with self.transaction():
            self._update_one("UPDATE devices SET revoked_ms = ? WHERE dev = ?",
                             (now_ms, dev), f"revoke {dev}: not enrolled")

    def device(self, dev: str) -> Device | None:
        """The stored record of `dev`, if enrolled."""
        row = self._db.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE dev = ?",
                               (dev,)).fetchone()
        return None if row is None else _device(row)

    def devices(self) -> list[Device]:
        """Every enrolled (or revoked) device, by id."""
        return [_device(r) for r in
                self._db.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY dev")]

    def record_block(self, dev: str, height: int, block_hash: bytes, log_index: int) -> None:
        """Record accepted block `dev`/`height` at `log_index` and move the device's tip.

        Refuses a height that is not the device's next, and a revoked device, so the
        durable state keeps each device's blocks gap-free and in order.
        """
        with self.transaction():
            self._update_one(
                "UPDATE devices SET next_height = ? + 1, prev = ? "
                "WHERE dev = ? AND next_height = ? AND revoked_ms IS NULL",
                (height, block_hash, dev, height),
                f"block {dev}/{height}: the device is not enrolled, is revoked, "
                "or that is not its next height")
            self._db.execute("INSERT INTO blocks (dev, height, hash, log_index) "
                             "VALUES (?, ?, ?, ?)", (dev, height, block_hash, log_index))

    def append_blocks(self, log: CanonicalLog, blocks: Sequence[AcceptedBlock]) -> list[int]:
        """Append verified blocks to `log` (which must be on this store) in one transaction.

        The batch API: entries, hashes, block rows and tips of all `blocks` are
        committed together (one fsync) or not at all. Return their log indexes; ack
        only after this returns.
        """
        if log.store is not self:
            raise EdgeLedgerError(f"store {self.path}: append_blocks got a log on another store")
        with self.transaction():
            indexes = []
            for b in blocks:
                indexes.append(log.append(b.entry))
                self.record_block(b.dev, b.height, b.hash, indexes[-1])
            self._db.executemany("INSERT INTO readings (log_index, data) VALUES (?, ?)",
                                 [(i, b.readings) for i, b in zip(indexes, blocks, strict=True)])
            self._db.executemany(
                "INSERT INTO sensors (dev, sensor, last_q) VALUES (?, ?, ?) ON CONFLICT "
                "(dev, sensor) DO UPDATE SET last_q = excluded.last_q",
                [(b.dev, sensor, q) for b in blocks for sensor, q in b.last_q])
        return indexes

    def last_q(self, dev: str, sensor: str) -> int | None:
        """The last q of `dev`'s sensor `sensor` in the log, if it has any reading there."""
        row = self._db.execute("SELECT last_q FROM sensors WHERE dev = ? AND sensor = ?",
                               (dev, sensor)).fetchone()
        return None if row is None else int(row[0])

    def readings(self, log_index: int) -> bytes | None:
        """The CBOR array of the readings of the block at `log_index`, if stored."""
        row = self._db.execute("SELECT data FROM readings WHERE log_index = ?",
                               (log_index,)).fetchone()
        return None if row is None else bytes(row[0])

    def block(self, dev: str, height: int) -> tuple[bytes, int] | None:
        """(block hash, log index) of accepted block `dev`/`height`, if any."""
        row = self._db.execute("SELECT hash, log_index FROM blocks WHERE dev = ? AND height = ?",
                               (dev, height)).fetchone()
        return None if row is None else (bytes(row[0]), int(row[1]))

    def blocks(self, dev: str) -> list[tuple[int, bytes, int]]:
        """(height, block hash, log index) of every accepted block of `dev`, by height."""
        return [(int(h), bytes(b), int(i)) for h, b, i in self._db.execute(
            "SELECT height, hash, log_index FROM blocks WHERE dev = ? ORDER BY height", (dev,))]

    # --- evidence and events -------------------------------------------------------------

    def add_equivocation(self, dev: str, height: int, block_hash: bytes, block: bytes,
                         now_ms: int) -> bool:
        """Keep `block`, a second block at an accepted height, and flag the device.

        The accepted block stays in the log; return False if this one was already kept.
        """
        with self.transaction():
            cur = self._db.execute(
                "INSERT OR IGNORE INTO equivocations (dev, height, hash, block, time_ms) "
                "VALUES (?, ?, ?, ?, ?)", (dev, height, block_hash, block, now_ms))
            self._db.execute("UPDATE devices SET flagged_ms = coalesce(flagged_ms, ?) "
                             "WHERE dev = ?", (now_ms, dev))
        return cur.rowcount == 1

    def equivocations(self, dev: str) -> list[Equivocation]:
        """The evidence kept against `dev`: each with the log index of the block it contradicts."""
        return [Equivocation(dev, int(h), int(i), bytes(b), int(t)) for h, i, b, t in
                self._db.execute(
                    "SELECT e.height, b.log_index, e.block, e.time_ms FROM equivocations e "
                    "JOIN blocks b ON b.dev = e.dev AND b.height = e.height "
                    "WHERE e.dev = ? ORDER BY e.id", (dev,))]

    def add_event(self, kind: str, dev: str | None, height: int | None, reason: str,
                  now_ms: int) -> int:
        """Journal one event; return its id (the cursor `events` resumes after)."""
        with self.transaction():
            cur = self._db.execute("INSERT INTO events (time_ms, kind, dev, height, reason) "
                                   "VALUES (?, ?, ?, ?, ?)", (now_ms, kind, dev, height, reason))
        return int(cur.lastrowid or 0)

    def events(self, after: int = 0, limit: int = 100) -> list[Event]:
        """Up to `limit` events with id greater than `after`, oldest first."""
        return [Event(*row) for row in self._db.execute(
            "SELECT id, time_ms, kind, dev, height, reason FROM events WHERE id > ? "
            "ORDER BY id LIMIT ?", (after, limit))]

    def last_event_id(self) -> int:
        """The id of the newest event (0 when there is none): a cursor for `events`."""
        row = self._db.execute("SELECT max(id) FROM events").fetchone()
        return 0 if row[0] is None else int(row[0])

    def _update_one(self, sql: str, args: tuple[object, ...], failure: str) -> None:
        if self._db.execute(sql, args).rowcount != 1:
            raise EdgeLedgerError(f"store {self.path}: {failure}")


_DEVICE_COLUMNS = "dev, public_key, enrolled_ms, revoked_ms, flagged_ms, next_height, prev"


def _device(row: Any) -> Device:
    dev, key, enrolled, revoked, flagged, next_height, prev = row
    return Device(dev, bytes(key), enrolled, revoked, flagged, next_height, bytes(prev))
