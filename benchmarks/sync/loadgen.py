"""A load-generator process: many simulated gateways on one MQTT connection.

    python -m benchmarks.sync.loadgen      (driven by benchmarks.sync over stdin/stdout)

Theory of operation. The parent sends one JSON command a line; each answer is one
JSON line. `build` signs every block this process will send, before any timing, so
that during a run the generator only publishes bytes and decodes acks. `run`
connects (edgeledger.sync.mqtt.MqttTransport, its own client id, a clean session),
subscribes to each device's `<p>/dev/<id>/ack`, says `ready`, and waits for `go`.
From then on it keeps at most `window` unacked blocks per device in flight, as the
agent's DeviceSync does (default 16), in height order: an `ok` or `dup` ack (decoded
with edgeledger.sync.messages.Ack) frees a slot and the next block goes out from the
network thread's callback, at once. Unpaced, every block is released at `go`;
paced, each is released at its seal time (fleet.BlockTimes). When every block is
acked (or the run times out) it answers with, per block, its seal time, publish
time, ack time and log index, and its own CPU time. No hello is sent: the store is
fresh, so the first block of each device is height 0. A block unacked for
RESEND_S is sent again (as DeviceSync does after resend_ms) and counted.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from benchmarks.sync.fleet import BlockTimes, build_chain, device_id
from edgeledger.core.block import parse_sync_message
from edgeledger.sync.messages import Ack
from edgeledger.sync.mqtt import ConnectionLost, Event, MqttTransport, Received
from edgeledger.sync.topics import DeviceTopics

RESEND_S = 10.0


class Fleet:
    """The devices of this process, their pre-built blocks, and the state of one run."""

    def __init__(self, first: int, count: int, blocks: int, times: BlockTimes) -> None:
        self.indexes = list(range(first, first + count))
        self.blocks = blocks
        self.times = times
        self.messages = [build_chain(i, blocks, times) for i in self.indexes]
        self.seals = [[parse_sync_message(m)[0].header.ts for m in chain]
                      for chain in self.messages]
        self.window = 16
        self._lock = threading.Lock()
        self._done = threading.Event()

    def run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """One run: connect, say ready, wait for go, send everything, report."""
        n, k = len(self.indexes), self.blocks
        self.ready, self.sent, self.acked = [0] * n, [0] * n, [0] * n
        self.pub = [[0.0] * k for _ in range(n)]
        self.ack = [[0.0] * k for _ in range(n)]
        self.log_index = [[-1] * k for _ in range(n)]
        self.statuses: Counter[str] = Counter()
        self.total_acked, self.resends, self.lost = 0, 0, 0
        self._done.clear()
        topics = [DeviceTopics(device_id(i), cmd["prefix"]) for i in self.indexes]
        self.blk_topics = [t.blk for t in topics]
        self.by_ack_topic = {t.ack: d for d, t in enumerate(topics)}
        self.transport = MqttTransport(cmd["host"], cmd["port"], cmd["client_id"],
                                       protocol="5", clean_start=True, session_expiry=0,
                                       on_event=self._on_event)
        self.transport.connect()
        self.transport.subscribe([t.ack for t in topics])
        _say({"ok": "ready"})
        if _command()["cmd"] != "go":
            raise SystemExit("loadgen: expected go")
        cpu0, start = time.process_time(), time.time()
        if cmd["paced"]:
            self._release_paced()
        else:
            with self._lock:
                for d in range(n):
                    self.ready[d] = k
                    self._pump(d)
        self._wait(start + cmd["timeout_s"])
        cpu = time.process_time() - cpu0
        self.transport.close()
        return {"ok": "done", "cpu_s": cpu, "statuses": dict(self.statuses),
                "resends": self.resends, "connection_lost": self.lost,
                "complete": self.total_acked == n * k,
                "blocks": [[self.seals[d][h], self.pub[d][h], self.ack[d][h],
                            self.log_index[d][h]]
                           for d in range(n) for h in range(k)]}

    def _release_paced(self) -> None:
        """Release each block at its seal time, in time order."""
        due = sorted((self.seals[d][h], d) for d in range(len(self.indexes))
                     for h in range(self.blocks))
        for ts, d in due:
            delay = ts / 1000 - time.time()
            if delay > 0:
                time.sleep(delay)
            with self._lock:
                self.ready[d] += 1
                self._pump(d)

    def _wait(self, deadline: float) -> None:
        """Until every block is acked or `deadline`; resend what waits RESEND_S."""
        while not self._done.wait(0.5) and time.time() < deadline:
            now = time.time()
            with self._lock:
                for d in range(len(self.indexes)):
                    a = self.acked[d]
                    if a < self.sent[d] and now - self.pub[d][a] > RESEND_S:
                        self.resends += self.sent[d] - a
                        self.sent[d] = a
                        self._pump(d)

    def _pump(self, d: int) -> None:
        """Send device d's next blocks while the window has room (lock held)."""
        while self.sent[d] < self.ready[d] and self.sent[d] - self.acked[d] < self.window:
            h = self.sent[d]
            self.pub[d][h] = time.time()
            self.transport.publish_async(self.blk_topics[d], self.messages[d][h], 1)
            self.sent[d] = h + 1

    def _on_event(self, event: Event) -> None:
        """Network thread: an ack frees window slots and sends the next blocks."""
        if isinstance(event, ConnectionLost):
            self.lost += 1
            return
        if not isinstance(event, Received):
            return
        d = self.by_ack_topic.get(event.topic)
        if d is None:
            return
        now, ack = time.time(), Ack.decode(event.payload)
        with self._lock:
            self.statuses[ack.status] += 1
            if ack.status in ("ok", "dup") and ack.log_index is not None:
                h = ack.next - 1
                if self.log_index[d][h] < 0:
                    self.ack[d][h], self.log_index[d][h] = now, ack.log_index
            elif ack.status == "gap":
                self.sent[d] = min(self.sent[d], ack.next)
            if ack.next > self.acked[d] and ack.status in ("ok", "dup"):
                self.total_acked += ack.next - self.acked[d]
                self.acked[d] = ack.next
            self._pump(d)
            if self.total_acked == len(self.indexes) * self.blocks:
                self._done.set()


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _command() -> dict[str, Any]:
    line = sys.stdin.readline()
    if not line:
        raise SystemExit(0)
    cmd: dict[str, Any] = json.loads(line)
    return cmd


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the parent's commands: build, run (then go), quit."""
    fleet: Fleet | None = None
    while True:
        cmd = _command()
        if cmd["cmd"] == "quit":
            return 0
        if cmd["cmd"] == "build":
            start = time.perf_counter()
            fleet = Fleet(cmd["first"], cmd["count"], cmd["blocks"],
                          BlockTimes(cmd["t0_ms"], cmd["period_ms"], cmd["gateways"]))
            _say({"ok": "built", "build_s": time.perf_counter() - start})
        elif cmd["cmd"] == "run" and fleet is not None:
            fleet.window = cmd["window"]
            _say(fleet.run(cmd))
        else:
            raise SystemExit(f"loadgen: unexpected command {cmd!r}")


if __name__ == "__main__":
    sys.exit(main())
