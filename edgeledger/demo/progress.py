"""The demo's live view: what each gateway and the log are doing, from what they publish.

Theory of operation. Every number shown is read from where the system itself puts
it, never computed from what the demo expects:

- `readings` and `tip`: each agent's own log lines (it runs at debug level):
  `durable <sensor>=<q> ...` after every group commit (the per-sensor sequence
  numbers that are on disk; a fresh gateway numbers from 0, so their sum + 1 per
  sensor is the count), and `sealed block <h>: <n> readings`.
- `acked`: the agent's state.json (`sync.acked`, rewritten atomically by the agent
  after each ack; read-only here, and a read that races a rename is retried on the
  next refresh). `backlog` is tip - acked, the agent's own definition.
- `mqtt`: online or offline, from the retained `<prefix>/dev/<id>/state` message
  each agent publishes (and the broker publishes for it as its last will), heard
  through our own MQTT subscription. Its tip and backlog are not shown: an agent
  refreshes that message only every so often, so they lag.
- the log: the retained `<prefix>/checkpoint` note, whose signature is checked with
  the log's verifier key before it is believed (its size and height).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from edgeledger.core.checkpoint import Checkpoint, open_checkpoint
from edgeledger.core.errors import EdgeLedgerError
from edgeledger.core.note import Verifier
from edgeledger.sync.messages import State
from edgeledger.sync.mqtt import MqttTransport, Received
from edgeledger.sync.topics import checkpoint_topic

LINE_EVERY_S = 5.0
_DURABLE = re.compile(r" edgeledger\.agent: durable(?P<q>( [A-Za-z0-9._-]+=[0-9]+)*)\s*$")
_SEALED = re.compile(r" edgeledger\.agent: sealed block (?P<h>[0-9]+): (?P<n>[0-9]+) readings")


class LogTail:
    """New whole lines of a growing log file, read from where the last call stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def lines(self) -> list[str]:
        """The lines completed since the last call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *whole, self.partial = (self.partial + data).split(b"\n")
        return [line.decode(errors="replace") for line in whole]


def read_acked(state_json: Path) -> int | None:
    """`sync.acked` from an agent's state.json (TinyDB: table -> doc id -> document)."""
    try:
        data = json.loads(state_json.read_text())
    except (OSError, ValueError):
        return None
    docs = data.get("sync") if isinstance(data, dict) else None
    for doc in docs.values() if isinstance(docs, dict) else ():
        acked = doc.get("acked") if isinstance(doc, dict) else None
        if isinstance(acked, int) and not isinstance(acked, bool):
            return acked
    return None


@dataclass
class GatewayStatus:
    """One gateway as measured; None where nothing was heard yet."""

    name: str
    log: LogTail
    state_json: Path
    durable_q: dict[str, int] = field(default_factory=dict)
    sealed: int | None = None
    sealed_readings: int = 0
    acked: int | None = None
    state: State | None = None

    @property
    def backlog(self) -> int | None:
        """Sealed blocks not acked yet (what the agent's own `state` message counts)."""
        if self.sealed is None:
            return None
        return self.sealed - (-1 if self.acked is None else self.acked)

    @property
    def readings(self) -> int:
        """Readings on the gateway's disk (sensor sequence numbers start at 0)."""
        return sum(q + 1 for q in self.durable_q.values())

    def refresh(self) -> None:
        """Read the agent's new log lines and its state.json."""
        for line in self.log.lines():
            durable = _DURABLE.search(line)
            if durable is not None:
                for pair in durable.group("q").split():
                    sensor, _, q = pair.partition("=")
                    self.durable_q[sensor] = int(q)
                continue
            sealed = _SEALED.search(line)
            if sealed is not None:
                self.sealed = int(sealed.group("h"))
                self.sealed_readings += int(sealed.group("n"))
        acked = read_acked(self.state_json)
        if acked is not None:
            self.acked = acked


class Monitor:
    """Subscribes to the gateways' state and the checkpoint; tails the agents' files."""

    def __init__(self, host: str, port: int, prefix: str, log_key: Verifier,
                 gateways: list[GatewayStatus]) -> None:
        self.prefix, self.log_key = prefix, log_key
        self.gateways = {gw.name: gw for gw in gateways}
        self.checkpoint: Checkpoint | None = None
        self.bad_checkpoints = 0
        self.transport = MqttTransport(host, port, f"edgeledger-demo-view-{os.getpid()}",
                                       protocol="5", clean_start=True, session_expiry=0)
        self._state_prefix = f"{prefix}/dev/"
        self.closed = False

    def start(self, timeout: float = 10.0) -> None:
        """Connect and subscribe (retained messages arrive at once)."""
        self.transport.connect(timeout)
        self.transport.subscribe([f"{self.prefix}/dev/+/state", checkpoint_topic(self.prefix)],
                                 qos=1, timeout=timeout)

    def refresh(self) -> None:
        """Take in every message received and every gateway's new lines."""
        while (event := self.transport.get(0)) is not None:
            if isinstance(event, Received):
                self._received(event.topic, event.payload)
        for gw in self.gateways.values():
            gw.refresh()

    def _received(self, topic: str, payload: bytes) -> None:
        if topic == checkpoint_topic(self.prefix):
            try:
                cp = open_checkpoint(payload.decode("utf-8"), self.log_key)
            except (EdgeLedgerError, UnicodeDecodeError):
                self.bad_checkpoints += 1
                return
            if self.checkpoint is None or cp.height >= self.checkpoint.height:
                self.checkpoint = cp
            return
        name = topic.removeprefix(self._state_prefix).removesuffix("/state")
        if name in self.gateways and payload:
            # A malformed state is not ours to judge; the aggregator journals it.
            with contextlib.suppress(EdgeLedgerError):
                self.gateways[name].state = State.decode(payload)

    def close(self) -> None:
        """Disconnect (idempotent)."""
        if not self.closed:
            self.closed = True
            self.transport.close()


def clear_retained(host: str, port: int, topics: list[str]) -> None:
    """Publish an empty retained message on each topic: the broker forgets what it kept."""
    transport = MqttTransport(host, port, f"edgeledger-demo-clear-{os.getpid()}",
                              clean_start=True)
    transport.connect(5)
    try:
        for topic in topics:
            transport.publish(topic, b"", qos=1, retain=True, timeout=5)
    finally:
        transport.close()


def _show(value: int | None) -> str:
    return "-" if value is None else str(value)


def rows(elapsed: float, monitor: Monitor, phase: str) -> list[str]:
    """The view's lines: the log, then one line per gateway."""
    cp = monitor.checkpoint
    log = (f"log: size {cp.size} at checkpoint height {cp.height}" if cp is not None
           else "log: no checkpoint yet")
    if monitor.bad_checkpoints:
        log += f" ({monitor.bad_checkpoints} checkpoints failed verification!)"
    out = [f"{elapsed:6.1f}s  {phase:<9} {log}",
           f"   {'gateway':<8} {'readings':>8} {'tip':>5} {'acked':>5} {'backlog':>7}  mqtt"]
    for gw in monitor.gateways.values():
        st = gw.state
        online = "-" if st is None else ("online" if st.online else "offline")
        out.append(f"   {gw.name:<8} {gw.readings:>8} {_show(gw.sealed):>5} "
                   f"{_show(gw.acked):>5} {_show(gw.backlog):>7}  {online}")
    return out


class View:
    """Redrawn in place about once a second on a terminal; a block every 5 s otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.drawn = 0
        self.last = -LINE_EVERY_S
        self.started = time.monotonic()

    def show(self, monitor: Monitor, phase: str, force: bool = False) -> None:
        """Draw the current state (on a non-terminal only every LINE_EVERY_S, or if forced)."""
        elapsed = time.monotonic() - self.started
        if not self.tty and not force and elapsed - self.last < LINE_EVERY_S:
            return
        self.last = elapsed
        lines = rows(elapsed, monitor, phase)
        if self.tty:
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}F")
            self.out.write("".join(f"{line}\x1b[K\n" for line in lines))
            self.drawn = len(lines)
        else:
            self.out.write("\n".join(lines) + "\n")
        self.out.flush()

    def message(self, text: str) -> None:
        """A line that stays above the live view."""
        self.out.write(text + "\n")
        self.out.flush()
        self.drawn = 0
