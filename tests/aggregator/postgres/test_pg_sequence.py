"""A worker and the sequencer answer every message exactly as one aggregator (Ingest) does.

The same messages, one at a time, go through Ingest on a SqliteStore and through
Worker.handle + Sequencer.append_batch on a PostgresStore (no broker: the
publishes are collected). Every answer (status, next, log index, why) and every
event kind must be the same, for good blocks and for every way a block is refused.
Then the cluster-only rules: a block that arrives before its predecessor is held,
not answered `gap`; a revocation or key change committed after a worker verified
a block still stops it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

from edgeledger.aggregator.checkpointer import Checkpointer
from edgeledger.aggregator.cluster.sequencer import Sequencer, SequencerSettings
from edgeledger.aggregator.cluster.worker import Worker
from edgeledger.aggregator.ingest import Ingest, IngestPolicy
from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.service import AggregatorSync
from edgeledger.aggregator.store.postgres import PostgresStore
from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.core.block import key_id, parse_sync_message, seal, sync_message
from edgeledger.core.checkpoint import ZERO_HASH
from edgeledger.core.droprecord import DropRecord
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.chain import DeviceChain
from edgeledger.sync.device import Publish
from edgeledger.sync.messages import Ack, Hello
from edgeledger.sync.topics import DeviceTopics

LOG = Signer("log.test/sequence", bytes([4]) * 32)
GW1, GW2 = Signer("gw-1", bytes([1]) * 32), Signer("gw-2", bytes([2]) * 32)
PREFIX = "test/seq"
NOW = 1_700_000_000_000
POLICY = IngestPolicy(max_ahead_ms=60_000)


class Cluster:
    """One worker and one (elected by fiat) sequencer over one PostgreSQL schema."""

    def __init__(self, dsn: str, schema: str, hold_ms: int = 0) -> None:
        self.store = PostgresStore(dsn, schema)
        self.seq_store = PostgresStore(dsn, schema)
        self.worker = Worker(self.store, LOG, "w-1", PREFIX, POLICY)
        self.published: list[Publish] = []
        settings = SequencerSettings(PREFIX, "s-1", POLICY, 1000, 1000, 100, hold_ms, 1000)
        self.sequencer = Sequencer(settings, LOG, lambda: self.seq_store,
                                   self.published.extend)
        self.log = CanonicalLog(self.seq_store, LOG)
        self.sync = AggregatorSync(Ingest(self.log, self.seq_store, POLICY),
                                   Checkpointer(self.log), PREFIX)

    def send(self, dev: str, message: bytes, now: int = NOW, kind: str = "blk") -> list[Ack]:
        """Hand one message to the worker, run one sequencer batch; the acks, in order."""
        pubs = self.worker.handle([(f"{PREFIX}/dev/{dev}/{kind}", message)], now)
        out = self.sequencer.append_batch(self.seq_store, self.log)
        self.published.clear()
        self.sequencer.answer_requests(self.seq_store, self.sync)
        acks = [Ack.decode(p.payload) for p in pubs]
        acks += [a for _, a in out.acks] if out is not None else []
        return acks + [Ack.decode(p.payload) for p in self.published]

    def close(self) -> None:
        self.store.close()
        self.seq_store.close()


@pytest.fixture
def pair(tmp_path: Path, pg_dsn: str, pg_schema: str) -> Iterator[tuple[Ingest, Cluster]]:
    store = SqliteStore(tmp_path / "one.db")
    ingest = Ingest(CanonicalLog(store, LOG), store, POLICY)
    cluster = Cluster(pg_dsn, pg_schema)
    for dev, key in (("gw-1", GW1), ("gw-2", GW2)):
        ingest.enroll(dev, key.public_key, NOW)
        cluster.worker.sync.ingest.enroll(dev, key.public_key, NOW)
    yield ingest, cluster
    store.close()
    cluster.close()


def _readings(start: int, count: int = 3, t: int = NOW) -> list[Reading]:
    return [Reading("s-1/temperature", t + q, q, 20.0 + q, "Cel")
            for q in range(start, start + count)]


def _bad_signature(h: int) -> bytes:
    """A heartbeat block of gw-1 whose signature's last byte is flipped (the kid is right)."""
    cose = seal(GW1, "gw-1", h, ZERO_HASH, [], NOW).cose
    return cbor2.dumps({"blk": cose[:-1] + bytes([cose[-1] ^ 1]), "rd": []}, canonical=True)


def _script() -> list[tuple[str, str, bytes]]:
    """(what, device topic, message): a tour of every answer Ingest can give a block."""
    c1 = DeviceChain.after(GW1, None)
    b = [sync_message(c1.seal(_readings(3 * h), NOW + h), _readings(3 * h)) for h in range(7)]
    c2 = DeviceChain.after(GW2, None)
    skewed = sync_message(c2.seal(_readings(0, 1, NOW + 3_600_000), NOW + 3_600_000),
                          _readings(0, 1, NOW + 3_600_000))
    rewound_readings = [Reading("s-1/temperature", NOW, 0, 1.0, "Cel")]
    rewound = sync_message(seal(GW2, "gw-2", 1, c2.prev, rewound_readings, NOW),
                           rewound_readings)
    bad_root = seal(GW1, "gw-1", 3, parse_sync_message(b[2])[0].hash, _readings(9), NOW)
    return [
        ("first", "gw-1", b[0]), ("dup", "gw-1", b[0]), ("gap", "gw-1", b[2]),
        ("second", "gw-1", b[1]), ("third", "gw-1", b[2]),
        ("equivocation", "gw-1", sync_message(seal(GW1, "gw-1", 0, ZERO_HASH, _readings(90),
                                                   NOW), _readings(90))),
        ("bad prev", "gw-1", sync_message(seal(GW1, "gw-1", 3, b"\x05" * 32, _readings(9),
                                               NOW), _readings(9))),
        ("bad readings", "gw-1", sync_message(bad_root, _readings(50))),
        ("readings of a dup are not checked", "gw-1", sync_message(
            DeviceChain.after(GW1, None).seal(_readings(0), NOW), _readings(0))),
        ("skew", "gw-2", skewed), ("q rewound", "gw-2", rewound),
        ("wrong topic", "gw-2", b[3]), ("unknown device", "gw-3", sync_message(
            seal(Signer("gw-3", bytes(32)), "gw-3", 0, ZERO_HASH, [], NOW), [])),
        ("forged kid", "gw-1", sync_message(seal(Signer("gw-1", bytes([8]) * 32), "gw-1", 3,
                                                 ZERO_HASH, [], NOW), [])),
        ("bad signature", "gw-1", _bad_signature(3)),
        ("malformed", "gw-1", b"\xa1\x00"), ("oversized", "gw-1", b"\x00" * (1 << 21)),
        ("fourth", "gw-1", b[3]),
        ("drop ahead", "gw-1", _drop(b, 5, 6)), ("drop", "gw-1", _drop(b, 4, 5)),
        ("drop again", "gw-1", _drop(b, 4, 5)), ("after the drop", "gw-1", b[6]),
    ]


def _drop(b: list[bytes], h0: int, h1: int) -> bytes:
    """gw-1's signed DROP record for its blocks h0..h1 (from the sync messages `b`)."""
    blocks = [parse_sync_message(m)[0] for m in b]
    return DropRecord(dev="gw-1", kid=key_id(GW1.public_key), h0=h0, h1=h1,
                      prev=blocks[h0 - 1].hash, last=blocks[h1].hash, cnt=3 * (h1 - h0 + 1),
                      t0=NOW, t1=NOW + 1, ts=NOW).sign(GW1)


def test_every_answer_and_event_is_the_one_ingest_gives(pair: tuple[Ingest, Cluster]) -> None:
    ingest, cluster = pair
    answers = {}
    for what, dev, message in _script():
        kind = "drop" if what.startswith("drop") else "blk"
        [one] = ingest.receive_batch([(dev, message)], NOW) if kind == "blk" else \
            [ingest.receive_drop(dev, message, NOW)]
        many = cluster.send(dev, message, kind=kind)
        assert many == [one], what
        answers[what] = one.status
    assert [answers[w] for w in ("first", "dup", "gap", "second", "equivocation", "drop ahead",
                                 "drop", "drop again", "after the drop")] == [
        "ok", "dup", "gap", "ok", "rejected", "gap", "ok", "dup", "ok"]
    single = [e.kind for e in ingest.book.events()]  # type: ignore[attr-defined]
    assert [e.kind for e in cluster.store.events()] == single, single
    assert cluster.store.drops("gw-1") == ingest.book.drops("gw-1")  # type: ignore[attr-defined]
    assert {"dropped", "dup", "gap", "equivocation", "bad-prev", "bad-readings", "skew",
            "wrong-topic", "unknown-device", "unknown-key", "bad-signature", "malformed",
            "oversized"} <= set(single)
    assert list(cluster.store.entries()) == list(ingest.book.entries())  # type: ignore[attr-defined]
    assert cluster.store.equivocations("gw-1")[0].log_index == 0
    one_sync = AggregatorSync(ingest, Checkpointer(ingest.log), PREFIX)
    for dev, tip in (("gw-1", None), ("gw-1", 2), ("gw-1", 6), ("gw-1", 40), ("gw-2", 1),
                     ("gw-9", None)):
        hello = Hello(tip, None).encode()
        one = [Ack.decode(p.payload) for p in one_sync.receive(
            DeviceTopics(dev, PREFIX).hello, hello, NOW)]
        assert cluster.send(dev, hello, kind="hello") == one, (dev, tip)
    assert [e.kind for e in cluster.store.events()] == \
        [e.kind for e in ingest.book.events()]  # type: ignore[attr-defined]
    assert "device-behind" in {e.kind for e in cluster.store.events()}


def test_a_block_ahead_of_its_predecessor_is_held_not_answered(pg_dsn: str,
                                                               pg_schema: str) -> None:
    cluster = Cluster(pg_dsn, pg_schema, hold_ms=60_000)
    try:
        cluster.store.enroll("gw-1", GW1.public_key, NOW)
        chain, now = DeviceChain.after(GW1, None), cluster_now()
        b = [sync_message(chain.seal(_readings(3 * h, t=now), now), _readings(3 * h, t=now))
             for h in range(3)]
        assert cluster.send("gw-1", b[2], now) == []  # held: no gap answer
        assert cluster.send("gw-1", b[1], now) == []
        acks = cluster.send("gw-1", b[0], now)
        assert [(a.status, a.next, a.log_index) for a in acks] == [
            ("ok", 1, 0), ("ok", 2, 1), ("ok", 3, 2)]
        assert [e.kind for e in cluster.store.events()] == []
    finally:
        cluster.close()


def cluster_now() -> int:
    """The wall clock, as the sequencer's hold is measured against it."""
    return time.time_ns() // 1_000_000


def test_a_revocation_or_new_key_after_verification_still_stops_the_block(
        pg_dsn: str, pg_schema: str) -> None:
    cluster = Cluster(pg_dsn, pg_schema)
    try:
        store = cluster.store
        store.enroll("gw-1", GW1.public_key, NOW)
        store.enroll("gw-2", GW2.public_key, NOW)
        first = sync_message(seal(GW1, "gw-1", 0, ZERO_HASH, [], NOW), [])
        second = sync_message(seal(GW2, "gw-2", 0, ZERO_HASH, [], NOW), [])
        assert cluster.worker.handle([(DeviceTopics("gw-1", PREFIX).blk, first),
                                      (DeviceTopics("gw-2", PREFIX).blk, second)], NOW) == []
        store.revoke("gw-1", NOW + 1)                          # after the worker's check
        store.enroll("gw-2", Signer("gw-2", bytes(32)).public_key, NOW + 1)  # a new key
        out = cluster.sequencer.append_batch(cluster.seq_store, cluster.log)
        assert out is not None
        assert [(d, a.status, a.why.split(":")[0]) for d, a in out.acks] == [
            ("gw-1", "rejected", "revoked-key"), ("gw-2", "rejected", "unknown-key")]
        assert store.size() == 0
    finally:
        cluster.close()
