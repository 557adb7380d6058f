"""The sync payloads and topics: round trips, one encoding per value, strict decoding.

Every decoder of an untrusted payload either returns a value or raises an
EdgeLedgerError subclass (DecodeError), whatever bytes it is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeledger.core import cbor
from edgeledger.core.errors import DecodeError, EdgeLedgerError
from edgeledger.core.note import MAX_NOTE
from edgeledger.sync.messages import (
    MAX_PROOF,
    MAX_WHY,
    Ack,
    ConsistencyProof,
    ConsistencyRequest,
    Hello,
    State,
    decode_checkpoint_payload,
)
from edgeledger.sync.topics import (
    DeviceTopics,
    aggregator_subscriptions,
    checkpoint_topic,
    parse_device_topic,
    valid_prefix,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
heights = st.integers(0, 2**64 - 1)
hashes = st.binary(min_size=32, max_size=32)


@st.composite
def hellos(draw: st.DrawFn) -> Hello:
    tip = draw(st.none() | heights)
    acked = None if tip is None else draw(st.none() | st.integers(0, tip))
    return Hello(tip, acked)


@st.composite
def acks(draw: st.DrawFn) -> Ack:
    status = draw(st.sampled_from(["ok", "dup", "gap", "rejected"]))
    nxt = draw(st.integers(1 if status == "ok" else 0, 2**64 - 1))
    why = draw(st.text(min_size=1 if status == "rejected" else 0, max_size=40))
    index = draw(heights) if status in ("ok", "dup") else None
    note = draw(st.none() | st.text(min_size=1, max_size=200))
    return Ack(nxt, status, why, index, note)


@st.composite
def states(draw: st.DrawFn) -> State:
    tip = draw(st.none() | heights)
    backlog = 0 if tip is None else draw(st.integers(0, min(tip + 1, 2**64 - 1)))
    return State(draw(st.booleans()), tip, backlog, draw(st.text(min_size=1, max_size=64)))


@st.composite
def requests(draw: st.DrawFn) -> ConsistencyRequest:
    old = draw(heights)
    return ConsistencyRequest(old, draw(st.integers(old, 2**64 - 1)))


@st.composite
def proofs(draw: st.DrawFn) -> ConsistencyProof:
    req = draw(requests())
    return ConsistencyProof(req.old_size, req.new_size,
                            tuple(draw(st.lists(hashes, max_size=64))))


MESSAGES: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (Hello, hellos()), (Ack, acks()), (State, states()),
    (ConsistencyRequest, requests()), (ConsistencyProof, proofs()),
]
DECODERS: list[Callable[[bytes], object]] = [
    Hello.decode, Ack.decode, State.decode, ConsistencyRequest.decode,
    ConsistencyProof.decode, decode_checkpoint_payload,
]


@pytest.mark.parametrize(("cls", "strategy"), MESSAGES, ids=lambda x: getattr(x, "__name__", ""))
def test_every_message_round_trips_through_its_one_encoding(cls: Any, strategy: Any) -> None:
    @FUZZ
    @given(strategy)
    def check(msg: Any) -> None:
        data = msg.encode()
        assert cls.decode(data) == msg
        assert cbor.decode(data, "x") == cbor2.loads(data)  # deterministic CBOR
    check()


def _survive(decode: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(EdgeLedgerError):
        decode(data)


@pytest.mark.parametrize("decode", DECODERS, ids=lambda d: d.__qualname__)
def test_random_bytes_decode_or_raise_only_edgeledger_errors(
        decode: Callable[[bytes], object]) -> None:
    @FUZZ
    @given(st.binary(max_size=300))
    def check(data: bytes) -> None:
        _survive(decode, data)
    check()


values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=8)
    | st.binary(max_size=40) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4), max_leaves=12)
KEYS = st.sampled_from(["tip", "acked", "next", "status", "why", "log_index", "checkpoint",
                        "online", "backlog", "version", "from", "to", "proof", "x"])


@pytest.mark.parametrize("decode", DECODERS[:5], ids=lambda d: d.__qualname__)
def test_maps_of_our_keys_with_random_values_only_raise_edgeledger_errors(
        decode: Callable[[bytes], object]) -> None:
    @FUZZ
    @given(st.dictionaries(KEYS, values, max_size=6))
    def check(m: dict[str, Any]) -> None:
        _survive(decode, cbor2.dumps(m, canonical=True))
    check()


def test_errors_name_the_message_and_the_key() -> None:
    cases: list[tuple[Callable[[bytes], object], dict[str, Any], str]] = [
        (Hello.decode, {"tip": 1}, "hello message: missing key(s) ['acked']"),
        (Hello.decode, {"tip": 1, "acked": 2}, "hello message: key 'acked' 2 is beyond"),
        (Hello.decode, {"tip": None, "acked": 0}, "key 'acked' 0 is beyond key 'tip' None"),
        (Hello.decode, {"tip": -1, "acked": None}, "hello message: key 'tip' must be"),
        (Hello.decode, {"tip": 1, "acked": 0, "x": 1}, "hello message: unknown key(s) ['x']"),
        (Ack.decode, {"next": 1, "status": "fine"}, "ack message: key 'status' must be"),
        (Ack.decode, {"next": 1, "status": "ok"}, "key 'log_index' must be present for ok"),
        (Ack.decode, {"next": 1, "status": "gap", "log_index": 0}, "key 'log_index'"),
        (Ack.decode, {"next": 1, "status": "rejected"}, "a rejected ack must say why"),
        (Ack.decode, {"next": 1, "status": "gap", "why": ""}, "key 'why' must be"),
        (Ack.decode, {"next": True, "status": "gap"}, "ack message: key 'next' must be"),
        (Ack.decode, {"next": 0, "status": "ok", "log_index": 0}, "ok ack has next >= 1"),
        (Ack.decode, {"next": 1, "status": "gap", "why": "x" * (MAX_WHY + 1)}, "key 'why'"),
        (Ack.decode, {"next": 1, "status": "gap", "checkpoint": b"x"}, "key 'checkpoint'"),
        (State.decode, {"online": 1, "tip": 0, "backlog": 0, "version": "v"},
         "state message: key 'online' must be true or false"),
        (State.decode, {"online": True, "tip": None, "backlog": 2, "version": "v"},
         "key 'backlog' is 2 with no tip"),
        (State.decode, {"online": True, "tip": 0, "backlog": 0, "version": ""}, "key 'version'"),
        (ConsistencyRequest.decode, {"from": 5, "to": 4}, "key 'from' 5 is larger than key 'to'"),
        (ConsistencyProof.decode, {"from": 1, "to": 4, "proof": [b"x"]}, "key 'proof' must be"),
        (ConsistencyProof.decode, {"from": 1, "to": 4, "proof": [bytes(32)] * 65},
         "consistency proof: key 'proof' must be a list of at most 64"),
    ]
    for decode, m, message in cases:
        with pytest.raises(DecodeError) as info:
            decode(cbor.encode(m))
        assert message in str(info.value), (m, str(info.value))


def test_non_deterministic_trailing_and_oversized_payloads_are_refused() -> None:
    good = Hello(3, 2).encode()
    with pytest.raises(DecodeError, match="hello message: not in deterministic"):
        Hello.decode(good + b"\x00")
    with pytest.raises(DecodeError, match="hello message: not in deterministic"):
        Hello.decode(cbor2.dumps({"acked": 2, "tip": 3}))  # keys unsorted
    with pytest.raises(DecodeError, match=r"hello message: .* more than the limit"):
        Hello.decode(cbor.encode({"tip": 1, "acked": None, "pad": "x" * 100}))
    big = ConsistencyProof(0, 1, (bytes(32),) * 64).encode()
    assert len(big) <= MAX_PROOF
    with pytest.raises(DecodeError, match="checkpoint message"):
        decode_checkpoint_payload(b"x" * (MAX_NOTE + 1))
    with pytest.raises(DecodeError, match="checkpoint message: not UTF-8"):
        decode_checkpoint_payload(b"\xff\n")


def test_an_ack_that_decode_would_refuse_cannot_be_built() -> None:
    with pytest.raises(DecodeError, match="log_index"):
        Ack(3, "ok")
    dropped = Ack(3, "ok", "dropped: blocks 1..2")  # a DROP record's answer: no entry
    assert Ack.decode(dropped.encode()) == dropped
    with pytest.raises(DecodeError, match="status"):
        Ack(3, "maybe")
    assert Ack.decode(Ack(3, "gap", "ahead").encode()) == Ack(3, "gap", "ahead")


def test_topics_for_a_device_and_a_prefix() -> None:
    t = DeviceTopics("greenhouse-7", "edgeledger/v1")
    assert (t.hello, t.blk, t.ack, t.state, t.cons, t.proof, t.checkpoint) == (
        "edgeledger/v1/dev/greenhouse-7/hello", "edgeledger/v1/dev/greenhouse-7/blk",
        "edgeledger/v1/dev/greenhouse-7/ack", "edgeledger/v1/dev/greenhouse-7/state",
        "edgeledger/v1/dev/greenhouse-7/cons", "edgeledger/v1/dev/greenhouse-7/proof",
        "edgeledger/v1/checkpoint")
    assert t.subscriptions() == [t.ack, t.proof, t.checkpoint]
    assert parse_device_topic(t.blk, "edgeledger/v1") == ("greenhouse-7", "blk")
    assert aggregator_subscriptions("a/b") == ["a/b/dev/+/hello", "a/b/dev/+/blk",
                                               "a/b/dev/+/state", "a/b/dev/+/cons",
                                               "a/b/dev/+/rotate", "a/b/dev/+/drop"]
    assert checkpoint_topic() == "edgeledger/v1/checkpoint"


@pytest.mark.parametrize("device", ["", "Upper", "-lead", "a/b", "a+", "#", "x" * 65, "é"])
def test_bad_device_ids_are_refused(device: str) -> None:
    with pytest.raises(DecodeError, match="device id"):
        DeviceTopics(device)
    with pytest.raises(DecodeError):
        parse_device_topic(f"edgeledger/v1/dev/{device}/blk")


@pytest.mark.parametrize("prefix", ["", "a//b", "/a", "a/", "a/+", "a/#", "$SYS/x", "a b",
                                    "x" * 129, "a/\x00"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    assert not valid_prefix(prefix)
    with pytest.raises(DecodeError, match="MQTT topic prefix"):
        DeviceTopics("gw-1", prefix)


@pytest.mark.parametrize("topic", ["edgeledger/v1/dev/gw-1", "edgeledger/v1/dev/gw-1/blk/x",
                                   "edgeledger/v1/dev/gw-1/other", "other/dev/gw-1/blk",
                                   "edgeledger/v1/checkpoint"])
def test_topics_that_are_not_a_device_topic_are_refused(topic: str) -> None:
    with pytest.raises(DecodeError, match="MQTT topic"):
        parse_device_topic(topic)


@FUZZ
@given(st.text(max_size=60))
def test_parse_device_topic_only_raises_decode_error(topic: str) -> None:
    try:
        dev, kind = parse_device_topic(topic)
    except DecodeError:
        return
    assert DeviceTopics(dev).__getattribute__(kind) == topic
