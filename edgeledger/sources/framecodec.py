"""The framed protocol's codec (firmware_bridge/PROTOCOL.md): pure, no I/O.

CRC-32C and COBS in the standard library's terms only (the agent core depends on
no protocol package), frame encoders for tests and tools, and a strict parser that
never lets a struct or Unicode error escape. `FrameDecoder` is sans-I/O: bytes in,
frames and faults out, in stream order, whether the bytes come whole or one at a
time. It splits the stream at every 0x00, so whatever garbage arrives, the next
delimited frame is read whole: that is the whole resync story. Each non-empty
chunk is a frame attempt with a number and a stream offset, and a fault names both
and one of the reasons of PROTOCOL.md section 1, checked in the same order as the C
library, so the two decoders agree on the shared vectors fault for fault. A chunk
is never held beyond 256 bytes.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from edgeledger.core.errors import DecodeError
from edgeledger.core.reading import Value

VERSION = 1
READING, HELLO, ATTEST = 1, 2, 3
FRAME_MIN, FRAME_MAX, CHUNK_MAX = 8, 254, 256
FLAG_ATTEST = 0x01
ALG_ED25519 = 1
ATTESTATION_FORMAT = 1
VTYPES = {1: "int32", 2: "int64", 3: "float32", 4: "float64", 5: "bool", 6: "text"}
VTYPE_CODES = {name: code for code, name in VTYPES.items()}
_PACK = {"int32": struct.Struct("<i"), "int64": struct.Struct("<q"),
         "float32": struct.Struct("<f"), "float64": struct.Struct("<d")}
_HEAD = struct.Struct("<BBH")
_ID_RE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_UNIT_RE = re.compile(rb"[\x21-\x7e]{0,32}")
MAX_TEXT = 64


# --- CRC-32C and COBS ---------------------------------------------------------------------

def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (width 32, poly 0x1edc6f41, init/xorout 0xffffffff, reflected); chainable."""
    table = _CRC_TABLE
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def cobs_encode(data: bytes) -> bytes:
    """COBS (Cheshire and Baker), with no trailing code after a final full block."""
    out = bytearray()
    blocks = data.split(b"\x00")
    for i, whole in enumerate(blocks):
        block = whole
        while len(block) >= 254:
            out += b"\xff" + block[:254]
            block = block[254:]
            if not block and i == len(blocks) - 1:
                return bytes(out)
        out += bytes([len(block) + 1]) + block
    return bytes(out)


def cobs_decode(chunk: bytes) -> bytes | None:
    """The bytes a COBS chunk (no 0x00 in it) stands for, or None if a code overruns it."""
    out = bytearray()
    i, n = 0, len(chunk)
    while i < n:
        code = chunk[i]
        end = i + code
        if end > n:
            return None
        out += chunk[i + 1:end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def wire(frame: bytes) -> bytes:
    """A raw frame as sent on the UART: 0x00 COBS(frame) 0x00."""
    return b"\x00" + cobs_encode(frame) + b"\x00"


# --- frames ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Channel:
    """One sensor channel a HELLO announces."""

    sensor: str
    metric: str
    unit: str
    vtype: str


@dataclass(frozen=True, slots=True)
class ReadingFrame:
    """A READING: one value of `<sensor>/<metric>`; `unit` "" when none was sent."""

    number: int
    offset: int
    raw: bytes
    seq: int
    flags: int
    sensor: str
    metric: str
    unit: str
    vtype: str
    value: int | float | bool | str
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class HelloFrame:
    """A HELLO: the firmware and (part of) its channel list."""

    number: int
    offset: int
    raw: bytes
    seq: int
    firmware: str
    part: int
    parts: int
    channels: tuple[Channel, ...]
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class AttestFrame:
    """An ATTEST: a signature over the raw bytes of the frame with seq `signed_seq`."""

    number: int
    offset: int
    raw: bytes
    seq: int
    alg: int
    signed_seq: int
    signature: bytes
    version: int = VERSION


Frame = ReadingFrame | HelloFrame | AttestFrame


@dataclass(frozen=True, slots=True)
class Fault:
    """A frame attempt that gave no frame: where it began and why (PROTOCOL.md section 1)."""

    number: int
    offset: int
    reason: str
    detail: str = ""

    def describe(self) -> str:
        """`frame N at byte O: reason (detail)`, for a log line."""
        more = f" ({self.detail})" if self.detail else ""
        return f"frame {self.number} at byte {self.offset}: {self.reason}{more}"


# --- encoding ----------------------------------------------------------------------------

def _str8(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"{text[:20]!r}...: longer than 255 bytes")
    return bytes([len(raw)]) + raw


def _seal(ftype: int, seq: int, body: bytes, version: int = VERSION) -> bytes:
    head = _HEAD.pack(version, ftype, seq) + body
    frame = head + struct.pack("<I", crc32c(head))
    if len(frame) > FRAME_MAX:
        raise ValueError(f"frame of {len(frame)} bytes; at most {FRAME_MAX}")
    return frame


def _check_ids(sensor: str, metric: str, unit: str) -> None:
    for what, text, pattern in (("sensor", sensor, _ID_RE), ("metric", metric, _ID_RE),
                                ("unit", unit, _UNIT_RE)):
        if pattern.fullmatch(text.encode()) is None:
            raise ValueError(f"{what} {text!r} is not what PROTOCOL.md 2.2 allows")


def default_vtype(value: object) -> str:
    """The value type a value is sent as unless one is named: the narrowest that holds it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int32" if -(1 << 31) <= value < (1 << 31) else "int64"
    return "float64" if isinstance(value, float) else "text"


def encode_value(vtype: str, value: object) -> bytes:
    """A value's bytes as `vtype` (ValueError when it does not fit or is of another kind)."""
    if vtype in _PACK:
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                vtype.startswith("int") and not isinstance(value, int)):
            raise ValueError(f"{value!r} is not an {vtype} value")
        try:
            return _PACK[vtype].pack(value)
        except (struct.error, OverflowError) as exc:
            raise ValueError(f"{value!r} does not fit {vtype}: {exc}") from None
    if vtype == "bool" and isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if vtype == "text" and isinstance(value, str):
        if len(value.encode()) > MAX_TEXT:
            raise ValueError(f"text of {len(value.encode())} bytes; at most {MAX_TEXT}")
        return _str8(value)
    raise ValueError(f"{value!r} is not a {vtype} value")


def encode_reading(seq: int, sensor: str, metric: str, value: object, unit: str = "",
                   vtype: str | None = None, flags: int = 0) -> bytes:
    """A READING's raw frame (header, body, CRC); `wire()` it to send it.

    ValueError for anything a decoder would reject (ids, unit, value, flags, size).
    """
    _check_ids(sensor, metric, unit)
    if flags & ~FLAG_ATTEST:
        raise ValueError(f"reserved flag bits in 0x{flags:02x}")
    vtype = vtype or default_vtype(value)
    body = (bytes([flags]) + _str8(sensor) + _str8(metric) + _str8(unit)
            + bytes([VTYPE_CODES[vtype]]) + encode_value(vtype, value))
    return _seal(READING, seq, body)


def encode_hello(seq: int, firmware: str, channels: list[Channel] | tuple[Channel, ...],
                 part: int = 0, parts: int = 1) -> bytes:
    """A HELLO's raw frame."""
    if not 0 <= part < parts or _UNIT_RE.fullmatch(firmware.encode()) is None or not firmware:
        raise ValueError(f"firmware {firmware!r}, part {part} of {parts}")
    for c in channels:
        _check_ids(c.sensor, c.metric, c.unit)
    body = _str8(firmware) + bytes([part, parts, len(channels)])
    for c in channels:
        body += _str8(c.sensor) + _str8(c.metric) + _str8(c.unit) + bytes([VTYPE_CODES[c.vtype]])
    return _seal(HELLO, seq, body)


def encode_attest(seq: int, signed_seq: int, signature: bytes, alg: int = ALG_ED25519) -> bytes:
    """An ATTEST's raw frame."""
    return _seal(ATTEST, seq, bytes([alg]) + struct.pack("<H", signed_seq)
                 + bytes([len(signature)]) + signature)


# --- parsing -------------------------------------------------------------------------------

class _BodyError(Exception):
    """A body that is not what its type says (becomes a `body` Fault)."""


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.i = data, 0

    def take(self, n: int, what: str) -> bytes:
        if self.i + n > len(self.data):
            raise _BodyError(f"body ends inside {what}")
        self.i += n
        return self.data[self.i - n:self.i]

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def str8(self, what: str) -> bytes:
        return self.take(self.u8(what), what)

    def ident(self, what: str) -> str:
        raw = self.str8(what)
        if _ID_RE.fullmatch(raw) is None:
            raise _BodyError(f"{what} {raw[:70]!r} is not 1 to 64 of [A-Za-z0-9._-]")
        return raw.decode()

    def unit(self, what: str = "unit", low: int = 0) -> str:
        raw = self.str8(what)
        if _UNIT_RE.fullmatch(raw) is None or len(raw) < low:
            raise _BodyError(f"{what} {raw[:40]!r} is not {low} to 32 printable ASCII bytes")
        return raw.decode()

    def vtype(self) -> str:
        code = self.u8("value type")
        if code not in VTYPES:
            raise _BodyError(f"unknown value type {code}")
        return VTYPES[code]

    def value(self, vtype: str) -> int | float | bool | str:
        if vtype in _PACK:
            packer = _PACK[vtype]
            value: int | float = packer.unpack(self.take(packer.size, vtype))[0]
            if isinstance(value, float) and not math.isfinite(value):
                raise _BodyError(f"{vtype} value {value} is not finite")
            return value
        if vtype == "bool":
            byte = self.u8("bool")
            if byte > 1:
                raise _BodyError(f"bool byte 0x{byte:02x} is neither 0 nor 1")
            return byte == 1
        raw = self.str8("text")
        if len(raw) > MAX_TEXT:
            raise _BodyError(f"text of {len(raw)} bytes; at most {MAX_TEXT}")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _BodyError(f"text is not UTF-8: {exc.reason} at byte {exc.start}") from None

    def channel(self) -> Channel:
        return Channel(self.ident("sensor"), self.ident("metric"), self.unit(), self.vtype())


def _parse(data: bytes, number: int, offset: int) -> Frame:
    """A frame whose CRC and version are good, or _BodyError."""
    _, ftype, seq = _HEAD.unpack_from(data)
    c = _Cursor(data[4:-4])
    frame: Frame
    if ftype == READING:
        flags = c.u8("flags")
        if flags & ~FLAG_ATTEST:
            raise _BodyError(f"reserved flag bits set (0x{flags:02x})")
        sensor, metric, unit, vtype = c.ident("sensor"), c.ident("metric"), c.unit(), c.vtype()
        frame = ReadingFrame(number, offset, data, seq, flags, sensor, metric, unit, vtype,
                             c.value(vtype))
    elif ftype == HELLO:
        firmware = c.unit("firmware", low=1)
        part, parts, count = c.u8("part"), c.u8("parts"), c.u8("count")
        if not part < parts:
            raise _BodyError(f"part {part} of {parts}")
        channels = tuple(c.channel() for _ in range(count))
        frame = HelloFrame(number, offset, data, seq, firmware, part, parts, channels)
    else:
        alg, signed_seq = c.u8("alg"), struct.unpack("<H", c.take(2, "signed_seq"))[0]
        signature = c.str8("signature")
        if alg != ALG_ED25519 or len(signature) != 64:
            raise _BodyError(f"alg {alg} with a {len(signature)}-byte signature; "
                             "v1 knows only alg 1 (Ed25519, 64 bytes)")
        frame = AttestFrame(number, offset, data, seq, alg, signed_seq, signature)
    if c.i != len(c.data):
        raise _BodyError(f"{len(c.data) - c.i} bytes after the body")
    return frame


def check_chunk(chunk: bytes, number: int, offset: int) -> Frame | Fault:
    """One delimited chunk (no 0x00 in it) as a frame, or its first fault."""
    if len(chunk) > CHUNK_MAX:
        return Fault(number, offset, "overlong", f"{len(chunk)} bytes between delimiters")
    data = cobs_decode(chunk)
    if data is None:
        return Fault(number, offset, "cobs", f"a COBS code overruns the {len(chunk)}-byte chunk")
    if len(data) > FRAME_MAX:
        return Fault(number, offset, "overlong", f"{len(data)} bytes decoded")
    if len(data) < FRAME_MIN:
        return Fault(number, offset, "short", f"{len(data)} bytes decoded, at least 8 needed")
    sent, computed = struct.unpack_from("<I", data, len(data) - 4)[0], crc32c(data[:-4])
    if sent != computed:
        return Fault(number, offset, "crc", f"CRC-32C 0x{sent:08x} sent, 0x{computed:08x} "
                                            f"computed over {len(data) - 4} bytes")
    if data[0] != VERSION:
        return Fault(number, offset, "version", f"protocol version {data[0]}; this gateway "
                                                f"speaks {VERSION}")
    if data[1] not in (READING, HELLO, ATTEST):
        return Fault(number, offset, "type", f"unknown frame type 0x{data[1]:02x}")
    try:
        return _parse(data, number, offset)
    except _BodyError as exc:
        return Fault(number, offset, "body", str(exc))


class FrameDecoder:
    """Bytes in, frames and faults out, in order (sans-I/O; PROTOCOL.md section 1)."""

    def __init__(self) -> None:
        self.number = 0        # of the next frame attempt
        self.consumed = 0      # bytes seen so far
        self._start = 0        # stream offset of the chunk being read
        self._buf = bytearray()
        self._skip = False     # an overlong chunk is being skipped to its delimiter

    def feed(self, data: bytes) -> list[Frame | Fault]:
        """Everything `data` completes."""
        out: list[Frame | Fault] = []
        pos, n = 0, len(data)
        while pos < n:
            zero = data.find(0, pos)
            end = n if zero < 0 else zero
            if end > pos and not self._skip:
                if not self._buf:
                    self._start = self.consumed + pos
                self._buf += data[pos:min(end, pos + CHUNK_MAX + 1 - len(self._buf))]
                if len(self._buf) > CHUNK_MAX:
                    out.append(Fault(self.number, self._start, "overlong",
                                     f"more than {CHUNK_MAX} bytes without a delimiter"))
                    self.number += 1
                    self._buf.clear()
                    self._skip = True
            if zero < 0:
                break
            if self._buf:
                out.append(check_chunk(bytes(self._buf), self.number, self._start))
                self.number += 1
                self._buf.clear()
            self._skip = False
            pos = zero + 1
        self.consumed += n
        return out

    def reset(self) -> int:
        """Drop a partial chunk (the port was reopened: its start is gone); its length."""
        dropped = len(self._buf)
        self._buf.clear()
        self._skip = False
        return dropped


# --- attestation --------------------------------------------------------------------------

def attestation(reading: ReadingFrame, attest: AttestFrame) -> bytes:
    """The reading's `a` field (PROTOCOL.md 3.3): format, version, seq, vtype, alg, signature."""
    return (bytes([ATTESTATION_FORMAT, reading.version]) + struct.pack("<H", reading.seq)
            + bytes([VTYPE_CODES[reading.vtype], attest.alg]) + attest.signature)


def attested_frame(name: str, value: Value, unit: str | None, a: bytes) -> tuple[bytes, bytes]:
    """(the READING frame the MCU signed, the signature), rebuilt from a reading's fields."""
    if len(a) != 70 or a[0] != ATTESTATION_FORMAT or a[1] != VERSION or a[5] != ALG_ED25519:
        raise DecodeError(f"attestation of {len(a)} bytes is not a framed v1 Ed25519 one")
    if a[4] not in VTYPES:
        raise DecodeError(f"attestation names unknown value type {a[4]}")
    sensor, _, metric = name.partition("/")
    seq = struct.unpack_from("<H", a, 2)[0]
    try:
        frame = encode_reading(seq, sensor, metric, value, unit or "", VTYPES[a[4]], FLAG_ATTEST)
    except ValueError as exc:
        raise DecodeError(f"attestation does not fit the reading: {exc}") from None
    return frame, a[6:]


def verify_attestation(name: str, value: Value, unit: str | None, a: bytes,
                       public_key: bytes) -> bool:
    """Whether `a` is the firmware key's Ed25519 signature over the rebuilt frame."""
    frame, signature = attested_frame(name, value, unit, a)
    try:
        nacl.signing.VerifyKey(public_key).verify(frame, signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True
