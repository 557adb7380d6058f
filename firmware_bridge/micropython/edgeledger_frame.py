"""EdgeLedger `framed` protocol v1 encoder for MicroPython (firmware_bridge/PROTOCOL.md).

Pure Python that runs on MicroPython (RP2040, ESP32, STM32 ports) and on CPython:
no dataclasses, no typing, no f-strings, only `struct`. Copy this file to the
board's filesystem (e.g. `mpremote cp edgeledger_frame.py :`).

Example: a BME280 on a Raspberry Pi Pico, USB serial to the gateway

    import sys, time
    from machine import I2C, Pin
    import bme280                      # any BME280 driver returning C, Pa, %RH
    from edgeledger_frame import FrameWriter

    sensor = bme280.BME280(i2c=I2C(0, sda=Pin(0), scl=Pin(1)))
    out = FrameWriter(sys.stdout.buffer)    # or machine.UART(0, 115200)
    out.hello("pico-bme280/1.0.0", [("bme280-1", "temperature", "Cel", "float32"),
                                     ("bme280-1", "humidity", "%RH", "float32"),
                                     ("bme280-1", "pressure", "Pa", "float32")])
    while True:
        t, p, h = sensor.read_compensated_data()
        out.reading("bme280-1", "temperature", t, "Cel", "float32")
        out.reading("bme280-1", "humidity", h, "%RH", "float32")
        out.reading("bme280-1", "pressure", p, "Pa", "float32")
        time.sleep(1)

To attest readings, pass `sign=lambda raw: ed25519_signature_of(raw)` (64 bytes) to
FrameWriter: each reading is then sent with flag 0x01 and followed by an ATTEST frame.
On USB CDC, make sure nothing else prints to stdout (the REPL banner is harmless:
the gateway reports it as one bad frame and resyncs at the next 0x00).
"""

import math
import struct

VERSION = 1
READING = 1
HELLO = 2
ATTEST = 3
FLAG_ATTEST = 1
VTYPES = {"int32": 1, "int64": 2, "float32": 3, "float64": 4, "bool": 5, "text": 6}
_FORMATS = {"int32": "<i", "int64": "<q", "float32": "<f", "float64": "<d"}
FRAME_MAX = 254

# CRC-32C, reflected polynomial 0x82f63b78, four bits at a time (a 16-entry table).
_NIBBLE = []
for _n in range(16):
    _c = _n
    for _k in range(4):
        _c = (_c >> 1) ^ (0x82F63B78 if _c & 1 else 0)
    _NIBBLE.append(_c)


def crc32c(data, crc=0):
    """CRC-32C (check value 0xe3069283 over b"123456789"); chainable."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        crc = (crc >> 4) ^ _NIBBLE[crc & 15]
        crc = (crc >> 4) ^ _NIBBLE[crc & 15]
    return crc ^ 0xFFFFFFFF


def cobs_encode(data):
    """COBS-encode `data` (no 0x00 in the result)."""
    out = bytearray(b"\x00")
    code_at, code = 0, 1
    n = len(data)
    for i in range(n):
        b = data[i]
        if b:
            out.append(b)
            code += 1
            if code != 0xFF or i + 1 == n:
                continue
        out[code_at] = code
        code_at, code = len(out), 1
        out.append(0)
    out[code_at] = code
    return bytes(out)


def wire(frame):
    """A raw frame as sent: 0x00 COBS(frame) 0x00."""
    return b"\x00" + cobs_encode(frame) + b"\x00"


def _str8(text):
    raw = text.encode() if isinstance(text, str) else bytes(text)
    if len(raw) > 255:
        raise ValueError("string too long")
    return bytes([len(raw)]) + raw


def _seal(ftype, seq, body):
    head = struct.pack("<BBH", VERSION, ftype, seq & 0xFFFF) + body
    frame = head + struct.pack("<I", crc32c(head))
    if len(frame) > FRAME_MAX:
        raise ValueError("frame longer than 254 bytes")
    return frame


def _vtype_of(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int32" if -2147483648 <= value <= 2147483647 else "int64"
    if isinstance(value, float):
        return "float64"
    return "text"


def _value(vtype, value):
    if vtype in _FORMATS:
        if math.isnan(value) or math.isinf(value):
            raise ValueError("NaN and infinities are never sent")
        return struct.pack(_FORMATS[vtype], value)
    if vtype == "bool":
        return b"\x01" if value else b"\x00"
    return _str8(value)


def reading_frame(seq, sensor, metric, value, unit="", vtype=None, flags=0):
    """The raw READING frame (sign these bytes for an ATTEST); `wire()` it to send."""
    vtype = vtype or _vtype_of(value)
    body = (bytes([flags]) + _str8(sensor) + _str8(metric) + _str8(unit or "")
            + bytes([VTYPES[vtype]]) + _value(vtype, value))
    return _seal(READING, seq, body)


def hello_frame(seq, firmware, channels, part=0, parts=1):
    """The raw HELLO frame; channels are (sensor, metric, unit, vtype) tuples."""
    body = _str8(firmware) + bytes([part, parts, len(channels)])
    for sensor, metric, unit, vtype in channels:
        body += _str8(sensor) + _str8(metric) + _str8(unit or "") + bytes([VTYPES[vtype]])
    return _seal(HELLO, seq, body)


def attest_frame(seq, signed_seq, signature, alg=1):
    """The raw ATTEST frame: an Ed25519 `signature` (64 bytes) of frame `signed_seq`."""
    return _seal(ATTEST, seq, bytes([alg]) + struct.pack("<H", signed_seq & 0xFFFF)
                 + _str8(signature))


class FrameWriter:
    """Numbers frames (seq from 0 at boot) and writes them to a stream or UART.

    `sign`, if given, maps a raw frame to its 64-byte Ed25519 signature.
    """

    def __init__(self, stream, sign=None):
        self.stream = stream
        self.sign = sign
        self.seq = 0

    def _send(self, frame):
        self.stream.write(wire(frame))
        self.seq = (self.seq + 1) & 0xFFFF

    def hello(self, firmware, channels):
        """Send one HELLO (sensor lists longer than a frame: call hello_frame per part)."""
        self._send(hello_frame(self.seq, firmware, channels))

    def reading(self, sensor, metric, value, unit="", vtype=None):
        """Send one READING, and its ATTEST when the writer signs."""
        flags = FLAG_ATTEST if self.sign else 0
        frame = reading_frame(self.seq, sensor, metric, value, unit, vtype, flags)
        signed_seq = self.seq
        self._send(frame)
        if self.sign:
            self._send(attest_frame(self.seq, signed_seq, self.sign(frame)))
