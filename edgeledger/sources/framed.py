"""The `framed` source: an MCU speaking our UART protocol, read from a serial port.

`FramedSource` wires a `SerialLink` (or any byte feed: call `feed`) to the codec's
`FrameDecoder` (framecodec.py). The link thread only stamps chunks with their time
of reception and queues them; `poll` decodes on the agent's thread, turns READING
frames into Samples, holds a reading that announced an ATTEST until that frame
comes (or `attest_wait_ms` passes), counts and logs every fault and every gap in
the MCU's frame counter, and never stops on any of them.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeledger.clock import wall_ms
from edgeledger.configtable import ConfigTable, SerialSettings, serial_settings
from edgeledger.sources.base import Sample, Source
from edgeledger.sources.framecodec import (
    FLAG_ATTEST,
    AttestFrame,
    Fault,
    Frame,
    FrameDecoder,
    HelloFrame,
    ReadingFrame,
    attestation,
)
from edgeledger.sources.serialport import SerialLink

log = logging.getLogger(__name__)

MAX_PENDING = 4096     # chunks queued between the link thread and poll
POLL_MS = 100
ATTEST_WAIT_MS = 1000


# --- the source ---------------------------------------------------------------------------


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
