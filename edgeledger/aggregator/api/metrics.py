"""Prometheus metrics of one aggregator process, served at /metrics.

Naming follows the Prometheus conventions: the `edgeledger_` prefix, `_total` for
counters, base units in the name (`_seconds`), and a bounded `reason` label (the
ingest event kinds, or `other`). Each process has its own CollectorRegistry, not
prometheus-client's global one, so tests and several apps in one process never mix.

Where each number comes from:
- Counted by the ingest thread (`MeteredIngest`, one Ack per block message):
  `edgeledger_blocks_accepted_total`, `edgeledger_blocks_rejected_total{reason}`,
  `edgeledger_readings_accepted_total`, `edgeledger_readings_rejected_total{reason}`.
  `reason` is the ack's: the refusal kind (`bad-signature`, `gap`, ...), or `dup`
  for a block the log already holds (not appended again). The readings of a block
  are counted from its sync message's `rd` array header, without decoding them.
- Timed by the server (`observe_ingest`): `edgeledger_ingest_latency_seconds`, from
  the moment the ingest thread takes a batch of messages off the MQTT queue to the
  moment it is durable (COMMIT returned), one observation per block.
- Read at scrape time (`watch_store`): `edgeledger_log_entries`,
  `edgeledger_checkpoint_height`, `edgeledger_checkpoint_log_entries`,
  `edgeledger_checkpoint_age_seconds` from the store; per device (label `device`)
  `edgeledger_device_last_seen_timestamp_seconds`, `edgeledger_device_online`,
  `edgeledger_device_tip_height` and `edgeledger_device_backlog_blocks` from the
  `state` messages the aggregator keeps in memory.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from edgeledger.aggregator.ingest import EVENT_KINDS, Ack, Ingest
from edgeledger.core.checkpoint import Checkpoint
from edgeledger.core.errors import EdgeLedgerError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from edgeledger.aggregator.service import DeviceStatus
    from edgeledger.aggregator.store.reader import StoreReader

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The text format every Prometheus version reads (what generate_latest writes)."""
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0)
REASONS = frozenset(EVENT_KINDS)
_SYNC_HEAD = b"\xa2\x62rd"


def readings_count(message: bytes) -> int:
    """The length of a sync message's `rd` array, from its CBOR head (0 if not there)."""
    if not message.startswith(_SYNC_HEAD) or len(message) < 5:
        return 0
    head = message[4]
    if head >> 5 != 4:
        return 0
    extra = head & 0x1F
    if extra < 24:
        return extra
    width = {24: 1, 25: 2, 26: 4}.get(extra)
    if width is None or len(message) < 5 + width:
        return 0
    return int.from_bytes(message[5:5 + width], "big")


def ack_reason(ack: Ack) -> str | None:
    """None for an accepted block, else the bounded `reason` label of its refusal."""
    if ack.status == "ok":
        return None
    if ack.status in ("dup", "gap"):
        return ack.status
    kind = ack.why.split(":", 1)[0]
    return kind if kind in REASONS else "other"


class Metrics:
    """The process's registry and the instruments the ingest thread feeds."""

    def __init__(self) -> None:
        # No `_created` series: they double the exposition. (Untyped upstream.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.blocks_accepted = Counter("edgeledger_blocks_accepted", "Blocks appended to "
                                       "the canonical log", registry=r)
        self.blocks_rejected = Counter("edgeledger_blocks_rejected", "Block messages not "
                                       "appended, by reason (dup: already in the log)",
                                       ["reason"], registry=r)
        self.readings_accepted = Counter("edgeledger_readings_accepted", "Readings in "
                                         "blocks appended to the log", registry=r)
        self.readings_rejected = Counter("edgeledger_readings_rejected", "Readings in "
                                         "block messages not appended, by reason",
                                         ["reason"], registry=r)
        self.ingest_latency = Histogram("edgeledger_ingest_latency_seconds", "From taking "
                                        "a block message off the MQTT queue to its durable "
                                        "append (or refusal)", buckets=LATENCY_BUCKETS,
                                        registry=r)

    def count_acks(self, messages: Sequence[tuple[str, bytes]], acks: Sequence[Ack]) -> None:
        """Count one ingest batch: each message's Ack, with its readings."""
        for (_, message), ack in zip(messages, acks, strict=True):
            reason, readings = ack_reason(ack), readings_count(message)
            if reason is None:
                self.blocks_accepted.inc()
                self.readings_accepted.inc(readings)
            else:
                self.blocks_rejected.labels(reason).inc()
                self.readings_rejected.labels(reason).inc(readings)

    def observe_ingest(self, seconds: float, blocks: int) -> None:
        """A batch of `blocks` block messages became durable `seconds` after it was taken."""
        for _ in range(blocks):
            self.ingest_latency.observe(seconds)

    def watch_store(self, borrow: Callable[[], AbstractContextManager[StoreReader]],
                    statuses: Callable[[], Mapping[str, DeviceStatus]]) -> None:
        """Add the scrape-time gauges, read through `borrow()` and `statuses()`."""
        self.registry.register(_StateCollector(borrow, statuses))

    def render(self) -> bytes:
        """The text exposition format of everything registered."""
        return generate_latest(self.registry)


class MeteredIngest(Ingest):
    """Ingest that counts what it answers into `metrics` (the server's choice of Ingest)."""

    def __init__(self, *args: Any, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics

    def receive_batch(self, messages: Sequence[tuple[str, bytes]],
                      now_ms: int | None = None) -> list[Ack]:
        """Ingest.receive_batch, then count each message's outcome."""
        acks = super().receive_batch(messages, now_ms)
        self.metrics.count_acks(messages, acks)
        return acks


class _StateCollector:
    """Gauges read when Prometheus scrapes: the log and checkpoint, the devices' state."""

    def __init__(self, borrow: Callable[[], AbstractContextManager[StoreReader]],
                 statuses: Callable[[], Mapping[str, DeviceStatus]]) -> None:
        self.borrow = borrow
        self.statuses = statuses

    def collect(self) -> Iterator[Metric]:
        """The log's and each device's gauges (the log's are left out if the store fails)."""
        with contextlib.suppress(EdgeLedgerError, OSError, sqlite3.Error):
            yield from list(self._log())
        yield from self._devices()

    def _log(self) -> Iterable[Metric]:
        with self.borrow() as reader:
            size, note = reader.size(), reader.last_checkpoint()
        yield _gauge("edgeledger_log_entries", "Entries in the canonical log", size)
        if note is None:
            return
        cp = Checkpoint.parse(note[:note.rfind("\n\n") + 1])
        yield _gauge("edgeledger_checkpoint_height", "Height of the latest checkpoint",
                     cp.height)
        yield _gauge("edgeledger_checkpoint_log_entries", "Entries the latest checkpoint "
                     "covers", cp.size)
        yield _gauge("edgeledger_checkpoint_age_seconds", "Seconds since the latest "
                     "checkpoint's time", max(0.0, time.time() - cp.time / 1000))

    def _devices(self) -> Iterable[Metric]:
        families = {
            "last_seen": GaugeMetricFamily("edgeledger_device_last_seen_timestamp_seconds",
                                           "When the aggregator last heard from the device",
                                           labels=["device"]),
            "online": GaugeMetricFamily("edgeledger_device_online", "1 if its last state "
                                        "message said online", labels=["device"]),
            "tip": GaugeMetricFamily("edgeledger_device_tip_height", "Its newest sealed "
                                     "block, from its state message", labels=["device"]),
            "backlog": GaugeMetricFamily("edgeledger_device_backlog_blocks", "Blocks it "
                                         "holds that the log has not acked, from its state "
                                         "message", labels=["device"]),
        }
        for dev, status in sorted(dict(self.statuses()).items()):
            families["last_seen"].add_metric([dev], status.last_seen_ms / 1000)
            if status.online is not None:
                families["online"].add_metric([dev], float(status.online))
            if status.tip is not None:
                families["tip"].add_metric([dev], status.tip)
            if status.backlog is not None:
                families["backlog"].add_metric([dev], status.backlog)
        return families.values()


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
