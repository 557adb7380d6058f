"""The queue table: verified blocks on their way from the workers to the sequencer.

A worker inserts the blocks it verified, with the events of the messages it
refused, in one transaction that also NOTIFYs the sequencer (delivered on COMMIT);
only then does it publish its own answers (refusals, and duplicates it could tell
from committed state). The sequencer reads the queue in id order, decides, and
deletes what it decided in the transaction that appends: a block leaves the queue
exactly when its outcome is committed, so a sequencer that dies mid-batch leaves
its batch to the next one, and a worker that dies never half-inserts.

Each row carries what the sequencer needs without parsing the block again: the
header fields, the COSE bytes, the readings array, the key the signature was
checked with, and the sensor runs (JSON `[[sensor, first q, last q], ...]`).

The `requests` table carries, the same way, the messages whose answer depends on a
device's tip (`hello`, `drop`; worker.py says why): the sequencer answers them
after its next batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from edgeledger.aggregator.cluster.sequence import Queued
from edgeledger.aggregator.cluster.verify import Verified
from edgeledger.aggregator.store.pgschema import QUEUE_CHANNEL
from edgeledger.aggregator.store.postgres import PostgresStore

EventTuple = tuple[str, str | None, int | None, str, int]
"""(kind, device, height, reason, time_ms), as PostgresStore.add_events takes them."""
Request = tuple[str, str, bytes]
"""(device, topic kind, payload) of a message the sequencer answers."""

_FIELDS = ("dev", "height", "hash", "prev", "entry", "readings", "key", "ts", "t0", "t1",
           "fault")
_TYPES = ("text", "bigint", "bytea", "bytea", "bytea", "bytea", "bytea", "bigint", "bigint",
          "bigint", "text")
_INSERT = (f"INSERT INTO queue (received_ms, worker, {', '.join(_FIELDS)}, runs) "
           f"SELECT %s, %s, u.* FROM unnest({', '.join(f'%s::{t}[]' for t in _TYPES)}, "
           "%s::text[]) AS u")


def enqueue(store: PostgresStore, worker: str, received_ms: int, blocks: Sequence[Verified],
            events: Sequence[EventTuple], requests: Sequence[Request] = ()) -> None:
    """Queue `blocks` and `requests`, journal `events`, in one transaction; wake the sequencer."""
    if not blocks and not events and not requests:
        return
    with store.transaction():
        store.add_events(events)
        if blocks:
            columns = [[getattr(b, f) for b in blocks] for f in _FIELDS]
            runs = [json.dumps(b.sensors, separators=(",", ":")) for b in blocks]
            store.q(_INSERT, (received_ms, worker, *columns, runs))
        if requests:
            store.q("INSERT INTO requests (received_ms, dev, kind, payload) SELECT %s, u.* "
                    "FROM unnest(%s::text[], %s::text[], %s::bytea[]) AS u",
                    (received_ms, *([r[i] for r in requests] for i in range(3))))
        if blocks or requests:
            store.q("SELECT pg_notify(%s, %s)", (QUEUE_CHANNEL, store.schema))


def fetch(store: PostgresStore, limit: int) -> list[Queued]:
    """Up to `limit` queued blocks, oldest first."""
    rows = store.q(f"SELECT id, received_ms, {', '.join(_FIELDS)}, runs FROM queue "
                   "ORDER BY id LIMIT %s", (limit,)).fetchall()
    out = []
    for qid, received, dev, height, h, prev, entry, readings, key, ts, t0, t1, fault, runs \
            in rows:
        sensors = tuple((str(s), int(first), int(last)) for s, first, last in json.loads(runs))
        out.append(Queued(int(qid), int(received),
                          Verified(dev, int(height), bytes(h), bytes(prev), bytes(entry),
                                   bytes(readings), bytes(key), int(ts), int(t0), int(t1),
                                   sensors, fault)))
    return out


def delete(store: PostgresStore, ids: Sequence[int]) -> None:
    """Remove decided rows (inside the sequencer's append transaction)."""
    if ids:
        store.q("DELETE FROM queue WHERE id = ANY(%s::bigint[])", (list(ids),))


def fetch_requests(store: PostgresStore, limit: int) -> list[tuple[int, Request]]:
    """Up to `limit` waiting requests, oldest first: (id, (device, kind, payload))."""
    return [(int(i), (d, k, bytes(p))) for i, d, k, p in store.q(
        "SELECT id, dev, kind, payload FROM requests ORDER BY id LIMIT %s", (limit,))]


def delete_requests(store: PostgresStore, ids: Sequence[int]) -> None:
    """Remove answered requests."""
    if ids:
        store.q("DELETE FROM requests WHERE id = ANY(%s::bigint[])", (list(ids),))


def depth(store: PostgresStore) -> int:
    """How many blocks wait in the queue (for metrics and logs)."""
    return int(store.one("SELECT count(*) FROM queue")[0])
