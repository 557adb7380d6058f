"""What every sensor source gives the agent, and how source types plug in.

A source owns one device (a serial port, a simulated sensor) and turns what it
speaks into Samples: a value with its sensor id, metric, unit and the gateway
time of reception. The agent numbers samples per sensor (q), range-checks them
and journals them as Readings; sources never see the ledger. A source does its
own I/O (a thread for a serial port) so that the agent loop never blocks on a
device: `poll` only hands over what has arrived.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from edgeledger.core.reading import Value


@dataclass(frozen=True)
class Sample:
    """One value as a source received it, before the agent numbers it."""

    sensor: str
    metric: str
    value: Value
    unit: str | None
    t_ms: int
    attestation: bytes | None = None

    @property
    def name(self) -> str:
        """The reading name `<sensor id>/<metric>`."""
        return f"{self.sensor}/{self.metric}"


@dataclass
class SourceStats:
    """Counters a source keeps for logs and, later, metrics."""

    samples: int = 0
    bad: int = 0
    reopens: int = 0
    rejected: int = 0
    """Samples the agent refused to sign (out of range, NaN, not a valid reading)."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        """Add to counters (thread-safe: a reader thread and the agent both count)."""
        with self.lock:
            for key, n in counts.items():
                setattr(self, key, getattr(self, key) + n)


class Source(ABC):
    """A running source of samples."""

    name: str
    """Where the samples come from, for logs: e.g. `nmea /dev/serial/by-id/usb-u-blox...`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = SourceStats()

    def start(self, now_ms: int) -> None:  # noqa: B027 - optional hook, most sources need none
        """Start background I/O, if the source has any."""

    @abstractmethod
    def poll(self, now_ms: int, wall_ms: int) -> list[Sample]:
        """Return what has arrived (or, for a polled device, read it now); never block long.

        `now_ms` is the monotonic clock, `wall_ms` the Unix time that samples carry.
        """

    def next_due(self) -> int | None:
        """Monotonic ms when `poll` should next be called; None: on every loop turn."""
        return None

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Stop background I/O and close the device."""

    def set_sequence(self, next_q: Callable[[str], int]) -> None:  # noqa: B027 - optional hook
        """Learn the agent's numbering: `next_q(sensor)` is the q the next sample gets.

        Only a source whose values depend on q needs it (the simulated counter).
        """


class SourceConfig(Protocol):
    """What a source module's `parse_config(t: ConfigTable)` returns: a frozen dataclass.

    `type` is the `[[sensors]]` type name ("sim", "framed", "nmea", "modbus",
    "lines"), `id` the entry's sensor id; `build()` makes the Source (not started).
    """

    @property
    def id(self) -> str:
        """The entry's sensor id (unique in a file)."""

    @property
    def type(self) -> str:
        """The `[[sensors]]` type name."""

    def build(self) -> Source:
        """A new, not yet started Source for this entry."""
