"""Micro-blocks (DESIGN.md 2.2): header and COSE_Sign1 strictness, signatures, sync messages
and the checks that tie a block to its readings."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeledger.core import cbor, merkle
from edgeledger.core.block import (
    MAX_BLOCK,
    MAX_READINGS,
    Block,
    BlockHeader,
    key_id,
    parse_sync_message,
    seal,
    sync_message,
    verify_readings,
)
from edgeledger.core.errors import DecodeError, VerificationError
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading

DROP = object()
DEVICE = "greenhouse-7"  # the device of the `world` fixture (conftest.py)
T = 1_700_000_000_000  # its base time
World = Any  # conftest.World; not imported, as another conftest.py may shadow the module


def header_map(changes: dict[Any, Any] | None = None) -> dict[Any, Any]:
    """A valid header map (height 3, two readings), with `changes` (DROP removes a key)."""
    m: dict[Any, Any] = {"v": 1, "dev": DEVICE, "h": 3, "prev": b"\x11" * 32,
                         "root": b"\x22" * 32, "cnt": 2, "t0": T, "t1": T + 5, "ts": T + 9}
    for key, value in (changes or {}).items():
        if value is DROP:
            del m[key]
        else:
            m[key] = value
    return m


def enc(obj: object) -> bytes:
    return cbor2.dumps(obj, canonical=True)


# --- block header ------------------------------------------------------------------------

EMPTY = merkle.EMPTY_ROOT
BAD_HEADERS: list[tuple[str, dict[Any, Any], str]] = [
    ("version 2", {"v": 2}, "key 'v'"),
    ("version 0", {"v": 0}, "key 'v'"),
    ("version true", {"v": True}, "key 'v'"),
    ("version 1.0", {"v": 1.0}, "key 'v'"),
    ("version text", {"v": "1"}, "key 'v'"),
    ("dev upper case", {"dev": "Greenhouse-7"}, "key 'dev'"),
    ("dev leading dash", {"dev": "-gh"}, "key 'dev'"),
    ("dev underscore", {"dev": "gh_7"}, "key 'dev'"),
    ("dev slash", {"dev": "gh/7"}, "key 'dev'"),
    ("dev empty", {"dev": ""}, "key 'dev'"),
    ("dev 65 chars", {"dev": "a" * 65}, "key 'dev'"),
    ("dev trailing newline", {"dev": "gh-7\n"}, "key 'dev'"),
    ("dev bytes", {"dev": b"gh-7"}, "key 'dev'"),
    ("h bool", {"h": True}, "key 'h'"),
    ("h negative", {"h": -1}, "key 'h'"),
    ("h float", {"h": 3.0}, "key 'h'"),
    ("prev 31 bytes", {"prev": b"\x11" * 31}, "key 'prev'"),
    ("prev 33 bytes", {"prev": b"\x11" * 33}, "key 'prev'"),
    ("prev text", {"prev": "11" * 32}, "key 'prev'"),
    ("root 31 bytes", {"root": b"\x22" * 31}, "key 'root'"),
    ("root list", {"root": [1]}, "key 'root'"),
    ("cnt bool", {"cnt": True}, "key 'cnt'"),
    ("cnt negative", {"cnt": -2}, "key 'cnt'"),
    ("cnt too many", {"cnt": MAX_READINGS + 1}, "key 'cnt'"),
    ("t0 bool", {"t0": False}, "key 't0'"),
    ("t1 float", {"t1": float(T + 5)}, "key 't1'"),
    ("ts text", {"ts": "now"}, "key 'ts'"),
    ("ts beyond int64", {"ts": 1 << 63}, "key 'ts'"),
    ("t0 NaN", {"t0": float("nan")}, "NaN"),
    ("ts inf", {"ts": float("inf")}, "NaN and infinities"),
    ("t0 after t1", {"t0": T + 6}, "t0 1700000000006 is after t1 1700000000005"),
    ("empty block, t0 != ts", {"cnt": 0, "root": EMPTY, "t0": T + 9, "t1": T + 9, "ts": T + 10},
     "an empty block must have t0 = t1 = ts and the empty root"),
    ("empty block, t1 != ts", {"cnt": 0, "root": EMPTY, "t0": T, "t1": T, "ts": T + 1},
     "an empty block must have"),
    ("empty block, non-empty root", {"cnt": 0, "t0": T, "t1": T, "ts": T},
     "an empty block must have"),
    ("prev not zero at height 0", {"h": 0}, "block 0 must have prev = 32 zero bytes"),
    ("missing v", {"v": DROP}, "missing key(s) ['v']"),
    ("missing prev", {"prev": DROP}, "missing key(s) ['prev']"),
    ("missing ts and root", {"ts": DROP, "root": DROP}, "missing key(s) ['root', 'ts']"),
    ("unknown key", {"sig": b""}, "unknown key(s) ['sig']"),
    ("unknown int key", {4: b""}, "unknown key(s) ['4']"),
]


@pytest.mark.parametrize(("changes", "needle"), [(c, n) for _, c, n in BAD_HEADERS],
                         ids=[i for i, _, _ in BAD_HEADERS])
def test_header_rejections_name_the_key(changes: dict[Any, Any], needle: str) -> None:
    with pytest.raises(DecodeError) as err:
        BlockHeader.decode(enc(header_map(changes)), "block gh/3 header")
    assert str(err.value).startswith("block gh/3 header: ")
    assert needle in str(err.value)


@pytest.mark.parametrize(("name", "data", "needle"), [
    ("not a map", enc([1]), "expected a CBOR map"),
    ("trailing bytes", enc(header_map()) + b"\x00", "not in deterministic"),
    ("unsorted", cbor2.dumps(dict(sorted(header_map().items()))), "not in deterministic"),
    ("indefinite", b"\xbf" + enc(header_map())[1:] + b"\xff", "not in deterministic"),
    ("non-minimal h", enc(header_map()).replace(b"\x61h\x03", b"\x61h\x18\x03"),
     "not in deterministic"),
    ("oversize", enc(header_map()) + bytes(MAX_BLOCK), "more than the limit"),
])
def test_header_encoding_rejections(name: str, data: bytes, needle: str) -> None:
    with pytest.raises(DecodeError, match=rf"^block header: .*{needle}"):
        BlockHeader.decode(data)


@pytest.mark.parametrize("changes", [
    {},
    {"h": 0, "prev": bytes(32)},
    {"cnt": 0, "root": EMPTY, "t0": T, "t1": T, "ts": T},
    {"t0": -5, "t1": -5, "ts": -10},  # seal time before readings: allowed, flagged elsewhere
    {"dev": "a", "h": (1 << 64) - 1, "cnt": MAX_READINGS},
    {"dev": "0" + "-" * 63},
])
def test_good_headers_round_trip(changes: dict[str, Any]) -> None:
    data = enc(header_map(changes))
    header = BlockHeader.decode(data)
    assert header.encode() == data
    assert header.as_map() == header_map(changes)


headers = st.builds(
    lambda dev, h, prev, root, cnt, ts, a, b: BlockHeader(
        dev, h, bytes(32) if h == 0 else prev, root if cnt else EMPTY, cnt,
        min(a, b) if cnt else ts, max(a, b) if cnt else ts, ts),
    st.from_regex(r"[a-z0-9][a-z0-9-]{0,63}", fullmatch=True),
    st.integers(0, (1 << 64) - 1), st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32), st.integers(0, MAX_READINGS),
    *[st.integers(-(1 << 63), (1 << 63) - 1)] * 3)


@settings(max_examples=150, deadline=None)
@given(headers)
def test_header_round_trip(header: BlockHeader) -> None:
    assert BlockHeader.decode(header.encode()) == header


# --- COSE_Sign1 structure ------------------------------------------------------------------

KID = b"\x5d" * 8


def cose(prot: Any = None, unprot: Any = None, payload: Any = None, sig: Any = None,
         tag: int | None = 18, extra: tuple[Any, ...] = ()) -> bytes:
    """A COSE_Sign1-like item with the given parts (defaults: a well-formed block)."""
    parts = [enc({1: -8, 4: KID}) if prot is None else prot,
             {} if unprot is None else unprot,
             enc(header_map()) if payload is None else payload,
             b"\x00" * 64 if sig is None else sig, *extra]
    return enc(parts if tag is None else cbor2.CBORTag(tag, parts))


BAD_COSE: list[tuple[str, bytes, str]] = [
    ("untagged", cose(tag=None), "not a tagged COSE_Sign1 (tag 18)"),
    ("tag 98 (COSE_Sign)", cose(tag=98), "not a tagged COSE_Sign1 (tag 18)"),
    ("tag 17 (COSE_Mac0)", cose(tag=17), "not a tagged COSE_Sign1 (tag 18)"),
    ("tagged map", enc(cbor2.CBORTag(18, {})), "must be [protected, unprotected"),
    ("three parts", enc(cbor2.CBORTag(18, [b"", {}, b""])), "must be [protected, unprotected"),
    ("five parts", cose(extra=(b"",)), "must be [protected, unprotected"),
    ("protected as map", cose(prot={1: -8, 4: KID}), "must be [protected, unprotected"),
    ("payload as map", cose(payload=header_map()), "must be [protected, unprotected"),
    ("payload null (detached)", enc(cbor2.CBORTag(18, [enc({1: -8, 4: KID}), {}, None,
                                                       bytes(64)])),
     "must be [protected, unprotected"),
    ("signature as text", cose(sig="00" * 64), "must be [protected, unprotected"),
    ("unprotected holds kid", cose(unprot={4: KID}), "the unprotected header must be empty"),
    ("unprotected as bytes", cose(unprot=b""), "the unprotected header must be empty"),
    ("unprotected as list", cose(unprot=[]), "the unprotected header must be empty"),
    ("signature 63 bytes", cose(sig=bytes(63)), "an Ed25519 signature is 64 bytes, not 63"),
    ("signature 65 bytes", cose(sig=bytes(65)), "an Ed25519 signature is 64 bytes, not 65"),
    ("alg ES256", cose(prot=enc({1: -7, 4: KID})), "protected header must be"),
    ("alg as float", cose(prot=enc({1: -8.0, 4: KID})), "protected header must be"),
    ("alg as text", cose(prot=enc({1: "EdDSA", 4: KID})), "protected header must be"),
    ("alg key as bool", cose(prot=enc({True: -8, 4: KID})), "protected header must be"),
    ("kid key as float", cose(prot=enc({1: -8, 4.0: KID})), "protected header must be"),
    ("no kid", cose(prot=enc({1: -8})), "protected header must be"),
    ("no alg", cose(prot=enc({4: KID})), "protected header must be"),
    ("kid 7 bytes", cose(prot=enc({1: -8, 4: KID[:7]})), "protected header must be"),
    ("kid 9 bytes", cose(prot=enc({1: -8, 4: KID + b"\x00"})), "protected header must be"),
    ("kid as text", cose(prot=enc({1: -8, 4: "5d5d5d5d"})), "protected header must be"),
    ("extra protected key", cose(prot=enc({1: -8, 3: 0, 4: KID})), "protected header must be"),
    ("protected not a map", cose(prot=enc([1, -8])), "protected header must be"),
    ("protected empty bytes", cose(prot=b""), "protected header: not valid CBOR"),
    ("protected unsorted", cose(prot=cbor2.dumps({4: KID, 1: -8})),
     "protected header: not in deterministic"),
    ("protected trailing", cose(prot=enc({1: -8, 4: KID}) + b"\x00"),
     "protected header: not in deterministic"),
    ("payload not a map", cose(payload=enc([])), "header: expected a CBOR map"),
    ("payload bad dev", cose(payload=enc(header_map({"dev": "X"}))), "header: key 'dev'"),
    ("payload empty-block rule", cose(payload=enc(header_map({"cnt": 0}))),
     "header: an empty block must have"),
    ("payload NaN", cose(payload=enc(header_map({"ts": float("nan")}))), "header: holds nan"),
    ("indefinite outer array", b"\xd2\x9f" + cose(tag=None)[1:] + b"\xff",
     "not in deterministic"),
    ("trailing bytes", cose() + b"\xf6", "not in deterministic"),
    ("oversize", cose(payload=bytes(MAX_BLOCK)), "more than the limit"),
    ("not CBOR", b"\xd2\x84\x41", "not valid CBOR"),
]


@pytest.mark.parametrize(("data", "needle"), [(d, n) for _, d, n in BAD_COSE],
                         ids=[i for i, _, _ in BAD_COSE])
def test_cose_rejections_name_the_part(data: bytes, needle: str) -> None:
    with pytest.raises(DecodeError) as err:
        Block.parse(data, "sync block 9")
    assert str(err.value).startswith("sync block 9")
    assert needle in str(err.value)


def test_well_formed_cose_parses() -> None:
    block = Block.parse(cose())
    assert (block.kid, block.signature, block.header) == \
        (KID, bytes(64), BlockHeader.decode(enc(header_map())))
    assert block.hash == hashlib.sha256(enc(header_map())).digest()


# --- sealing and signatures ------------------------------------------------------------


def test_seal_gives_what_parse_reads(world: World) -> None:
    block = Block.parse(world.block.cose)
    assert block == world.block
    assert block.kid == key_id(world.device.public_key) == \
        hashlib.sha256(world.device.public_key).digest()[:8]
    assert block.header.cnt == len(world.readings) and block.header.h == 2
    assert (block.header.t0, block.header.t1) == (T + 5, T + 30)
    block.verify(world.device.public_key)


def test_empty_heartbeat_block(world: World) -> None:
    block = seal(world.device, DEVICE, 0, bytes(32), [], T)
    assert block.header.root == merkle.EMPTY_ROOT
    assert block.header.t0 == block.header.t1 == block.header.ts == T
    Block.parse(block.cose).verify(world.device.public_key)
    assert verify_readings(block, []) == []


def test_blocks_chain_by_payload_hash(world: World) -> None:
    b0 = Block.parse(world.log_leaves[0])
    b1 = Block.parse(world.log_leaves[3])
    assert b0.header.h == 0 and b0.header.prev == bytes(32)
    assert b1.header.prev == hashlib.sha256(b0.payload).digest() == b0.hash


@pytest.mark.parametrize(("dev", "h", "prev"), [
    ("Bad", 1, b"\x01" * 32),
    ("", 1, b"\x01" * 32),
    (DEVICE, 0, b"\x01" * 32),
])
def test_seal_refuses_what_parse_would_reject(world: World, dev: str, h: int,
                                              prev: bytes) -> None:
    with pytest.raises(DecodeError):
        seal(world.device, dev, h, prev, list(world.readings), T)


def test_verify_with_another_key_fails_on_kid(world: World,
                                              make_signer: Callable[[str, int], Signer]) -> None:
    other = make_signer("other", 77)
    with pytest.raises(VerificationError) as err:
        world.block.verify(other.public_key)
    assert err.value.check == "kid"
    assert key_id(other.public_key).hex() in str(err.value)


def test_bad_signature_under_the_right_kid(world: World,
                                           cose_sign1: Callable[..., bytes],
                                           make_signer: Callable[[str, int], Signer]) -> None:
    # signed by another key, but claiming the device's kid
    forged = cose_sign1(make_signer("x", 78), world.block.payload,
                        kid=key_id(world.device.public_key))
    with pytest.raises(VerificationError) as err:
        Block.parse(forged).verify(world.device.public_key)
    assert err.value.check == "block signature"
    assert f"block {DEVICE}/2" in str(err.value)
    # one bit of the signature
    parts = cbor.decode(world.block.cose, "b").value
    flipped = enc(cbor2.CBORTag(18, [parts[0], {}, parts[2],
                                     bytes([parts[3][0] ^ 1]) + parts[3][1:]]))
    with pytest.raises(VerificationError, match="block signature"):
        Block.parse(flipped).verify(world.device.public_key)
    # a payload the signature was not made over
    other_payload = enc(dict(cbor.decode(parts[2], "p"), ts=T + 61))
    swapped = enc(cbor2.CBORTag(18, [parts[0], {}, other_payload, parts[3]]))
    with pytest.raises(VerificationError, match="block signature"):
        Block.parse(swapped).verify(world.device.public_key)
    # a hand-made COSE_Sign1 by the right key is accepted
    Block.parse(cose_sign1(world.device, world.block.payload)).verify(world.device.public_key)


def test_verify_names_the_check_it_is_given(world: World,
                                            make_signer: Callable[[str, int], Signer]) -> None:
    forged = seal(make_signer("x", 79), DEVICE, 2, world.block.header.prev, [], T)
    block = Block.parse(enc(cbor2.CBORTag(18, [world.block.protected, {}, forged.payload,
                                               forged.signature])))
    with pytest.raises(VerificationError) as err:
        block.verify(world.device.public_key, check="equivocation evidence")
    assert err.value.check == "equivocation evidence"


# --- sync messages ------------------------------------------------------------------------


def test_sync_message_round_trip(world: World) -> None:
    data = sync_message(world.block, list(world.readings))
    assert cbor.decode(data, "m") == {"blk": world.block.cose,
                                      "rd": [r.raw for r in world.readings]}
    block, raws = parse_sync_message(data)
    assert block == world.block
    assert verify_readings(block, raws) == list(world.readings)


def _sync(blk: Any, rd: Any, **extra: Any) -> bytes:
    return enc({"blk": blk, "rd": rd, **extra})


@pytest.mark.parametrize(("make", "needle"), [
    (lambda w: enc([w.block.cose, []]), "expected a CBOR map"),
    (lambda w: enc({"blk": w.block.cose}), "missing key(s) ['rd']"),
    (lambda w: enc({"rd": []}), "missing key(s) ['blk']"),
    (lambda w: _sync(w.block.cose, [], ack=1), "unknown key(s) ['ack']"),
    (lambda w: _sync(w.block.cose.hex(), []), "key 'blk' must be bytes"),
    (lambda w: _sync(w.block.cose, b""), "key 'rd' must be a list"),
    (lambda w: _sync(w.block.cose, [b"", "x"]), "key 'rd' must be a list"),
    (lambda w: _sync(w.block.cose, {"0": b""}), "key 'rd' must be a list"),
    (lambda w: _sync(w.block.cose, [b""] * (MAX_READINGS + 1)), "key 'rd' must be a list"),
    (lambda w: _sync(w.block.cose[:-1], []), "sync message block: not valid CBOR"),
    (lambda w: _sync(b"\xa0", []), "sync message block: not a tagged COSE_Sign1"),
    (lambda w: _sync(w.block.cose, []) + b"\x00", "not in deterministic"),
    (lambda w: b"\xbf" + _sync(w.block.cose, [])[1:] + b"\xff", "not in deterministic"),
])
def test_sync_message_rejections(world: World, make: Callable[[World], bytes],
                                 needle: str) -> None:
    with pytest.raises(DecodeError) as err:
        parse_sync_message(make(world))
    assert str(err.value).startswith("sync message")
    assert needle in str(err.value)


def _readings_failure(block: Block, raws: list[bytes]) -> str:
    with pytest.raises(VerificationError) as err:
        verify_readings(block, raws)
    assert err.value.check == "readings"
    return str(err.value)


def test_verify_readings_count(world: World) -> None:
    raws = [r.raw for r in world.readings]
    assert "cnt=5, message has 4" in _readings_failure(world.block, raws[:-1])
    assert "cnt=5, message has 6" in _readings_failure(world.block, [*raws, raws[0]])
    assert "cnt=5, message has 0" in _readings_failure(world.block, [])


def test_verify_readings_root(world: World) -> None:
    raws = [r.raw for r in world.readings]
    swapped = [raws[1], raws[0], *raws[2:]]
    assert "do not hash to the header's root" in _readings_failure(world.block, swapped)
    changed = Reading("bme280-1/temperature", T + 10, 40, 21.6, "Cel").raw
    assert "root" in _readings_failure(world.block, [changed, *raws[1:]])


def test_verify_readings_undecodable(world: World) -> None:
    raws = [r.raw for r in world.readings]
    msg = _readings_failure(world.block, [*raws[:2], raws[2] + b"\x00", *raws[3:]])
    assert f"block {DEVICE}/2 reading 2: not in deterministic" in msg


@pytest.mark.parametrize(("t0", "t1"), [(T + 4, T + 30), (T + 5, T + 31), (T, T + 99)])
def test_verify_readings_times(world: World, cose_sign1: Callable[..., bytes],
                               t0: int, t1: int) -> None:
    # a correctly signed header with the right root and count, but t0/t1 that lie
    hdr = dict(world.block.header.as_map(), t0=t0, t1=t1)
    block = Block.parse(cose_sign1(world.device, enc(hdr)))
    block.verify(world.device.public_key)
    msg = _readings_failure(block, [r.raw for r in world.readings])
    assert "t0/t1 do not match" in msg


@pytest.mark.parametrize("qs", [(1, 1), (2, 1), (5, 0)])
def test_verify_readings_sequence(world: World, qs: tuple[int, int]) -> None:
    rs = [Reading("bme280-1/temperature", T, qs[0], 1.0),
          Reading("co2-1/ppm", T, 0, 400),
          Reading("bme280-1/humidity", T + 1, qs[1], 40)]
    block = seal(world.device, DEVICE, 7, b"\x01" * 32, rs, T + 2)
    msg = _readings_failure(block, [r.raw for r in rs])
    assert f"reading 2 (bme280-1/humidity) has q={qs[1]}" in msg


def test_verify_readings_accepts_equal_q_across_sensors(world: World) -> None:
    rs = [Reading("a-1/x", T, 3, 1), Reading("b-1/x", T, 3, 1), Reading("a-1/y", T, 4, 1)]
    block = seal(world.device, DEVICE, 7, b"\x01" * 32, rs, T)
    assert verify_readings(block, [r.raw for r in rs]) == rs


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a-1/x", "a-1/y", "b-2/z"]),
                          st.integers(-(1 << 40), 1 << 40), st.floats(-1e6, 1e6)),
                max_size=12),
       st.integers(0, 1 << 40), st.integers(-(1 << 40), 1 << 40))
def test_sync_message_property(world: World, spec: list[tuple[str, int, float]],
                               h: int, ts: int) -> None:
    qs: dict[str, int] = {}
    rs = []
    for name, t, v in spec:
        qs[name.split("/")[0]] = qs.get(name.split("/")[0], -1) + 1
        rs.append(Reading(name, t, qs[name.split("/")[0]], v))
    block = seal(world.device, DEVICE, h, bytes(32) if h == 0 else b"\x07" * 32, rs, ts)
    data = sync_message(block, rs)
    parsed, raws = parse_sync_message(data)
    assert parsed == block and parsed.cose == block.cose
    parsed.verify(world.device.public_key)
    assert verify_readings(parsed, raws) == rs
    assert sync_message(parsed, [Reading.decode(r) for r in raws]) == data
