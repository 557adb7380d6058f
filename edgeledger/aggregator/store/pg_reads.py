"""The PostgreSQL store's reads: the StoreReader queries (reader.py) and the other lookups.

The same queries as the SQLite store (store/sqlite.py, store/sqlite_reads.py), in
PostgreSQL's dialect, with the same cost rules: index lookups and bounded range
scans, nothing that scans a table. `blocks_by_time` uses the same duration
classes as SQLite (see sqlite_reads.py's module doc): per class present, one
range scan on (span, t0, log_index), merged.

Each call is one statement in autocommit mode, so it sees one committed state.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from edgeledger.aggregator.store.reader import BlockSpan, Device, DeviceKey, Event
from edgeledger.aggregator.store.sqlite import AcceptedBlock, Equivocation
from edgeledger.aggregator.store.sqlite_reads import (
    DEVICE_COLUMNS,
    INT64_MIN,
    device_from_row,
    entry_times,
)
from edgeledger.core.errors import EdgeLedgerError


def block_times(block: AcceptedBlock) -> tuple[int, int] | None:
    """(t0, t1) of a block's stored readings, or None when it has none (a heartbeat)."""
    if block.readings == b"\x80":
        return None
    return block.times if block.times is not None else entry_times(block.entry)


class PgReads:
    """Read queries, mixed into PostgresStore (which provides `q` and `where`)."""

    where: str

    def q(self, query: str, args: Sequence[Any] | dict[str, Any] = ()) -> psycopg.Cursor[Any]:
        """Run one statement (PostgresStore's)."""
        raise NotImplementedError

    def one(self, query: str, args: Sequence[Any] = ()) -> tuple[Any, ...]:
        """The one row a statement returns (an aggregate, a locked row)."""
        row = self.q(query, args).fetchone()
        if row is None:
            raise EdgeLedgerError(f"store {self.where}: no row from {query[:60]!r}")
        return tuple(row)

    def entry(self, index: int) -> bytes:
        """The entry at `index`; EdgeLedgerError if absent."""
        row = self.q("SELECT data FROM entries WHERE idx = %s", (index,)).fetchone()
        if row is None:
            size = self.one("SELECT size FROM log_head")[0]
            raise EdgeLedgerError(f"store {self.where}: no log entry {index} (size {size})")
        return bytes(row[0])

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """Entries from `start` up to `stop` (the end by default), in log order, in pages."""
        while True:
            rows = self.q("SELECT idx, data FROM entries WHERE idx >= %s AND idx < %s "
                          "ORDER BY idx LIMIT 1000",
                          (start, (1 << 63) - 1 if stop is None else stop)).fetchall()
            for _, data in rows:
                yield bytes(data)
            if len(rows) < 1000:
                return
            start = rows[-1][0] + 1

    def last_checkpoint(self) -> str | None:
        """The latest signed checkpoint note, if any."""
        row = self.q("SELECT note FROM checkpoints ORDER BY height DESC LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def checkpoint(self, height: int) -> str | None:
        """The signed checkpoint note at canonical `height`, if any."""
        row = self.q("SELECT note FROM checkpoints WHERE height = %s", (height,)).fetchone()
        return None if row is None else str(row[0])

    def devices(self, after: str = "", limit: int | None = None) -> list[Device]:
        """Devices with an id greater than `after`, by id; at most `limit` (None: all)."""
        return [device_from_row(r) for r in self.q(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE dev > %s ORDER BY dev LIMIT %s",
            (after, limit))]

    def keys(self, dev: str) -> list[DeviceKey]:
        """Every key `dev` has had, oldest first (empty if it was never enrolled)."""
        return [DeviceKey(bytes(k), int(h), int(t)) for h, k, t in self.q(
            "SELECT from_height, public_key, enrolled_ms FROM device_keys WHERE dev = %s "
            "ORDER BY from_height", (dev,))]

    def block(self, dev: str, height: int) -> tuple[bytes, int] | None:
        """(block hash, log index) of accepted block `dev`/`height`, if any."""
        row = self.q("SELECT hash, log_index FROM blocks WHERE dev = %s AND height = %s",
                     (dev, height)).fetchone()
        return None if row is None else (bytes(row[0]), int(row[1]))

    def blocks(self, dev: str) -> list[tuple[int, bytes, int]]:
        """(height, block hash, log index) of every accepted block of `dev`, by height."""
        return [(int(h), bytes(b), int(i)) for h, b, i in self.q(
            "SELECT height, hash, log_index FROM blocks WHERE dev = %s ORDER BY height", (dev,))]

    def readings(self, log_index: int) -> bytes | None:
        """The CBOR array of the readings of the block at `log_index`, if stored."""
        row = self.q("SELECT data FROM readings WHERE log_index = %s", (log_index,)).fetchone()
        return None if row is None else bytes(row[0])

    def last_q(self, dev: str, sensor: str) -> int | None:
        """The last q of `dev`'s sensor `sensor` in the log, if it has any reading there."""
        row = self.q("SELECT last_q FROM sensors WHERE dev = %s AND sensor = %s",
                     (dev, sensor)).fetchone()
        return None if row is None else int(row[0])

    def drops(self, dev: str) -> list[tuple[int, int, bytes]]:
        """(h0, h1, signed DROP record) of every drop `dev` forwarded, oldest first."""
        return [(int(a), int(b), bytes(r)) for a, b, r in self.q(
            "SELECT h0, h1, record FROM drops WHERE dev = %s ORDER BY id", (dev,))]

    def equivocations(self, dev: str) -> list[Equivocation]:
        """The evidence kept against `dev`, each with the log index of the block it contradicts."""
        return [Equivocation(dev, int(h), int(i), bytes(b), int(t)) for h, i, b, t in self.q(
            "SELECT e.height, b.log_index, e.block, e.time_ms FROM equivocations e "
            "JOIN blocks b ON b.dev = e.dev AND b.height = e.height "
            "WHERE e.dev = %s ORDER BY e.id", (dev,))]

    def events(self, after: int = 0, limit: int = 100, kind: str | None = None,
               dev: str | None = None) -> list[Event]:
        """Up to `limit` events with id greater than `after`, oldest first, optionally
        only of `kind` and/or about device `dev` (indexed: (kind, id) and (dev, id))."""
        where, args = ["id > %s"], [after]
        for column, value in (("kind", kind), ("dev", dev)):
            if value is not None:
                where.append(f"{column} = %s")
                args.append(value)  # type: ignore[arg-type]
        return [Event(*row) for row in self.q(
            "SELECT id, time_ms, kind, dev, height, reason FROM events WHERE "
            f"{' AND '.join(where)} ORDER BY id LIMIT %s", (*args, limit))]

    def last_event_id(self) -> int:
        """The id of the newest event (0 when there is none): a cursor for `events`."""
        row = self.one("SELECT max(id) FROM events")
        return 0 if row[0] is None else int(row[0])

    def blocks_by_time(self, dev: str | None, since: int, until: int,
                       start: tuple[int, int] | None, limit: int) -> list[BlockSpan]:
        """Blocks with stored readings overlapping [since, until], by (t0, log_index),
        from `start` (inclusive), at most `limit` (see the module doc)."""
        if since > until or limit <= 0:
            return []
        first = (INT64_MIN, -1) if start is None else start
        arms = [self._class_scan(dev, level, since, until, first, limit)
                for level in self._span_classes(dev)]
        merged = heapq.merge(*arms, key=lambda b: b.key)
        return [b for _, b in zip(range(limit), merged, strict=False)]

    def _class_scan(self, dev: str | None, level: int, since: int, until: int,
                    first: tuple[int, int], limit: int) -> Iterator[BlockSpan]:
        low = max(INT64_MIN, since - (1 << level) + 1, first[0])
        scope, args = ("dev = %s AND ", [dev]) if dev is not None else ("", [])
        rows = self.q(
            "SELECT dev, height, hash, log_index, t0, t1 FROM blocks "
            f"WHERE {scope}span = %s AND t0 >= %s AND t0 <= %s AND (t0, log_index) >= (%s, %s) "
            "AND t1 >= %s ORDER BY t0, log_index LIMIT %s",
            (*args, level, low, until, first[0], first[1], since, limit)).fetchall()
        for d, h, block_hash, idx, t0, t1 in rows:
            yield BlockSpan(d, int(h), bytes(block_hash), int(idx), int(t0), int(t1))

    def _span_classes(self, dev: str | None) -> list[int]:
        """The duration classes present (for `dev`, or all), one index seek each."""
        scope, args = ("dev = %s AND ", [dev]) if dev is not None else ("", [])
        found: list[int] = []
        while True:
            row = self.q(f"SELECT span FROM blocks WHERE {scope}span > %s AND span IS NOT NULL "
                         "ORDER BY span LIMIT 1", (*args, found[-1] if found else -1)).fetchone()
            if row is None:
                return found
            found.append(int(row[0]))
