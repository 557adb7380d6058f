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
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.store.reader import BlockSpan, Device, Event
from edgeledger.aggregator.store.sqlite_reads import (
    DEVICE_COLUMNS,
    V3_SQL,
    SqliteReads,
    device_from_row,
    entry_times,
    migrate_v3,
    span_class,
)
from edgeledger.core import merkle
from edgeledger.core.checkpoint import ZERO_HASH, Checkpoint
from edgeledger.core.droprecord import DropRecord
from edgeledger.core.errors import ConfigError, EdgeLedgerError

APPLICATION_ID = 0x45444C47
"""`PRAGMA application_id` of our files: "EDLG"."""
MAX_CACHED_HASHES = 1 << 16
"""Stored hashes kept in memory (32 bytes each, plus dict overhead: a few MB)."""
SCHEMA_VERSION = 5
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
(blocks appended under version 1 have no readings stored); version 3 keeps each block's
reading time range, back-filled from the entries (store/sqlite_reads.py); version 4
keeps the DROP records devices forwarded (heights their disk quota dropped); version 5
keeps every key a device has had and the height it signs from (key rotations), so
blocks signed before a rotation stay provable (a store migrated from version 4
knows only each device's current key, as from height 0)."""
_SCHEMA += V3_SQL
_V4_SQL = """
CREATE TABLE drops (id INTEGER PRIMARY KEY AUTOINCREMENT,
                    dev TEXT NOT NULL REFERENCES devices(dev), h0 INTEGER NOT NULL,
                    h1 INTEGER NOT NULL, record BLOB NOT NULL, time_ms INTEGER NOT NULL);
"""
_SCHEMA += _V4_SQL
_MIGRATIONS[3] = _V4_SQL
_V5_SQL = """
CREATE TABLE device_keys (dev TEXT NOT NULL REFERENCES devices(dev),
                          from_height INTEGER NOT NULL, public_key BLOB NOT NULL,
                          enrolled_ms INTEGER NOT NULL,
                          PRIMARY KEY (dev, from_height)) WITHOUT ROWID;
"""
_SCHEMA += _V5_SQL
_MIGRATIONS[4] = _V5_SQL + """
INSERT INTO device_keys (dev, from_height, public_key, enrolled_ms)
    SELECT dev, 0, public_key, enrolled_ms FROM devices;
"""


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
    times: tuple[int, int] | None = None
    """(t0, t1) of the block header, if the caller has it; else read from `entry`."""


@dataclass
class _Cache:
    """What the writer knows without asking SQLite: the log size, device records, and
    stored hashes (the right edge of the tree is read on every append). Cleared on a
    rollback and when another connection commits (`PRAGMA data_version`)."""

    data_version: int = -1
    size: int | None = None
    devices: dict[str, Device] = field(default_factory=dict)
    hashes: dict[int, bytes] = field(default_factory=dict)

    def clear(self) -> None:
        self.size = None
        self.devices.clear()
        self.hashes.clear()

    def keep_hashes(self, found: dict[int, bytes]) -> None:
        if len(self.hashes) + len(found) > MAX_CACHED_HASHES:
            self.hashes.clear()  # crude but bounded; the hot ones come back at once
        self.hashes.update(found)


@dataclass(frozen=True)
class Equivocation:
    """Evidence: `block` and the accepted block at `log_index` share a height."""

    dev: str
    height: int
    log_index: int
    block: bytes
    time_ms: int


__all__ = ["AcceptedBlock", "BlockSpan", "Device", "Equivocation", "Event", "SqliteStore"]


class SqliteStore(SqliteReads):
    """A LogStore (edgeledger.aggregator.log) plus devices, blocks, evidence and events.

    Also a StoreReader (store/reader.py). `read_only=True` opens an existing, current
    store for the HTTP API: no schema change, no writes (`query_only`), and a
    connection that may be handed between threads (one user at a time).
    """

    def __init__(self, path: str | Path, busy_timeout_s: float = 5.0,
                 read_only: bool = False) -> None:
        self.path = str(path)
        self._depth = 0
        self._cache = _Cache()
        try:
            if read_only:  # mode=rw: never create a file that is not there
                uri = Path(self.path).absolute().as_uri() + "?mode=rw"
                self._db = sqlite3.connect(uri, timeout=busy_timeout_s, isolation_level=None,
                                           uri=True, check_same_thread=False)
            else:
                self._db = sqlite3.connect(self.path, timeout=busy_timeout_s,
                                           isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigError(self.path, None, f"cannot open the SQLite store: {exc}") from exc
        try:
            self._open_reader() if read_only else self._open()
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
            with self.transaction():
                if old == 2:
                    migrate_v3(self._db)
                else:
                    for statement in _MIGRATIONS[old].split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={old + 1}")
        self._max_vars = self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)

    def _open_reader(self) -> None:
        """Check the file is ours and at this program's schema version; make it read-only."""
        app_id = self._db.execute("PRAGMA application_id").fetchone()[0]
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID or version != SCHEMA_VERSION:
            raise ConfigError(self.path, None, f"not an EdgeLedger store at schema version "
                                               f"{SCHEMA_VERSION} (application_id {app_id:#x}, "
                                               f"version {version}); open it for writing first")
        self._db.execute("PRAGMA query_only=ON")
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
        self._fresh()
        try:
            yield
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            self._cache.clear()
            raise
        self._depth = 0
        self._db.execute("COMMIT")

    # --- the log (LogStore) --------------------------------------------------------------

    def _fresh(self) -> None:
        """Forget the caches if another connection committed since we last looked.

        This process is the log's one writer, but `edgeledger enroll`/`revoke` (and the
        API's reader, for its own caches) see other connections' commits this way.
        """
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._cache.data_version:
            self._cache.clear()
            self._cache.data_version = version

    def size(self) -> int:
        """Number of entries."""
        if not self._depth:
            self._fresh()
        if self._cache.size is None:
            row = self._db.execute("SELECT max(idx) FROM entries").fetchone()
            self._cache.size = 0 if row[0] is None else int(row[0]) + 1
        return self._cache.size

    def read_hashes(self, positions: Sequence[int]) -> list[bytes]:
        """Stored hashes at `positions`, in order, in one query (per SQLite variable limit).

        A missing position is left out, so the Merkle code sees a short answer and
        reports the store as incomplete.
        """
        if not self._depth:
            self._fresh()
        cached = self._cache.hashes
        found = {p: cached[p] for p in positions if p in cached}
        unique = [p for p in dict.fromkeys(positions) if p not in found]
        for at in range(0, len(unique), self._max_vars):
            chunk = unique[at:at + self._max_vars]
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(
                f"SELECT pos, hash FROM hashes WHERE pos IN ({marks})", chunk))
        self._cache.keep_hashes(found)
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
            self._cache.size = index + 1
            self._cache.keep_hashes({first + i: h for i, h in enumerate(hashes)})
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
        """Enroll `dev` with `public_key`; re-enrolling keeps its tip and history.

        A key other than the current one (a rotation) signs from the device's next
        height on; the key history keeps the earlier ones.
        """
        self._cache.devices.pop(dev, None)
        with self.transaction():
            known = self.device(dev)
            self._db.execute(
                "INSERT INTO devices (dev, public_key, enrolled_ms, prev) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (dev) DO UPDATE SET public_key = excluded.public_key, "
                "enrolled_ms = excluded.enrolled_ms, revoked_ms = NULL",
                (dev, public_key, now_ms, ZERO_HASH))
            if known is None or known.public_key != public_key:
                start = 0 if known is None else known.next_height
                self._db.execute("INSERT OR REPLACE INTO device_keys (dev, from_height, "
                                 "public_key, enrolled_ms) VALUES (?, ?, ?, ?)",
                                 (dev, start, public_key, now_ms))
            self._cache.devices.pop(dev, None)

    def revoke(self, dev: str, now_ms: int) -> None:
        """Stop accepting blocks from `dev`; its history stays."""
        self._cache.devices.pop(dev, None)
        with self.transaction():
            self._update_one("UPDATE devices SET revoked_ms = ? WHERE dev = ?",
                             (now_ms, dev), f"revoke {dev}: not enrolled")

    def device(self, dev: str) -> Device | None:
        """The stored record of `dev`, if enrolled."""
        if not self._depth:
            self._fresh()
        if dev in self._cache.devices:
            return self._cache.devices[dev]
        row = self._db.execute(f"SELECT {DEVICE_COLUMNS} FROM devices WHERE dev = ?",
                               (dev,)).fetchone()
        device = None if row is None else device_from_row(row)
        if device is not None:
            self._cache.devices[dev] = device
        return device

    def record_block(self, dev: str, height: int, block_hash: bytes, log_index: int,
                     times: tuple[int, int] | None = None) -> None:
        """Record accepted block `dev`/`height` at `log_index` and move the device's tip.

        Refuses a height that is not the device's next, and a revoked device, so the
        durable state keeps each device's blocks gap-free and in order. `times` is
        (t0, t1) of its stored readings (None: none stored; `blocks_by_time` skips it).
        """
        with self.transaction():
            self._update_one(
                "UPDATE devices SET next_height = ? + 1, prev = ? "
                "WHERE dev = ? AND next_height = ? AND revoked_ms IS NULL",
                (height, block_hash, dev, height),
                f"block {dev}/{height}: the device is not enrolled, is revoked, "
                "or that is not its next height")
            known = self._cache.devices.get(dev)
            if known is not None:
                self._cache.devices[dev] = replace(known, next_height=height + 1,
                                                   prev=block_hash)
            t0, t1 = times or (None, None)
            span = None if times is None else span_class(*times)
            self._db.execute("INSERT INTO blocks (dev, height, hash, log_index, t0, t1, span) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (dev, height, block_hash, log_index, t0, t1, span))

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
                self.record_block(b.dev, b.height, b.hash, indexes[-1], _times(b))
            self._db.executemany("INSERT INTO readings (log_index, data) VALUES (?, ?)",
                                 [(i, b.readings) for i, b in zip(indexes, blocks, strict=True)])
            self._db.executemany(
                "INSERT INTO sensors (dev, sensor, last_q) VALUES (?, ?, ?) ON CONFLICT "
                "(dev, sensor) DO UPDATE SET last_q = excluded.last_q",
                [(b.dev, sensor, q) for b in blocks for sensor, q in b.last_q])
        return indexes

    def apply_drop(self, dev: str, record: DropRecord, payload: bytes, now_ms: int) -> None:
        """Move `dev` past the heights `record` drops and keep the signed record.

        Refuses a device whose next height the record does not cover, so the stored
        chain of each device only ever moves forward, and only with a record.
        """
        self._cache.devices.pop(dev, None)
        with self.transaction():
            self._update_one(
                "UPDATE devices SET next_height = ? + 1, prev = ? WHERE dev = ? AND "
                "next_height BETWEEN ? AND ? AND revoked_ms IS NULL",
                (record.h1, record.last, dev, record.h0, record.h1),
                f"drop record {dev}/{record.h0}..{record.h1}: the device is not enrolled, "
                "is revoked, or the record does not cover its next height")
            self._db.execute("INSERT INTO drops (dev, h0, h1, record, time_ms) "
                             "VALUES (?, ?, ?, ?, ?)", (dev, record.h0, record.h1, payload,
                                                        now_ms))

    def drops(self, dev: str) -> list[tuple[int, int, bytes]]:
        """(h0, h1, signed DROP record) of every drop `dev` forwarded, oldest first."""
        return [(int(a), int(b), bytes(r)) for a, b, r in self._db.execute(
            "SELECT h0, h1, record FROM drops WHERE dev = ? ORDER BY id", (dev,))]

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
        self._cache.devices.pop(dev, None)  # it gets flagged
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

    def last_event_id(self) -> int:
        """The id of the newest event (0 when there is none): a cursor for `events`."""
        row = self._db.execute("SELECT max(id) FROM events").fetchone()
        return 0 if row[0] is None else int(row[0])

    def _update_one(self, sql: str, args: tuple[object, ...], failure: str) -> None:
        if self._db.execute(sql, args).rowcount != 1:
            raise EdgeLedgerError(f"store {self.path}: {failure}")


def _times(block: AcceptedBlock) -> tuple[int, int] | None:
    """(t0, t1) of a block's stored readings, or None when it has none (a heartbeat)."""
    if block.readings == b"\x80":
        return None
    if block.times is not None:
        return block.times
    return entry_times(block.entry)
