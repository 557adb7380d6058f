"""The aggregator's store on PostgreSQL: the same log and device book as SqliteStore.

Theory of operation. PostgresStore keeps the same tables and answers the same
calls as store/sqlite.py: it is a LogStore (log.py), a DeviceBook (ingest.py) and
a StoreReader (reader.py), so CanonicalLog, Ingest, the checkpointer and the HTTP
API run on it unchanged. What differs is that several processes share it (the
cluster: edgeledger/aggregator/cluster/), so the writes are made safe against each
other by the database itself, never by timing:

- The log head. The log's size is one row, `log_head`. `size()` inside a
  transaction locks it (`FOR UPDATE`), and every append moves it with
  `UPDATE log_head SET size = new WHERE size = old` in the same transaction as the
  entries and hashes. Two writers that both believe they may append cannot both
  commit: the second waits for the first's row lock, then finds the size moved and
  fails, and its whole transaction (entries, hashes, block rows, tips, acks it was
  about to send) rolls back. The log never forks.
- Tips and checkpoints are guarded the same way: a tip moves only `WHERE
  next_height = h` (as in SQLite), and a checkpoint is inserted only at a new
  height, only if its `prev` is the stored previous checkpoint's hash and its root
  is the log's root at its size.
- Event ids come from a counter row incremented in the writing transaction, so ids
  become visible in commit order and an `events(after=cursor)` reader never skips
  one that committed late.

Batches. `append_blocks` computes the new Merkle hashes of a whole batch in memory
from the tree's frontier (at most log2(n) stored hashes, one query), then writes
entries, hashes, blocks, readings, sensors and tips with one statement each
(`unnest` of arrays): a constant number of round trips per batch, not per block.
A COMMIT that returned is durable (`synchronous_commit` is at least `on`).

Faults. Any database failure inside a store method is a StoreFault naming the
store; `lost` says the connection is gone (the caller reconnects).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.store.pg_reads import PgReads, block_times
from edgeledger.aggregator.store.pgschema import Conn, StoreFault, connect, session_settings
from edgeledger.aggregator.store.reader import Device
from edgeledger.aggregator.store.sqlite import AcceptedBlock
from edgeledger.aggregator.store.sqlite_reads import DEVICE_COLUMNS, device_from_row
from edgeledger.core import merkle
from edgeledger.core.checkpoint import ZERO_HASH, Checkpoint
from edgeledger.core.droprecord import DropRecord
from edgeledger.core.errors import EdgeLedgerError

__all__ = ["PostgresStore", "StoreFault"]


class PostgresStore(PgReads):
    """A LogStore, DeviceBook and StoreReader on one PostgreSQL connection (one thread).

    `read_only=True` (the HTTP API's readers) needs the schema to exist, current, and
    refuses every write (`default_transaction_read_only`).
    """

    def __init__(self, conninfo: str, schema: str = "edgeledger", *, where: str = "",
                 failover_ms: int = 5000, settings: dict[str, str] | None = None,
                 read_only: bool = False, create: bool = True) -> None:
        self.schema = schema
        self.where = where or f"postgres schema {schema}"
        self._depth = 0
        self._seen_size: int | None = None
        self._conn: Conn = connect(conninfo, self.where, schema,
                                   {**session_settings(failover_ms), **(settings or {})},
                                   read_only, create)

    @property
    def path(self) -> str:
        """Where the store is, as the CLI names it (SqliteStore's file path)."""
        return self.where

    @property
    def connection(self) -> Conn:
        """The connection (for the cluster's queue, lock and notifications)."""
        return self._conn

    def close(self) -> None:
        """Close the connection (uncommitted work is rolled back; session locks released)."""
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together, or roll back if anything raises.

        Nested uses join the outermost one. The COMMIT is durable when this returns.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        try:
            with self._conn.transaction():
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
        except psycopg.Error as exc:
            raise self.fault(exc) from exc

    def fault(self, exc: psycopg.Error) -> StoreFault:
        """`exc` as a StoreFault naming this store."""
        lost = bool(self._conn.closed or self._conn.broken)
        return StoreFault(f"store {self.where}: {' '.join(str(exc).split())}", lost)

    def q(self, query: str, args: Sequence[Any] | dict[str, Any] = ()) -> psycopg.Cursor[Any]:
        """Run one statement; a database failure becomes a StoreFault."""
        try:
            return self._conn.execute(query, args)
        except psycopg.Error as exc:
            raise self.fault(exc) from exc

    # --- the log (LogStore) ----------------------------------------------------------

    def size(self) -> int:
        """Number of entries; inside a transaction the head stays locked until it ends."""
        lock = " FOR UPDATE" if self._depth else ""
        size = int(self.one(f"SELECT size FROM log_head{lock}")[0])
        self._seen_size = size
        return size

    def read_hashes(self, positions: Sequence[int]) -> list[bytes]:
        """Stored hashes at `positions`, in order, in one query; a missing one is left out."""
        found = dict(self.q("SELECT pos, hash FROM hashes WHERE pos = ANY(%s::bigint[])",
                            (list(dict.fromkeys(positions)),)).fetchall())
        return [found[p] for p in positions if p in found]

    def append(self, entry: bytes, hashes: Sequence[bytes]) -> int:
        """Add one entry and its new stored hashes; refused if the log moved since `size()`."""
        with self.transaction():
            seen, index = self._seen_size, self._lock_head()
            if (seen is not None and seen != index) or \
                    len(hashes) != merkle.stored_count(index + 1) - merkle.stored_count(index):
                raise EdgeLedgerError(f"store {self.where}: the log is at size {index}, not "
                                      f"{seen}, or {len(hashes)} hashes do not fit: another "
                                      "writer appended; nothing was written")
            self._insert_log(index, [entry], list(hashes))
            self._move_head(index, index + 1)
        return index

    def _lock_head(self) -> int:
        size = int(self.one("SELECT size FROM log_head FOR UPDATE")[0])
        self._seen_size = size
        return size

    def _move_head(self, old: int, new: int) -> None:
        if self.q("UPDATE log_head SET size = %s WHERE size = %s", (new, old)).rowcount != 1:
            raise EdgeLedgerError(f"store {self.where}: the log head moved from {old} while "
                                  "this transaction appended: another sequencer? rolled back")
        self._seen_size = new

    def _insert_log(self, index: int, entries: list[bytes], hashes: list[bytes]) -> None:
        first = merkle.stored_count(index)
        self.q("INSERT INTO entries (idx, data) SELECT * FROM unnest(%s::bigint[], %s::bytea[])",
               (list(range(index, index + len(entries))), entries))
        self.q("INSERT INTO hashes (pos, hash) SELECT * FROM unnest(%s::bigint[], %s::bytea[])",
               (list(range(first, first + len(hashes))), hashes))

    def add_checkpoint(self, note: str) -> None:
        """Record a newly signed checkpoint: at a new height, chained, over this log."""
        cp = Checkpoint.parse(note[:note.rfind("\n\n") + 1])
        with self.transaction():
            size = self._lock_head()
            prev = self.checkpoint(cp.height - 1) if cp.height else None
            prev_cp = None if prev is None else Checkpoint.parse(prev[:prev.rfind("\n\n") + 1])
            why = ""
            if self.checkpoint(cp.height) is not None:
                why = "that height is already signed (by another sequencer?)"
            elif cp.height and (prev_cp is None or prev_cp.hash != cp.prev
                                or prev_cp.size > cp.size):
                why = f"it does not extend checkpoint {cp.height - 1} as stored"
            elif not cp.height and cp.prev != ZERO_HASH:
                why = "checkpoint 0 must have a zero prev"
            elif cp.size > size or merkle.tree_root(cp.size, self.read_hashes) != cp.root:
                why = f"its root is not this log's at size {cp.size} (log size {size})"
            if why:
                raise EdgeLedgerError(f"store {self.where}: checkpoint {cp.height} refused: {why}")
            self.q("INSERT INTO checkpoints (height, size, note) VALUES (%s, %s, %s)",
                   (cp.height, cp.size, note))

    # --- devices and blocks ------------------------------------------------------------

    def enroll(self, dev: str, public_key: bytes, now_ms: int) -> None:
        """Enroll `dev` with `public_key`; re-enrolling keeps its tip and history.

        A key other than the current one (a rotation) signs from the device's next
        height on; the key history keeps the earlier ones.
        """
        with self.transaction():
            known = self.devices_for([dev]).get(dev)  # locked until the COMMIT
            self.q("INSERT INTO devices (dev, public_key, enrolled_ms, prev) "
                   "VALUES (%s, %s, %s, %s) ON CONFLICT (dev) DO UPDATE SET public_key = "
                   "excluded.public_key, enrolled_ms = excluded.enrolled_ms, revoked_ms = NULL",
                   (dev, public_key, now_ms, ZERO_HASH))
            if known is None or known.public_key != public_key:
                self.q("INSERT INTO device_keys (dev, from_height, public_key, enrolled_ms) "
                       "VALUES (%s, %s, %s, %s) ON CONFLICT (dev, from_height) DO UPDATE SET "
                       "public_key = excluded.public_key, enrolled_ms = excluded.enrolled_ms",
                       (dev, 0 if known is None else known.next_height, public_key, now_ms))

    def revoke(self, dev: str, now_ms: int) -> None:
        """Stop accepting blocks from `dev`; its history stays."""
        with self.transaction():
            if self.q("UPDATE devices SET revoked_ms = %s WHERE dev = %s",
                      (now_ms, dev)).rowcount != 1:
                raise EdgeLedgerError(f"store {self.where}: revoke {dev}: not enrolled")

    def device(self, dev: str) -> Device | None:
        """The stored record of `dev`, if enrolled."""
        row = self.q(f"SELECT {DEVICE_COLUMNS} FROM devices WHERE dev = %s", (dev,)).fetchone()
        return None if row is None else device_from_row(row)

    def devices_for(self, devs: Sequence[str]) -> dict[str, Device]:
        """The records of those of `devs` that are enrolled, in one query.

        Inside a transaction the rows stay locked until it ends (in id order, so two
        such transactions cannot deadlock): a revocation, key change or drop
        committing meanwhile waits, and decisions made on these rows stay true.
        """
        lock = " ORDER BY dev FOR UPDATE" if self._depth else ""
        return {r[0]: device_from_row(r) for r in self.q(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE dev = ANY(%s::text[]){lock}",
            (list(devs),))}

    def last_qs(self, devs: Sequence[str]) -> dict[tuple[str, str], int]:
        """(device, sensor) -> last q in the log, for every sensor of `devs`, in one query."""
        return {(d, s): int(q) for d, s, q in self.q(
            "SELECT dev, sensor, last_q FROM sensors WHERE dev = ANY(%s::text[])", (list(devs),))}

    def record_block(self, dev: str, height: int, block_hash: bytes, log_index: int,
                     times: tuple[int, int] | None = None) -> None:
        """Record accepted block `dev`/`height` at `log_index` and move the device's tip.

        Refuses a height that is not the device's next, and a revoked device.
        """
        with self.transaction():
            self._move_tips({dev: (height, height + 1, block_hash)})
            self._insert_blocks([(dev, height, block_hash, log_index, times)])

    def append_blocks(self, log: CanonicalLog, blocks: Sequence[AcceptedBlock]) -> list[int]:
        """Append verified blocks to `log` (on this store) in one transaction; their indexes.

        Entries, hashes, block rows, readings, sensors and tips of all `blocks` commit
        together or not at all; ack only after this returns.
        """
        if log.store is not self:
            raise EdgeLedgerError(f"store {self.where}: append_blocks got a log on another store")
        with self.transaction():
            base = self._lock_head()
            if not blocks:
                return []
            tips: dict[str, tuple[int, int, bytes]] = {}
            for b in blocks:
                first, nxt, _ = tips.get(b.dev, (b.height, b.height, b""))
                if b.height != nxt:
                    raise EdgeLedgerError(f"store {self.where}: block {b.dev}/{b.height}: not "
                                          "the device's next height in this batch")
                tips[b.dev] = (first, b.height + 1, b.hash)
            self._move_tips(tips)
            indexes = list(range(base, base + len(blocks)))
            self._insert_log(base, [b.entry for b in blocks], self._new_hashes(base, blocks))
            self._insert_blocks([(b.dev, b.height, b.hash, i, block_times(b))
                                 for i, b in zip(indexes, blocks, strict=True)])
            self.q("INSERT INTO readings (log_index, data) "
                   "SELECT * FROM unnest(%s::bigint[], %s::bytea[])",
                   (indexes, [b.readings for b in blocks]))
            last = {(b.dev, s): q for b in blocks for s, q in b.last_q}
            self.q("INSERT INTO sensors (dev, sensor, last_q) SELECT * FROM "
                   "unnest(%s::text[], %s::text[], %s::bigint[]) ON CONFLICT (dev, sensor) "
                   "DO UPDATE SET last_q = excluded.last_q",
                   ([d for d, _ in last], [s for _, s in last], list(last.values())))
            self._move_head(base, base + len(blocks))
        return indexes

    def _new_hashes(self, base: int, blocks: Sequence[AcceptedBlock]) -> list[bytes]:
        """The stored hashes `blocks` add to a tree of `base` leaves, from its frontier."""
        frontier = [merkle.stored_index(level, (base >> level) - 1)
                    for level in range(base.bit_length()) if base >> level & 1]
        known = dict(zip(frontier, self.read_hashes(frontier), strict=False))
        first, new = merkle.stored_count(base), list[bytes]()
        for k, b in enumerate(blocks):
            hashes = merkle.append_hashes(base + k, merkle.leaf_hash(b.entry),
                                          lambda ps: [known[p] for p in ps if p in known])
            known.update((first + len(new) + i, h) for i, h in enumerate(hashes))
            new += hashes
        return new

    def _move_tips(self, tips: dict[str, tuple[int, int, bytes]]) -> None:
        """Move each device's tip from its first height to its next, all or nothing."""
        devs = list(tips)
        moved = {r[0] for r in self.q(
            "UPDATE devices d SET next_height = u.next, prev = u.prev FROM unnest(%s::text[], "
            "%s::bigint[], %s::bigint[], %s::bytea[]) AS u(dev, first, next, prev) WHERE "
            "d.dev = u.dev AND d.next_height = u.first AND d.revoked_ms IS NULL RETURNING d.dev",
            (devs, [tips[d][0] for d in devs], [tips[d][1] for d in devs],
             [tips[d][2] for d in devs]))}
        for dev in devs:
            if dev not in moved:
                raise EdgeLedgerError(f"store {self.where}: block {dev}/{tips[dev][0]}: the "
                                      "device is not enrolled, is revoked, or that is not its "
                                      "next height")

    def _insert_blocks(self, rows: list[tuple[str, int, bytes, int,
                                              tuple[int, int] | None]]) -> None:
        spans = [None if t is None else (t[1] - t[0]).bit_length() for *_, t in rows]
        self.q("INSERT INTO blocks (dev, height, hash, log_index, t0, t1, span) SELECT * FROM "
               "unnest(%s::text[], %s::bigint[], %s::bytea[], %s::bigint[], %s::bigint[], "
               "%s::bigint[], %s::integer[])",
               ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                [r[3] for r in rows], [None if r[4] is None else r[4][0] for r in rows],
                [None if r[4] is None else r[4][1] for r in rows], spans))

    def apply_drop(self, dev: str, record: DropRecord, payload: bytes, now_ms: int) -> None:
        """Move `dev` past the heights `record` drops and keep the signed record.

        Refuses a device whose next height the record does not cover, so the stored
        chain of each device only ever moves forward, and only with a record.
        """
        with self.transaction():
            if self.q("UPDATE devices SET next_height = %s + 1, prev = %s WHERE dev = %s AND "
                      "next_height BETWEEN %s AND %s AND revoked_ms IS NULL",
                      (record.h1, record.last, dev, record.h0, record.h1)).rowcount != 1:
                raise EdgeLedgerError(f"store {self.where}: drop record {dev}/{record.h0}.."
                                      f"{record.h1}: the device is not enrolled, is revoked, "
                                      "or the record does not cover its next height")
            self.q("INSERT INTO drops (dev, h0, h1, record, time_ms) VALUES (%s, %s, %s, %s, %s)",
                   (dev, record.h0, record.h1, payload, now_ms))

    # --- evidence and events -----------------------------------------------------------

    def add_equivocation(self, dev: str, height: int, block_hash: bytes, block: bytes,
                         now_ms: int) -> bool:
        """Keep `block`, a second block at an accepted height, and flag the device.

        The accepted block stays in the log; return False if this one was already kept.
        """
        with self.transaction():
            cur = self.q("INSERT INTO equivocations (dev, height, hash, block, time_ms) "
                         "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                         (dev, height, block_hash, block, now_ms))
            self.q("UPDATE devices SET flagged_ms = coalesce(flagged_ms, %s) WHERE dev = %s",
                   (now_ms, dev))
        return cur.rowcount == 1

    def add_event(self, kind: str, dev: str | None, height: int | None, reason: str,
                  now_ms: int) -> int:
        """Journal one event; return its id (the cursor `events` resumes after)."""
        return self.add_events([(kind, dev, height, reason, now_ms)])

    def add_events(self, events: Sequence[tuple[str, str | None, int | None, str, int]]) -> int:
        """Journal events (kind, dev, height, reason, time_ms) in order; the last id (or 0).

        Ids come from the `events` counter row, locked until this transaction ends,
        so they become visible in id order (see the module doc).
        """
        if not events:
            return 0
        with self.transaction():
            last = int(self.one("UPDATE counters SET value = value + %s WHERE name = 'events' "
                                "RETURNING value", (len(events),))[0])
            self.q("INSERT INTO events (id, kind, dev, height, reason, time_ms) SELECT * FROM "
                   "unnest(%s::bigint[], %s::text[], %s::text[], %s::bigint[], %s::text[], "
                   "%s::bigint[])", (list(range(last - len(events) + 1, last + 1)),
                                     *([e[i] for e in events] for i in range(5))))
        return last
