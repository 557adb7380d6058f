#!/usr/bin/env python3
"""Make the shared test vectors of the framed protocol (firmware_bridge/PROTOCOL.md).

Run from anywhere: `python3 firmware_bridge/vectors/make_vectors.py`; it rewrites
frames.json, faults.json and streams.json next to itself, byte for byte the same on
every run (fixed seeds, a fixed Ed25519 key).

Theory of operation. This file is a literal transcription of PROTOCOL.md, written
apart from the gateway's decoder and the C library so that the vectors check both
rather than echo one of them: a bitwise CRC-32C straight from its parameters, the
COBS of the 1999 paper, struct packing per field table, and a reference decoder
that applies the fault checks in the order of PROTOCOL.md section 1. Only the
standard library is needed, except PyNaCl for the one real Ed25519 signature (the
attestation vector); without it a fixed stand-in signature is used.
"""

from __future__ import annotations

import json
import math
import random
import re
import struct
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VERSION = 1
READING, HELLO, ATTEST = 1, 2, 3
VTYPES = {1: "int32", 2: "int64", 3: "float32", 4: "float64", 5: "bool", 6: "text"}
VFORMAT = {1: "<i", 2: "<q", 3: "<f", 4: "<d"}
ID_RE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_FRAME, MAX_CHUNK = 254, 256
# RFC 8032 test key 1 (secret seed); the vectors' firmware key.
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")


# --- CRC-32C, bit by bit, from its parameters ------------------------------------------

def crc32c(data: bytes) -> int:
    """CRC-32C: poly 0x1edc6f41 reflected (0x82f63b78), init and xorout 0xffffffff."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


# --- COBS -----------------------------------------------------------------------------

def cobs_encode(data: bytes) -> bytes:
    """COBS without the optional trailing code after a full 254-byte block."""
    out, block, full = bytearray(), bytearray(), False
    for byte in data:
        full = False
        if byte == 0:
            out += bytes([len(block) + 1]) + block
            block.clear()
        else:
            block.append(byte)
            if len(block) == 254:
                out += b"\xff" + block
                block.clear()
                full = True
    if not full:
        out += bytes([len(block) + 1]) + block
    return bytes(out)


def cobs_decode(chunk: bytes) -> bytes | None:
    """The decoded bytes, or None when a code points past the chunk's end."""
    out, i = bytearray(), 0
    while i < len(chunk):
        code = chunk[i]
        if i + code > len(chunk):
            return None
        out += chunk[i + 1:i + code]
        i += code
        if code != 0xFF and i < len(chunk):
            out.append(0)
    return bytes(out)


def wire(frame: bytes) -> bytes:
    """A frame as sent: 0x00 COBS(frame) 0x00."""
    return b"\x00" + cobs_encode(frame) + b"\x00"


# --- encoding, per PROTOCOL.md section 3 ------------------------------------------------

def str8(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return bytes([len(raw)]) + raw


def frame(ftype: int, seq: int, body: bytes, version: int = VERSION) -> bytes:
    head = struct.pack("<BBH", version, ftype, seq) + body
    return head + struct.pack("<I", crc32c(head))


def value_bytes(vtype: int, value: Any) -> bytes:
    if vtype in VFORMAT:
        return struct.pack(VFORMAT[vtype], value)
    if vtype == 5:
        return bytes([1 if value else 0])
    return str8(value)


def reading(seq: int, sensor: str, metric: str, unit: str, vtype: int, value: Any,
            flags: int = 0) -> bytes:
    body = (bytes([flags]) + str8(sensor) + str8(metric) + str8(unit) + bytes([vtype])
            + value_bytes(vtype, value))
    return frame(READING, seq, body)


def hello(seq: int, firmware: str, channels: list[tuple[str, str, str, int]],
          part: int = 0, parts: int = 1) -> bytes:
    body = str8(firmware) + bytes([part, parts, len(channels)])
    for sensor, metric, unit, vtype in channels:
        body += str8(sensor) + str8(metric) + str8(unit) + bytes([vtype])
    return frame(HELLO, seq, body)


def attest(seq: int, signed_seq: int, signature: bytes, alg: int = 1) -> bytes:
    return frame(ATTEST, seq, bytes([alg]) + struct.pack("<H", signed_seq) + str8(signature))


def sign(message: bytes) -> bytes:
    try:
        from nacl.signing import SigningKey
    except ImportError:  # pragma: no cover - the stand-in keeps the vectors decodable
        return bytes(range(64))
    return bytes(SigningKey(SEED).sign(message).signature)


# --- the reference decoder, per PROTOCOL.md section 1 --------------------------------

class BodyError(Exception):
    pass


class Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.i = data, 0

    def take(self, n: int) -> bytes:
        if self.i + n > len(self.data):
            raise BodyError("body ends early")
        out = self.data[self.i:self.i + n]
        self.i += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def str8(self) -> bytes:
        return self.take(self.u8())

    def ident(self) -> str:
        raw = self.str8()
        if ID_RE.fullmatch(raw) is None:
            raise BodyError("bad id")
        return raw.decode()

    def unit(self, low: int = 0) -> str:
        raw = self.str8()
        if not low <= len(raw) <= 32 or any(not 0x21 <= b <= 0x7E for b in raw):
            raise BodyError("bad unit")
        return raw.decode()

    def value(self, vtype: int) -> tuple[Any, bytes]:
        if vtype in VFORMAT:
            raw = self.take(struct.calcsize(VFORMAT[vtype]))
            (value,) = struct.unpack(VFORMAT[vtype], raw)
            if isinstance(value, float) and not math.isfinite(value):
                raise BodyError("non-finite")
            return value, raw
        if vtype == 5:
            raw = self.take(1)
            if raw[0] > 1:
                raise BodyError("bool")
            return raw[0] == 1, raw
        if vtype == 6:
            raw = self.str8()
            if len(raw) > 64:
                raise BodyError("long text")
            try:
                return raw.decode("utf-8", "strict"), raw
            except UnicodeDecodeError as exc:
                raise BodyError("utf-8") from exc
        raise BodyError("vtype")


def parse(data: bytes) -> dict[str, Any]:
    version, ftype, seq = struct.unpack_from("<BBH", data)
    c = Cursor(data[4:-4])
    out: dict[str, Any] = {"version": version, "seq": seq}
    if ftype == READING:
        flags = c.u8()
        if flags & 0xFE:
            raise BodyError("flags")
        sensor, metric, unit, vtype = c.ident(), c.ident(), c.unit(), c.u8()
        value, raw = c.value(vtype)
        out.update(type="reading", flags=flags, sensor=sensor, metric=metric, unit=unit,
                   vtype=VTYPES[vtype], value=value, value_hex=raw.hex())
    elif ftype == HELLO:
        firmware = c.unit(low=1)
        part, parts, count = c.u8(), c.u8(), c.u8()
        if parts == 0 or part >= parts:
            raise BodyError("part")
        channels = []
        for _ in range(count):
            sensor, metric, unit, vtype = c.ident(), c.ident(), c.unit(), c.u8()
            if vtype not in VTYPES:
                raise BodyError("vtype")
            channels.append({"sensor": sensor, "metric": metric, "unit": unit,
                             "vtype": VTYPES[vtype]})
        out.update(type="hello", firmware=firmware, part=part, parts=parts,
                   channels=channels)
    else:
        alg, signed_seq = c.u8(), struct.unpack("<H", c.take(2))[0]
        signature = c.str8()
        if alg != 1 or len(signature) != 64:
            raise BodyError("alg")
        out.update(type="attest", alg=alg, signed_seq=signed_seq, signature=signature.hex())
    if c.i != len(c.data):
        raise BodyError("trailing")
    out["raw"] = data.hex()
    return out


def check_chunk(chunk: bytes) -> dict[str, Any] | str:
    if len(chunk) > MAX_CHUNK:
        return "overlong"
    data = cobs_decode(chunk)
    if data is None:
        return "cobs"
    if len(data) > MAX_FRAME:
        return "overlong"
    if len(data) < 8:
        return "short"
    if crc32c(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        return "crc"
    if data[0] != VERSION:
        return "version"
    if data[1] not in (READING, HELLO, ATTEST):
        return "type"
    try:
        return parse(data)
    except BodyError:
        return "body"


def decode_stream(stream: bytes) -> list[dict[str, Any]]:
    """Every outcome of a stream, in order. A chunk with no closing 0x00 gives nothing,
    unless it is already overlong (reported when its byte 257 arrives)."""
    out: list[dict[str, Any]] = []
    number, start = 0, 0
    for i, byte in enumerate(stream):
        if byte != 0:
            continue
        if i > start:
            result = check_chunk(stream[start:i])
            item: dict[str, Any] = {"frame": number, "offset": start}
            item.update({"fault": result} if isinstance(result, str) else {"ok": result})
            out.append(item)
            number += 1
        start = i + 1
    if len(stream) - start > MAX_CHUNK:
        out.append({"frame": number, "offset": start, "fault": "overlong"})
    return out


# --- the vectors -------------------------------------------------------------------------

def valid_frames() -> list[tuple[str, bytes]]:
    t = reading(7, "bme280-1", "temperature", "Cel", 3, 21.5, flags=1)
    long_id = "s" + "x" * 63
    return [
        ("reading-int32", reading(1, "meter-1", "count", "", 1, -123456)),
        ("reading-int32-zero", reading(0, "m", "n", "", 1, 0)),
        ("reading-int64", reading(2, "meter-1", "energy", "J", 2, 9_007_199_254_740_993)),
        ("reading-int64-min", reading(3, "meter-1", "delta", "J", 2, -(1 << 63))),
        ("reading-float32", reading(4, "bme280-1", "temperature", "Cel", 3, 21.5)),
        ("reading-float32-humidity", reading(5, "bme280-1", "humidity", "%RH", 3,
                                             struct.unpack("<f", struct.pack("<f", 41.3))[0])),
        ("reading-float64", reading(6, "bme280-1", "pressure", "Pa", 4, 101325.12345678901)),
        ("reading-float64-negative-zero", reading(8, "probe.2", "offset", "K", 4, -0.0)),
        ("reading-bool-true", reading(9, "door_1", "open", "", 5, True)),
        ("reading-bool-false", reading(10, "door_1", "open", "", 5, False)),
        ("reading-text", reading(11, "tag-9", "status", "", 6, "Kühlraum OK ✓")),
        ("reading-text-empty", reading(12, "tag-9", "note", "", 6, "")),
        ("reading-max-lengths", reading(13, long_id, "m" + "y" * 63, "u" * 32, 6, "é" * 32)),
        ("reading-seq-wrap", reading(65535, "bme280-1", "temperature", "Cel", 3, -40.0)),
        ("reading-attest-flag", t),
        ("attest-ed25519", attest(8, 7, sign(t))),
        ("hello", hello(0, "bme280-bridge/1.0.0", [
            ("bme280-1", "temperature", "Cel", 3), ("bme280-1", "humidity", "%RH", 3),
            ("bme280-1", "pressure", "Pa", 4)])),
        ("hello-part-2-of-2", hello(1, "multi/2.1", [("door_1", "open", "", 5)], 1, 2)),
        ("hello-no-channels", hello(2, "x", [])),
        ("hello-254-bytes", hello(3, "f" * 32, [("s" * 64, "m" * 64, "u" * 32, 1),
                                                 ("a", "b" * 41, "", 2)])),
    ]


def refit(data: bytes) -> bytes:
    """Recompute a frame's CRC after its bytes were changed on purpose."""
    return data[:-4] + struct.pack("<I", crc32c(data[:-4]))


def fault_frames() -> list[tuple[str, bytes]]:
    """(name, stream) pairs: each a faulty chunk followed by one good frame."""
    good = reading(100, "bme280-1", "temperature", "Cel", 3, 20.25)
    base = bytearray(good)
    flipped = bytearray(base)
    flipped[10] ^= 0x04
    crc_byte = bytearray(base)
    crc_byte[-1] ^= 0x80
    w = wire(good)
    body = good[:-4]
    cases: list[tuple[str, bytes]] = [
        ("bad-crc-bit-flip", wire(bytes(flipped))),
        ("bad-crc-in-crc", wire(bytes(crc_byte))),
        ("bad-cobs-code-past-end", b"\x00\x09\x01\x01\x01\x00"),
        ("bad-cobs-truncated", w[:20] + b"\x00"),
        ("truncated-one-byte-short", w[:-2] + b"\x00"),
        ("short-frame", wire(bytes([1, 1, 0, 0, 9]))),
        ("short-single-byte", b"\x00\x01\x00"),
        ("overlong-garbage", b"\x00" + bytes((i % 255) + 1 for i in range(300)) + b"\x00"),
        ("overlong-decoded-255", b"\x00" + b"\x01" * 256 + b"\x00"),
        ("unknown-version", wire(refit(bytes([2]) + good[1:]))),
        ("unknown-version-zero", wire(refit(bytes([0]) + good[1:]))),
        ("unknown-type", wire(refit(bytes([1, 0x7F]) + good[2:]))),
        ("body-bad-vtype", wire(refit(body[:-5] + b"\x09" + body[-4:] + b"\0\0\0\0"))),
        ("body-bool-2", wire(refit(reading(1, "d", "o", "", 5, True)[:-5] + b"\x02\0\0\0\0"))),
        ("body-float32-nan", wire(reading(1, "a", "b", "", 3, math.nan))),
        ("body-float64-inf", wire(reading(1, "a", "b", "", 4, math.inf))),
        ("body-id-bad-char", wire(reading(1, "bme 280", "t", "", 1, 1))),
        ("body-id-leading-dot", wire(reading(1, ".hidden", "t", "", 1, 1))),
        ("body-id-empty", wire(reading(1, "", "t", "", 1, 1))),
        ("body-id-too-long", wire(reading(1, "s" * 65, "t", "", 1, 1))),
        ("body-unit-space", wire(reading(1, "a", "b", "m s", 1, 1))),
        ("body-unit-too-long", wire(reading(1, "a", "b", "u" * 33, 1, 1))),
        ("body-text-bad-utf8", wire(refit(reading(1, "a", "b", "", 6, "ab")[:-6]
                                          + b"\xc3\x28" + b"\0\0\0\0"))),
        ("body-text-too-long", wire(refit(reading(1, "a", "b", "", 6, "x" * 65)))),
        ("body-trailing-byte", wire(refit(good[:-4] + b"\x00" + b"\0\0\0\0"))),
        ("body-ends-early", wire(refit(good[:-6] + b"\0\0\0\0"))),
        ("body-reserved-flags", wire(reading(1, "a", "b", "", 1, 1, flags=0x02))),
        ("body-hello-part", wire(hello(0, "fw", [], part=1, parts=1))),
        ("body-hello-zero-parts", wire(hello(0, "fw", [], part=0, parts=0))),
        ("body-hello-bad-vtype", wire(hello(0, "fw", [("a", "b", "", 7)]))),
        ("body-hello-no-firmware", wire(hello(0, "", []))),
        ("body-attest-alg", wire(attest(2, 1, bytes(64), alg=2))),
        ("body-attest-short-signature", wire(attest(2, 1, bytes(63)))),
        ("garbage-without-delimiters", b"\x13\x37\xfe" + w),
    ]
    return [(name, stream + w) for name, stream in cases]


def garbage_streams() -> list[tuple[str, bytes]]:
    rng = random.Random(20240517)
    frames = [f for _, f in valid_frames()]
    out = []
    for n in range(6):
        stream = bytearray(b"\xaa\x55" if n % 2 else b"")
        for f in rng.sample(frames, 5):
            stream += wire(f)
            stream += bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        out.append((f"garbage-between-frames-{n}", bytes(stream)))
    back_to_back = b"".join(b"\x00" + cobs_encode(f) for f in frames[:4]) + b"\x00"
    out.append(("single-delimiters-back-to-back", back_to_back))
    out.append(("partial-frame-at-end", wire(frames[0]) + wire(frames[1])[:-5]))
    out.append(("delimiters-only", b"\x00" * 7))
    return out


def as_vectors(pairs: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    return [{"name": name, "wire": stream.hex(), "expect": decode_stream(stream)}
            for name, stream in pairs]


def main() -> None:
    header = {"protocol": "EdgeLedger framed v1 (firmware_bridge/PROTOCOL.md)",
              "crc": "CRC-32C width=32 poly=0x1edc6f41 init=0xffffffff refin=true "
                     "refout=true xorout=0xffffffff check=0xe3069283",
              "generator": "firmware_bridge/vectors/make_vectors.py"}
    valid = as_vectors([(name, wire(f)) for name, f in valid_frames()])
    assert len(valid_frames()[-1][1]) == MAX_FRAME
    for vector in valid:
        assert len(vector["expect"]) == 1 and "ok" in vector["expect"][0], vector["name"]
    files = {"frames.json": valid, "faults.json": as_vectors(fault_frames()),
             "streams.json": as_vectors(garbage_streams())}
    for name, vectors in files.items():
        text = json.dumps({**header, "vectors": vectors}, indent=1, ensure_ascii=False)
        (HERE / name).write_text(text + "\n", encoding="utf-8")
        print(f"{name}: {len(vectors)} vectors")


if __name__ == "__main__":
    main()
