"""The `framed` source: our UART protocol (firmware_bridge/PROTOCOL.md), decoded.

Theory of operation. Three layers, as for text lines (lines.py):

* The codec is pure: CRC-32C and COBS in the standard library's terms only (the
  agent core depends on no protocol package), frame encoders for tests and tools,
  and a strict parser that never lets a struct or Unicode error escape.
* `FrameDecoder` is sans-I/O: bytes in, frames and faults out, in stream order,
  whether the bytes come whole or one at a time. It splits the stream at every
  0x00, so whatever garbage arrives, the next delimited frame is read whole: that
  is the whole resync story. Each non-empty chunk is a frame attempt with a number
  and a stream offset, and a fault names both and one of the reasons of
  PROTOCOL.md section 1, checked in the same order as the C library, so the two
  decoders agree on the shared vectors fault for fault. A chunk is never held
  beyond 256 bytes.
* `FramedSource` wires a `SerialLink` (or any byte feed: call `feed`) to the
  decoder. The link thread only stamps chunks with their time of reception and
  queues them; `poll` decodes on the agent's thread, turns READING frames into
  Samples, holds a reading that announced an ATTEST until that frame comes (or
  `attest_wait_ms` passes), counts and logs every fault and every gap in the MCU's
  frame counter, and never stops on any of them.
"""

from __future__ import annotations

import logging
import math
import re
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeledger.configtable import ConfigTable, SerialSettings, serial_settings
from edgeledger.core.errors import DecodeError
from edgeledger.core.reading import Value
from edgeledger.sources.base import Sample, Source
from edgeledger.sources.serialport import SerialLink

log = logging.getLogger(__name__)

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
MAX_PENDING = 4096     # chunks queued between the link thread and poll
POLL_MS = 100
ATTEST_WAIT_MS = 1000


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
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    frame, signature = attested_frame(name, value, unit, a)
    try:
        VerifyKey(public_key).verify(frame, signature)
    except BadSignatureError:
        return False
    return True


# --- the source ---------------------------------------------------------------------------

def wall_ms() -> int:
    """The gateway's Unix time in ms: the time of reception samples carry."""
    return time.time_ns() // 1_000_000


class FramedSource(Source):
    """READING frames from a serial port (or any byte feed) as Samples.

    With `settings` the source owns a SerialLink; without, bytes come from whoever
    calls `feed` (a test, another transport). Thread-safe between one feeder
    thread and the agent's `poll`.
    """

    def __init__(self, name: str, settings: SerialSettings | None = None,
                 attest_wait_ms: int = ATTEST_WAIT_MS, clock: Callable[[], int] = wall_ms,
                 device: str | None = None, **link_options: Any) -> None:
        super().__init__(name)
        self.device = str(settings.device) if settings is not None else device or name
        self.attest_wait_ms, self.clock = attest_wait_ms, clock
        self.decoder = FrameDecoder()
        self.lost = 0                      # frames missing from the MCU's seq count
        self.hello: HelloFrame | None = None
        self._chunks: deque[tuple[int, bytes | None]] = deque()
        self._gap = 0
        self._next_ms: int | None = None
        self._expect: int | None = None    # the seq the next frame should carry
        self._held: tuple[ReadingFrame, int] | None = None
        self._last: Frame | None = None
        self.link = (SerialLink(settings, self.feed, self.stats, name=name,
                                on_open=self._on_open, **link_options)
                     if settings is not None else None)

    def start(self, now_ms: int) -> None:
        """Start the reader thread, if the source owns a port."""
        self._next_ms = now_ms
        if self.link is not None:
            self.link.start()

    def stop(self) -> None:
        """Stop the reader thread and close the port."""
        if self.link is not None:
            self.link.stop()

    def next_due(self) -> int | None:
        """Now if bytes wait, else one poll interval after the last poll."""
        return 0 if self._chunks else self._next_ms

    def feed(self, data: bytes) -> None:
        """Bytes as received (the link thread calls this); stamped with the time now."""
        if len(self._chunks) >= MAX_PENDING:  # the agent is not polling: do not grow
            self._gap += len(data)
            return
        if self._gap:
            log.warning("%s: %d bytes dropped while the agent was not reading", self.device,
                        self._gap)
            self._gap = 0
            self._chunks.append((self.clock(), None))
        self._chunks.append((self.clock(), data))

    def poll(self, now_ms: int, wall_ms: int) -> list[Sample]:
        """Decode what has arrived; count and log each fault."""
        self._next_ms = now_ms + POLL_MS
        out: list[Sample] = []
        while self._chunks:
            t_ms, data = self._chunks.popleft()
            if data is None:
                dropped = self.decoder.reset()
                if dropped:
                    log.debug("%s: dropped %d bytes of a frame cut by a reopen", self.device,
                              dropped)
                continue
            for item in self.decoder.feed(data):
                self._take(item, t_ms, out)
        if self._held is not None and wall_ms - self._held[1] >= self.attest_wait_ms:
            self._release(out, f"no ATTEST within {self.attest_wait_ms} ms")
        self.stats.add(samples=len(out))
        return out

    # --- on the agent's thread ------------------------------------------------------------

    def _take(self, item: Frame | Fault, t_ms: int, out: list[Sample]) -> None:
        if isinstance(item, Fault):
            self._fault(item.describe())
            return
        self._count(item)
        if self._held is not None and not (isinstance(item, AttestFrame)
                                           and item.signed_seq == self._held[0].seq):
            self._release(out, f"frame {item.number} (seq {item.seq}) is not its ATTEST")
        if isinstance(item, ReadingFrame):
            if item.flags & FLAG_ATTEST:
                self._held = (item, t_ms)
            else:
                out.append(_sample(item, t_ms, None))
        elif isinstance(item, AttestFrame):
            self._attest(item, out)
        else:
            self.hello = item
            log.info("%s: HELLO from firmware %s, protocol %d, part %d of %d: %s", self.device,
                     item.firmware, item.version, item.part + 1, item.parts,
                     ", ".join(f"{c.sensor}/{c.metric} {c.vtype} {c.unit or '-'}"
                               for c in item.channels) or "no channels")
        self._last = item

    def _attest(self, item: AttestFrame, out: list[Sample]) -> None:
        if self._held is not None:
            reading, t_ms = self._held
            self._held = None
            out.append(_sample(reading, t_ms, attestation(reading, item)))
        elif isinstance(self._last, HelloFrame) and self._last.seq == item.signed_seq:
            log.info("%s: HELLO seq %d is attested (not checked on the gateway)", self.device,
                     item.signed_seq)
        else:
            self._fault(f"frame {item.number} at byte {item.offset}: ATTEST for seq "
                        f"{item.signed_seq} follows no reading that announced it")

    def _release(self, out: list[Sample], why: str) -> None:
        assert self._held is not None
        reading, t_ms = self._held
        self._held = None
        self._fault(f"frame {reading.number} at byte {reading.offset}: reading seq "
                    f"{reading.seq} announced an ATTEST; recorded without it: {why}")
        out.append(_sample(reading, t_ms, None))

    def _count(self, frame: Frame) -> None:
        """Follow the MCU's frame counter; a HELLO restarts it (the MCU rebooted)."""
        if self._expect is not None and frame.seq != self._expect and not isinstance(
                frame, HelloFrame):
            missing = (frame.seq - self._expect) % 65536
            self.lost += missing
            log.warning("%s: protocol framed: %d frames lost before frame %d (seq %d, "
                        "expected %d)", self.device, missing, frame.number, frame.seq,
                        self._expect)
        self._expect = (frame.seq + 1) % 65536

    def _fault(self, what: str) -> None:
        self.stats.add(bad=1)
        log.warning("%s: protocol framed, %s", self.device, what)

    # --- on the link's thread --------------------------------------------------------------

    def _on_open(self) -> None:
        self._chunks.append((self.clock(), None))


def _sample(frame: ReadingFrame, t_ms: int, a: bytes | None) -> Sample:
    return Sample(frame.sensor, frame.metric, frame.value, frame.unit or None, t_ms, a)


# --- configuration --------------------------------------------------------------------------

@dataclass(frozen=True)
class FramedConfig:
    """A [[sensors]] entry of type "framed": an MCU speaking PROTOCOL.md on a serial port.

    Samples are named by the sensor ids the MCU sends; `id` names the entry.
    """

    id: str
    serial: SerialSettings
    attest_wait_ms: int = ATTEST_WAIT_MS
    type: str = "framed"

    def build(self) -> FramedSource:
        """The source for this entry (not started)."""
        return FramedSource(f"framed {self.serial.device}", self.serial, self.attest_wait_ms)


def parse_config(t: ConfigTable) -> FramedConfig:
    """Read a `type = "framed"` entry: id, device, baud (115200)..., attest_wait_ms."""
    sensor_id = t.sensor_id()
    settings = serial_settings(t, baud=115_200)
    wait = t.integer("attest_wait_ms", 10, 60_000, ATTEST_WAIT_MS, " (ms)")
    return FramedConfig(sensor_id, settings, wait)
