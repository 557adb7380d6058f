"""AggregatorSync against the real device side (DeviceSync), a real SqliteStore and real keys."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeledger.aggregator.checkpointer import Checkpointer
from edgeledger.aggregator.ingest import Ingest
from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.service import AggregatorSync, Publish
from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.core.block import sync_message
from edgeledger.core.checkpoint import check_extends, open_checkpoint
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.chain import DeviceChain
from edgeledger.sync.device import Alarm, DeviceSync, KeepCheckpoint, SendBlock
from edgeledger.sync.messages import Ack, ConsistencyProof, ConsistencyRequest, Hello, State
from edgeledger.sync.topics import DeviceTopics, checkpoint_topic

LOG = Signer("log.test/service", bytes([4]) * 32)
DEVICE = Signer("gw-1", bytes([1]) * 32)
T = DeviceTopics("gw-1")
NOW = 1_000_000


def _blocks(n: int) -> list[bytes]:
    chain = DeviceChain.after(DEVICE, None)
    out = []
    for h in range(n):
        readings = [Reading("s-1/temperature", NOW + h, h, 20.0 + h, "Cel")]
        out.append(sync_message(chain.seal(readings, NOW + h), readings))
    return out


BLOCKS = _blocks(12)


@pytest.fixture
def agg(tmp_path: Path) -> Iterator[AggregatorSync]:
    store = SqliteStore(tmp_path / "agg.db")
    ingest = Ingest(CanonicalLog(store, LOG))
    ingest.enroll("gw-1", DEVICE.public_key, NOW)
    yield AggregatorSync(ingest, Checkpointer(ingest.log, interval_ms=1000, batch_size=4))
    store.close()


def _store(agg: AggregatorSync) -> SqliteStore:
    store = agg.ingest.book
    assert isinstance(store, SqliteStore)
    return store


def _acks(out: list[Publish]) -> list[Ack]:
    return [Ack.decode(p.payload) for p in out if p.topic == T.ack]


def test_a_device_syncs_and_keeps_consistent_checkpoints_through_the_service(
        agg: AggregatorSync) -> None:
    """The real DeviceSync and AggregatorSync wired back to back, no broker."""
    device = DeviceSync("gw-1", LOG.verifier(), tip=None, window=4)
    start = agg.start(NOW)
    assert [(p.topic, p.retain) for p in start] == [(checkpoint_topic(), True)]
    kept: list[str] = []
    now = NOW
    queue: list[Publish | SendBlock] = [*start]
    queue += [a for a in device.connected(now) if isinstance(a, (Publish, SendBlock))]
    for h in range(len(BLOCKS)):
        queue += [a for a in device.sealed(h, now) if isinstance(a, (Publish, SendBlock))]
    while queue:
        action = queue.pop(0)
        now += 300
        if isinstance(action, SendBlock):
            action = Publish(action.topic, BLOCKS[action.height], 1)
        if action.topic.startswith(f"{T.prefix}/dev/") and not action.topic.endswith(
                ("/ack", "/proof")):
            queue += agg.receive(action.topic, action.payload, now)
            continue
        for act in device.received(action.topic, action.payload, now):
            assert not isinstance(act, Alarm), act.reason
            if isinstance(act, KeepCheckpoint):
                kept.append(act.note)
            elif isinstance(act, (Publish, SendBlock)):
                queue.append(act)
        if not queue:
            queue += agg.tick(now + 10_000)
    assert device.acked == len(BLOCKS) - 1
    cps = [open_checkpoint(n, LOG.verifier()) for n in kept]
    assert cps[-1].size == len(BLOCKS) and len(cps) >= 3
    log = agg.ingest.log
    for old, new in itertools.pairwise(cps):
        check_extends(old, new, log.consistency_proof(old.size, new.size))
    assert device.prunable == len(BLOCKS) - 1
    assert [h for h, _, _ in _store(agg).blocks("gw-1")] == list(range(len(BLOCKS)))


def test_hello_tells_the_device_what_the_log_holds(agg: AggregatorSync) -> None:
    def hello(tip: int | None) -> Ack:
        [ack] = _acks(agg.receive(T.hello, Hello(tip, None).encode(), NOW))
        return ack
    assert (hello(None).status, hello(None).next) == ("gap", 0)
    agg.receive_many([(T.blk, b) for b in BLOCKS[:3]], NOW)
    assert (hello(5).status, hello(5).next) == ("gap", 3)          # the device is ahead
    ack = hello(2)
    assert (ack.status, ack.next, ack.log_index) == ("dup", 3, 2)  # in step
    assert hello(0).status == "dup"                                # behind: journalled
    assert _store(agg).events()[-1].kind == "device-behind"


def test_hello_piggybacks_the_latest_checkpoint_once(agg: AggregatorSync) -> None:
    agg.start(NOW)
    first = _acks(agg.receive(T.hello, Hello(None, None).encode(), NOW))[0]
    assert first.checkpoint == agg.checkpointer.note
    again = _acks(agg.receive(T.blk, BLOCKS[0], NOW))[0]
    assert again.checkpoint is None
    out = agg.receive_many([(T.blk, b) for b in BLOCKS[1:4]], NOW)  # 4 entries: signs
    assert [p.topic for p in out if p.retain] == [checkpoint_topic()]
    assert _acks(out)[0].checkpoint == agg.checkpointer.note


def test_consistency_requests_are_answered_with_proofs_the_device_check_accepts(
        agg: AggregatorSync) -> None:
    agg.start(NOW)
    old = open_checkpoint(agg.checkpointer.note or "", LOG.verifier())
    agg.receive_many([(T.blk, b) for b in BLOCKS[:5]], NOW + 1)
    new = open_checkpoint(agg.checkpointer.note or "", LOG.verifier())
    [out] = agg.receive(T.cons, ConsistencyRequest(old.size, new.size).encode(), NOW + 2)
    assert out.topic == T.proof
    proof = ConsistencyProof.decode(out.payload)
    check_extends(old, new, proof.proof)


@pytest.mark.parametrize(("topic", "payload", "kind"), [
    ("edgeledger/v1/dev/GW/blk", BLOCKS[0], "bad-topic"),
    ("other/prefix/dev/gw-1/blk", BLOCKS[0], "bad-topic"),
    (T.ack, Ack(0, "gap", "x").encode(), "bad-topic"),
    (T.hello, b"\xa1" + bytes(100), "oversized"),
    (T.hello, b"\xff", "malformed"),
    (T.state, b"\x00" * 300, "oversized"),
    (T.state, b"\xa0", "malformed"),
    (T.cons, ConsistencyRequest(0, 99).encode(), "bad-request"),
    (T.cons, b"\x80", "malformed"),
])
def test_bad_messages_get_nothing_but_an_event(agg: AggregatorSync, topic: str,
                                               payload: bytes, kind: str) -> None:
    agg.start(NOW)
    assert agg.receive(topic, payload, NOW) == []
    assert _store(agg).events()[-1].kind == kind


def test_a_block_under_another_devices_topic_is_rejected_to_the_publisher(
        agg: AggregatorSync) -> None:
    agg.ingest.enroll("gw-2", Signer("gw-2", bytes([2]) * 32).public_key, NOW)
    agg.start(NOW)
    [out] = agg.receive(DeviceTopics("gw-2").blk, BLOCKS[0], NOW)
    ack = Ack.decode(out.payload)
    assert out.topic == DeviceTopics("gw-2").ack and ack.status == "rejected"
    assert ack.why.startswith("wrong-topic") and agg.ingest.log.size == 0
    assert _store(agg).events()[-1].kind == "wrong-topic"


def test_state_is_kept_for_metrics(agg: AggregatorSync) -> None:
    agg.receive(T.state, State(True, 7, 3, "1.0").encode(), NOW)
    agg.receive(T.hello, Hello(None, None).encode(), NOW + 50)
    status = agg.statuses["gw-1"]
    assert (status.last_seen_ms, status.online, status.tip, status.backlog) == (
        NOW + 50, True, 7, 3)
    agg.receive(DeviceTopics("gw-9").state, State(True, 1, 0, "1.0").encode(), NOW)
    assert "gw-9" not in agg.statuses  # not enrolled: not kept


def test_random_bytes_on_every_topic_never_crash_the_service(agg: AggregatorSync) -> None:
    rng = random.Random(6)
    topics = [T.hello, T.blk, T.state, T.cons, T.ack, "edgeledger/v1/checkpoint"]
    for i in range(300):
        payload = rng.randbytes(rng.randrange(0, 200))
        if i % 3 == 0:  # mutate a real block instead
            raw = bytearray(BLOCKS[0])
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            payload = bytes(raw)
        for out in agg.receive(rng.choice(topics), payload, NOW + i):
            if out.topic == T.ack:
                assert Ack.decode(out.payload).status in ("ok", "rejected", "gap", "dup")
    assert agg.ingest.log.size <= 1
