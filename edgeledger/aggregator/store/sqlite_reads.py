"""The SQLite store's read queries for the HTTP API, and the schema version 3 they need.

Theory of operation: finding readings by time without a row per reading.
Readings stay one CBOR array per block (ingest writes one row per block, which is
where its throughput comes from). Schema version 3 adds to each `blocks` row the
block's reading time range `t0`, `t1` and its duration class `span`: the bit length
of t1 - t0, so that t1 - t0 < 2**span. Blocks with no stored readings (heartbeats,
and blocks appended under schema version 1) have NULLs there and are never found.

A block overlaps [since, until] when t0 <= until and t1 >= since. One index on t0
cannot answer that (t1 is unbounded), but within one duration class it can: a
block of class L with t1 >= since has t0 > since - 2**L. So `blocks_by_time` runs one
bounded index range scan per class present (at most 65, usually one or two; a clock
jump inside a block puts it in a high class of its own), each ordered by
(t0, log_index) and limited, and merges them. Cost: O(classes * (log n + limit)),
whatever the store's size and however far back `since` is.

The cost on ingest is two index entries per block (blocks by (dev, span, t0) and by
(span, t0)) and, for the events filters, two per event.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterator
from typing import Any

import cbor2

from edgeledger.aggregator.store.reader import BlockSpan, Device, DeviceKey, Event

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
MAX_SPAN_CLASS = 64

V3_COLUMNS = ("t0", "t1", "span")
V3_INDEXES = """
CREATE INDEX IF NOT EXISTS blocks_dev_time ON blocks (dev, span, t0, log_index)
    WHERE span IS NOT NULL;
CREATE INDEX IF NOT EXISTS blocks_time ON blocks (span, t0, log_index) WHERE span IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, id);
CREATE INDEX IF NOT EXISTS events_dev ON events (dev, id);
"""
V3_SQL = "".join(f"ALTER TABLE blocks ADD COLUMN {c} INTEGER;\n" for c in V3_COLUMNS) + V3_INDEXES
"""Schema version 2 -> 3 for a new file: reading time ranges on blocks, event filters."""

DEVICE_COLUMNS = "dev, public_key, enrolled_ms, revoked_ms, flagged_ms, next_height, prev"


def span_class(t0: int, t1: int) -> int:
    """The duration class of a block whose readings span [t0, t1]: t1 - t0 < 2**class."""
    return (t1 - t0).bit_length()


def entry_times(entry: bytes) -> tuple[int, int]:
    """(t0, t1) from an accepted block's COSE_Sign1 bytes (already verified by ingest)."""
    payload = cbor2.loads(cbor2.loads(entry).value[2])
    return int(payload["t0"]), int(payload["t1"])


def migrate_v3(db: sqlite3.Connection) -> int:
    """Schema version 2 -> 3 inside the caller's transaction: add the columns (those
    missing), the indexes, and back-fill t0/t1/span of every block with stored,
    non-empty readings, in log order, in chunks; the number of blocks filled."""
    have = {row[1] for row in db.execute("PRAGMA table_info(blocks)")}
    for column in V3_COLUMNS:
        if column not in have:
            db.execute(f"ALTER TABLE blocks ADD COLUMN {column} INTEGER")
    for statement in V3_INDEXES.split(";"):
        if statement.strip():
            db.execute(statement)
    filled, after = 0, -1
    while True:
        rows = db.execute(
            "SELECT e.idx, e.data FROM entries e JOIN readings r ON r.log_index = e.idx "
            "WHERE e.idx > ? AND r.data != X'80' ORDER BY e.idx LIMIT 1000", (after,)
        ).fetchall()
        if not rows:
            return filled
        updates = []
        for idx, data in rows:
            t0, t1 = entry_times(bytes(data))
            updates.append((t0, t1, span_class(t0, t1), idx))
        db.executemany("UPDATE blocks SET t0 = ?, t1 = ?, span = ? WHERE log_index = ?",
                       updates)
        filled += len(updates)
        after = rows[-1][0]


class SqliteReads:
    """The StoreReader queries that go beyond single-row lookups (mixed into SqliteStore)."""

    _db: sqlite3.Connection

    def keys(self, dev: str) -> list[DeviceKey]:
        """Every key `dev` has had, oldest first (empty if it was never enrolled)."""
        return [DeviceKey(bytes(k), int(h), int(t)) for h, k, t in self._db.execute(
            "SELECT from_height, public_key, enrolled_ms FROM device_keys WHERE dev = ? "
            "ORDER BY from_height", (dev,))]

    def devices(self, after: str = "", limit: int | None = None) -> list[Device]:
        """Devices with an id greater than `after`, by id; at most `limit` (None: all)."""
        return [device_from_row(r) for r in self._db.execute(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE dev > ? ORDER BY dev LIMIT ?",
            (after, -1 if limit is None else limit))]

    def events(self, after: int = 0, limit: int = 100, kind: str | None = None,
               dev: str | None = None) -> list[Event]:
        """Up to `limit` events with id greater than `after`, oldest first, optionally
        only of `kind` and/or about device `dev` (indexed: (kind, id) and (dev, id))."""
        where, args = ["id > ?"], [after]
        for column, value in (("kind", kind), ("dev", dev)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)  # type: ignore[arg-type]
        return [Event(*row) for row in self._db.execute(
            "SELECT id, time_ms, kind, dev, height, reason FROM events WHERE "
            f"{' AND '.join(where)} ORDER BY id LIMIT ?", (*args, limit))]

    def blocks_by_time(self, dev: str | None, since: int, until: int,
                       start: tuple[int, int] | None, limit: int) -> list[BlockSpan]:
        """Blocks with stored readings overlapping [since, until], by (t0, log_index),
        from `start` (inclusive), at most `limit`: see the module doc."""
        if since > until or limit <= 0:
            return []
        first = (INT64_MIN, -1) if start is None else start
        arms = [self._class_scan(dev, level, since, until, first, limit)
                for level in self._span_classes(dev)]
        merged = heapq.merge(*arms, key=lambda b: b.key)
        return [b for _, b in zip(range(limit), merged, strict=False)]

    def _class_scan(self, dev: str | None, level: int, since: int, until: int,
                    first: tuple[int, int], limit: int) -> Iterator[BlockSpan]:
        """One duration class: an index range scan on t0, filtered exactly on t1."""
        low = max(INT64_MIN, since - (1 << level) + 1, first[0])
        scope, args = ("dev = ? AND ", [dev]) if dev is not None else ("", [])
        rows = self._db.execute(
            "SELECT dev, height, hash, log_index, t0, t1 FROM blocks "
            f"WHERE {scope}span = ? AND t0 >= ? AND t0 <= ? AND (t0, log_index) >= (?, ?) "
            "AND t1 >= ? ORDER BY t0, log_index LIMIT ?",
            (*args, level, low, until, first[0], first[1], since, limit)).fetchall()
        for d, h, block_hash, idx, t0, t1 in rows:
            yield BlockSpan(d, h, bytes(block_hash), idx, t0, t1)

    def _span_classes(self, dev: str | None) -> list[int]:
        """The duration classes present (for `dev`, or all), one index seek each."""
        scope, args = ("dev = ? AND ", [dev]) if dev is not None else ("", [])
        found: list[int] = []
        while True:
            row = self._db.execute(
                f"SELECT span FROM blocks WHERE {scope}span > ? ORDER BY span LIMIT 1",
                (*args, found[-1] if found else -1)).fetchone()
            if row is None:
                return found
            found.append(int(row[0]))


def device_from_row(row: Any) -> Device:
    """A Device from a row of DEVICE_COLUMNS."""
    dev, key, enrolled, revoked, flagged, next_height, prev = row
    return Device(dev, bytes(key), enrolled, revoked, flagged, next_height, bytes(prev))
