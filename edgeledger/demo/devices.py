"""The demo's simulated hardware: a BME280 bridge MCU and a GPS receiver on pseudo-terminals.

Theory of operation. Each simulated device owns a real pseudo-terminal
(`os.openpty`): the demo writes to the master side what the device would put on
its UART, and the agent opens the slave side (`/dev/pts/N`, reached through a
symlink in the gateway's directory, as `/dev/serial/by-id/...` would be) like any
serial port, with pyserial. Nothing in the agent knows it is simulated.

- `SimulatedMcu` speaks our framed protocol (firmware_bridge/PROTOCOL.md): a HELLO
  at boot (seq 0) announcing its channels, then one READING frame per metric per
  sample, every frame counted by the uint16 `seq`. Encoding is the codec's own
  (`encode_hello`, `encode_reading`, `wire`).
- `SimulatedGps` speaks NMEA 0183 as a u-blox or SiRF receiver does at 1 Hz: GGA,
  GSA (chatter the agent skips) and RMC per epoch, with correct checksums, along a
  track that moves at road speed and turns slowly.

The slave side is put in raw mode at once and kept open by the demo, so bytes
written before the agent opens the port wait in the tty's buffer unmangled, and
the port does not hang up when the agent closes and reopens it. Writes to the
master are non-blocking: a device whose reader stalls loses bytes, as a UART
overrun would, and the loss is counted (`PtyPort.dropped`) instead of stalling
the demo.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import threading
import tty
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from edgeledger.clock import mono_ms, wall_ms
from edgeledger.sources.framecodec import Channel, encode_hello, encode_reading, wire
from edgeledger.sources.simulator import Walk

MCU_FIRMWARE = "bme280-bridge/1.0.0"
MCU_INTERVAL_MS = 1000
MCU_HELLO_EVERY = 60      # samples between HELLOs (PROTOCOL.md 3.2: "e.g. every minute")
GPS_INTERVAL_MS = 1000
KNOTS_PER_MPS = 1.943844
EARTH_RADIUS_M = 6_371_000.0


class PtyPort:
    """One pseudo-terminal: the demo writes the master, the agent reads the slave."""

    def __init__(self, link: Path | None = None) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.tty_path = Path(os.ttyname(self.slave))
        self.path = self.tty_path
        self.written = 0
        self.dropped = 0
        if link is not None:
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(self.tty_path)
            self.path = link

    def write(self, data: bytes) -> None:
        """Send bytes as the device's UART would; what does not fit now is lost (counted)."""
        try:
            sent = os.write(self.master, data)
        except BlockingIOError:
            sent = 0
        except OSError:  # closed while stopping
            sent = 0
        self.written += sent
        self.dropped += len(data) - sent

    def close(self) -> None:
        """Close both sides and remove the symlink (idempotent)."""
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.master = self.slave = -1
        if self.path != self.tty_path:
            self.path.unlink(missing_ok=True)


class SimDevice(Protocol):
    """A simulated serial device: what it sends at power-on and at each tick."""

    interval_ms: int

    def boot(self, now_ms: int) -> bytes:
        """Bytes sent at power-on."""

    def tick(self, now_ms: int) -> bytes:
        """Bytes sent at `now_ms` (Unix ms), one sample's worth."""


class SimulatedMcu:
    """A microcontroller with a BME280, speaking the framed protocol."""

    def __init__(self, sensor: str, rng: random.Random, interval_ms: int = MCU_INTERVAL_MS) -> None:
        self.sensor, self.rng, self.interval_ms = sensor, rng, interval_ms
        self.seq = 0
        self.samples = 0
        base = rng.uniform(16.0, 24.0)
        self.temperature = Walk("temperature", "Cel", base, 0.04, base - 6, base + 6)
        self.humidity = Walk("humidity", "%RH", rng.uniform(40, 60), 0.15, 20, 90, 1)
        self.pressure = Walk("pressure", "Pa", rng.uniform(100_500, 102_000), 4.0,
                             95_000, 105_000, 1)
        self.phase = rng.uniform(0, 2 * math.pi)

    @property
    def channels(self) -> tuple[Channel, ...]:
        """What the HELLO announces."""
        return tuple(Channel(self.sensor, w.metric, w.unit, "float64")
                     for w in (self.temperature, self.humidity, self.pressure))

    def _next_seq(self) -> int:
        """The frame counter for the next frame: +1 per frame, of any type, mod 65536."""
        seq, self.seq = self.seq, (self.seq + 1) % 65536
        return seq

    def boot(self, now_ms: int) -> bytes:
        """The HELLO a freshly booted MCU sends, with seq 0."""
        self.seq = 0
        return wire(encode_hello(self._next_seq(), MCU_FIRMWARE, self.channels))

    def values(self, now_ms: int) -> dict[str, float]:
        """One sample: a slow daily-like swing plus drift; humidity moves against it."""
        swing = 1.5 * math.sin(self.phase + now_ms / 600_000 * 2 * math.pi)
        temperature = round(self.temperature.next(self.rng) + swing, 2)
        humidity = round(min(100.0, max(0.0, self.humidity.next(self.rng) - 2 * swing)), 1)
        return {"temperature": temperature, "humidity": humidity,
                "pressure": self.pressure.next(self.rng)}

    def tick(self, now_ms: int) -> bytes:
        """One READING frame per metric (and now and then a HELLO first)."""
        self.samples += 1
        out = b""
        if self.samples % MCU_HELLO_EVERY == 0:
            out += wire(encode_hello(self._next_seq(), MCU_FIRMWARE, self.channels))
        for channel, value in zip(self.channels, self.values(now_ms).values(), strict=True):
            out += wire(encode_reading(self._next_seq(), channel.sensor, channel.metric, value,
                                       channel.unit, channel.vtype))
        return out


def nmea_sentence(body: str) -> bytes:
    """`$body*CS\\r\\n`, CS being the XOR of the body's bytes (NMEA 0183)."""
    checksum = 0
    for byte in body.encode("ascii"):
        checksum ^= byte
    return f"${body}*{checksum:02X}\r\n".encode("ascii")


def nmea_coordinate(degrees: float, width: int) -> str:
    """`ddmm.mmmm` (width 2) or `dddmm.mmmm` (width 3) of |degrees|."""
    units = round(abs(degrees) * 60 * 10_000)  # ten-thousandths of a minute
    whole, rest = divmod(units, 60 * 10_000)
    return f"{whole:0{width}d}{rest // 10_000:02d}.{rest % 10_000:04d}"


@dataclass
class SimulatedGps:
    """A GPS receiver on a moving vehicle, at 1 Hz: GGA, GSA and RMC per epoch."""

    rng: random.Random
    lat: float
    lon: float
    alt: float = 20.0
    heading: float = 90.0
    speed_mps: float = 12.0
    interval_ms: int = GPS_INTERVAL_MS
    talker: str = "GP"
    epochs: int = 0
    last_ms: int | None = field(default=None)

    @classmethod
    def near(cls, lat: float, lon: float, rng: random.Random) -> SimulatedGps:
        """A receiver a few kilometres from (lat, lon), heading somewhere."""
        return cls(rng, lat + rng.uniform(-0.03, 0.03), lon + rng.uniform(-0.05, 0.05),
                   alt=rng.uniform(5, 40), heading=rng.uniform(0, 360),
                   speed_mps=rng.uniform(8, 16))

    def boot(self, now_ms: int) -> bytes:
        """Receivers print a banner-like text sentence at power-on."""
        return nmea_sentence(f"{self.talker}TXT,01,01,02,ANTENNA OK")

    def move(self, now_ms: int) -> None:
        """Advance along the track by the time since the last epoch."""
        dt = 0.0 if self.last_ms is None else (now_ms - self.last_ms) / 1000
        self.last_ms = now_ms
        self.heading = (self.heading + self.rng.uniform(-4, 4)) % 360
        self.speed_mps = min(25.0, max(0.0, self.speed_mps + self.rng.uniform(-0.5, 0.5)))
        distance = self.speed_mps * dt
        rad = math.radians(self.heading)
        self.lat += math.degrees(distance * math.cos(rad) / EARTH_RADIUS_M)
        self.lon += math.degrees(distance * math.sin(rad)
                                 / (EARTH_RADIUS_M * math.cos(math.radians(self.lat))))
        self.alt = min(60.0, max(0.0, self.alt + self.rng.uniform(-0.3, 0.3)))

    def tick(self, now_ms: int) -> bytes:
        """One epoch: GGA (position, fix quality, altitude), GSA, RMC (status A)."""
        self.move(now_ms)
        self.epochs += 1
        when = datetime.fromtimestamp(now_ms / 1000, UTC)
        hms = when.strftime("%H%M%S.") + f"{when.microsecond // 10_000:02d}"
        lat = f"{nmea_coordinate(self.lat, 2)},{'N' if self.lat >= 0 else 'S'}"
        lon = f"{nmea_coordinate(self.lon, 3)},{'E' if self.lon >= 0 else 'W'}"
        sats = self.rng.randint(7, 11)
        hdop = self.rng.uniform(0.7, 1.4)
        gga = (f"{self.talker}GGA,{hms},{lat},{lon},1,{sats:02d},{hdop:.1f},{self.alt:.1f},M,"
               "45.3,M,,")
        gsa = f"{self.talker}GSA,A,3,02,05,09,12,15,18,21,25,,,,,{hdop + 0.8:.1f},{hdop:.1f},1.6"
        rmc = (f"{self.talker}RMC,{hms},A,{lat},{lon},{self.speed_mps * KNOTS_PER_MPS:.1f},"
               f"{self.heading:.1f},{when.strftime('%d%m%y')},,,A")
        return nmea_sentence(gga) + nmea_sentence(gsa) + nmea_sentence(rmc)


@dataclass
class Attached:
    """A simulated device wired to its port, and when it next speaks."""

    name: str
    device: SimDevice
    port: PtyPort
    next_ms: int = 0


class DeviceRunner:
    """One thread that powers every simulated device and writes what each sends.

    `wall_ms` stamps the values (the NMEA time fields); scheduling runs on the
    monotonic clock so a wall-clock step does not burst or stall the devices.
    """

    def __init__(self) -> None:
        self.attached: list[Attached] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def attach(self, name: str, device: SimDevice, port: PtyPort) -> None:
        """Add a device (before `start`)."""
        self.attached.append(Attached(name, device, port))

    def start(self) -> None:
        """Power the devices on (each sends its boot bytes) and start the thread."""
        now = mono_ms()
        for a in self.attached:
            a.port.write(a.device.boot(wall_ms()))
            a.next_ms = now + 200  # the first sample shortly after boot
        self._thread = threading.Thread(target=self._run, name="demo devices", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = mono_ms()
            for a in self.attached:
                if now >= a.next_ms:
                    a.port.write(a.device.tick(wall_ms()))
                    a.next_ms = max(a.next_ms + a.device.interval_ms, now)
            due = min((a.next_ms for a in self.attached), default=now + 100)
            self._stop.wait(max(0.0, (due - mono_ms()) / 1000))

    def stop(self) -> None:
        """Stop sending (the ports stay open until `close`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def close(self) -> None:
        """Stop, then close every port."""
        self.stop()
        for a in self.attached:
            a.port.close()
