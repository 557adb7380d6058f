"""Fixed inputs whose encodings must not depend on the cbor2 major version.

Imported by the main env (cbor2 6) and by pycose_peer.py in the pycose env
(cbor2 5): both build the same readings, block headers, blocks, sync messages
and MQTT-style maps with edgeledger and must get byte-identical encodings.
Ed25519 signatures are deterministic, so whole sealed blocks compare too.

`reencode` is the other half: it decodes bytes made by the other env with
edgeledger's strict decoders and encodes the result again from fresh objects.
"""

from __future__ import annotations

import hashlib

import cbor2

from edgeledger.core import cbor
from edgeledger.core.block import (
    ZERO_HASH,
    Block,
    BlockHeader,
    parse_sync_message,
    seal,
    sync_message,
)
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading

SEED = bytes(range(32))
DEVICE = "greenhouse-7"
T = 1_700_000_000_000

# Values chosen at the edges of CBOR's integer and float widths: a canonical encoder
# picks the shortest exact form, and that choice is what could differ between versions.
VALUES: list[object] = [
    0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1,
    -1, -24, -25, -256, -257, -(2**32), -(2**63),
    0.0, -0.0, 1.0, 1.5, 21.5, -4.25, 0.1, 1e-7, 32752.0, 32767.0, 32768.5, 65504.5, 65536.0,
    5.960464477539063e-08, 6.103515625e-05, 3.4028234663852886e38, 1e300, 2.2250738585072014e-308,
    True, False, "", "ok", "ünïcödé ✓", "x" * 24, "y" * 256,
    {"lat": 52.5200066, "lon": 13.404954, "alt": 34.0},
    {"a": 1, "bb": -2, "c": 0.5},
]

# cbor2 5's C encoder (5.4.6 to 5.9.0, the `_cbor2` extension that cbor2.dumps uses)
# writes every float that half precision holds exactly with 2**15 <= |x| < 2**16 as a
# 5-byte single (0xfa) instead of the 3-byte half (0xf9) that RFC 8949 4.2.1 asks for
# and that cbor2 6 writes: 65504.0 is fa477fe000 there, f97bff here. These values are
# checked on their own by test_pycose.py: edgeledger.core.cbor writes floats itself,
# so both versions must give the same bytes.
CBOR2_5_HALF_FLOATS: list[float] = [32768.0, 40000.0, 65504.0, -49152.0]


def cbor2_5_float_bug(value: object) -> bool:
    """True for a float that cbor2 5 encodes wider than RFC 8949 allows (see above)."""
    if not isinstance(value, float) or not 2.0**15 <= abs(value) < 2.0**16:
        return False
    return float(int(value)) == value and int(value) % 32 == 0


def readings() -> list[Reading]:
    """Readings over every kind of value, with and without unit and attestation."""
    out = []
    for i, v in enumerate(VALUES):
        unit = ("Cel", "%RH", "kWh", None)[i % 4]
        att = hashlib.sha256(bytes([i])).digest() if i % 5 == 0 else None
        out.append(Reading(f"sensor-{i % 3}/m{i}", T + i * 997 - 500, i, v, unit, att))  # type: ignore[arg-type]
    out.append(Reading("bme280-1/temperature", -(2**63), 2**64 - 1, 21.5, "Cel", b""))
    return out


def blocks() -> list[tuple[Block, list[Reading]]]:
    """A chain of blocks with 0, 1, 3, 7 and all readings, each sealed with SEED."""
    signer = Signer("device", SEED)
    rs = readings()
    out, prev = [], ZERO_HASH
    for h, (lo, hi) in enumerate([(0, 0), (0, 1), (1, 4), (4, 11), (0, len(rs))]):
        chunk = rs[lo:hi] if h < 4 else _resequenced(rs)
        block = seal(signer, DEVICE, h, prev, chunk, T + 60_000 * h)
        out.append((block, chunk))
        prev = block.hash
    return out


def _resequenced(rs: list[Reading]) -> list[Reading]:
    # A block's readings must have strictly increasing q per sensor: renumber.
    return [Reading(r.n, r.t, 1000 + i, r.v, r.u, r.a) for i, r in enumerate(rs)]


MISC: dict[str, object] = {
    "hello-null": {"tip": None, "acked": None},
    "hello": {"tip": 41, "acked": 17},
    "ack": {"next": 42, "status": "gap", "why": "expected 42", "log_index": 2**40,
            "checkpoint": "edgeledger.example/agg-1\n3\nAAAA\n"},
    "state": {"online": True, "tip": 7, "backlog": 0, "version": "0.1.0"},
    "protected": {1: -8, 4: b"\x01" * 8},
    "nested": [[], {}, [1, [2, [3]]], {"z": {"y": [b"", b"\xff" * 300]}}],
    "tag18": cbor2.CBORTag(18, [b"\xa0", {}, b"", b"\x00" * 64]),
}


def vectors() -> dict[str, str]:
    """Name -> hex of the deterministic encoding, for everything above."""
    out = {f"reading/{i}": r.raw.hex() for i, r in enumerate(readings())}
    for block, chunk in blocks():
        name = f"{block.header.h}-cnt{block.header.cnt}"
        out[f"header/{name}"] = block.header.encode().hex()
        out[f"block/{name}"] = block.cose.hex()
        out[f"sync/{name}"] = sync_message(block, chunk).hex()
    for name, obj in MISC.items():
        out[f"misc/{name}"] = cbor.encode(obj).hex()
    return out


def reencode(name: str, data: bytes) -> bytes:
    """Decode `data` (vector `name`) strictly with edgeledger and encode it again anew."""
    kind = name.split("/", 1)[0]
    if kind == "reading":
        return _fresh_reading(Reading.decode(data)).raw
    if kind == "header":
        return _fresh_header(BlockHeader.decode(data)).encode()
    if kind == "block":
        block = Block.parse(data)
        block.verify(Signer("device", SEED).public_key)
        return _recompose(block)
    if kind == "sync":
        block, raws = parse_sync_message(data)
        rs = [_fresh_reading(Reading.decode(raw)) for raw in raws]
        return cbor.encode({"blk": _recompose(block), "rd": [r.raw for r in rs]})
    return cbor.encode(cbor.decode(data, name))


def _fresh_reading(r: Reading) -> Reading:
    # A new object, so `raw` is encoded here rather than copied from the input.
    return Reading(r.n, r.t, r.q, r.v, r.u, r.a)


def _fresh_header(h: BlockHeader) -> BlockHeader:
    return BlockHeader(h.dev, h.h, h.prev, h.root, h.cnt, h.t0, h.t1, h.ts)


def _recompose(block: Block) -> bytes:
    protected = cbor.encode(cbor.decode(block.protected, "protected header"))
    payload = _fresh_header(block.header).encode()
    return cbor.encode(cbor2.CBORTag(18, [protected, {}, payload, block.signature]))
