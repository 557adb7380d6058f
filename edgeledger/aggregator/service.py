"""The aggregator side of sync as a sans-I/O object (h11 style): topics and bytes in, actions out.

`AggregatorSync` never touches a socket, a clock or a thread. The MQTT driver
subscribes to `aggregator_subscriptions(prefix)`, feeds every message it receives
to `receive(topic, payload, now)` (or several at once to `receive_many`), calls
`tick(now)` now and then, and publishes the `Publish` actions returned, in order.
Acks come back only after the blocks they answer are committed (Ingest), so the
driver may publish them as soon as it has them.

What it answers
---------------
- `<p>/dev/<id>/blk`: one Ack on `<p>/dev/<id>/ack` (Ingest decides ok, dup, gap or
  rejected). Runs of `blk` messages in `receive_many` are one store transaction.
- `<p>/dev/<id>/hello`: an Ack telling the device what the log holds. With `next`
  the aggregator's expected height N: when the device is ahead (its tip >= N), or
  nothing is held yet (N = 0), the status is `gap` with next N ("send from N");
  otherwise `dup` for block N - 1 with its log index (an ok-style, cumulative ack
  for the newest block held: `ok` would claim a new append). A device whose tip is
  below N - 1 is journalled (`device-behind`): it lost blocks the log holds, and
  its own DeviceSync raises the alarm on that ack.
- `<p>/dev/<id>/cons`: a ConsistencyProof on `<p>/dev/<id>/proof`, for sizes up to
  the latest signed checkpoint's (a device only asks between checkpoints; an
  unsigned tree size is refused). A bad request gets nothing, and an event.
- `<p>/dev/<id>/drop`: a signed DROP record (edgeledger/core/droprecord.py): the
  device's disk quota dropped blocks it never got acked. `Ingest.receive_drop`
  checks it and moves the device's chain past them; answered with an Ack like a block.
- `<p>/dev/<id>/rotate`: a key rotation record (edgeledger/aggregator/enrollment.py),
  applied with its `rotated` event when the old (enrolled) key signed it; a forged,
  stale or misdirected record is a `rotation-rejected` event. Nothing is answered:
  the device learns the outcome from the acks of the blocks it signs next.
- `<p>/dev/<id>/state`: kept in `statuses` (last seen, online, tip, backlog,
  version) for metrics; nothing is published.
- Whenever the checkpointer signs (after a batch, or on `tick`), the note is
  published retained on `<p>/checkpoint`.

The latest checkpoint rides on an ack (the `checkpoint` key) when the device has not
been sent it on its ack topic since its last hello: one copy per device per
checkpoint, so a device that missed the retained message still learns it.

Nothing a device sends crashes the service: an unparsable topic, an oversized or
malformed payload, or a request for a tree that is not there is journalled with
its own event kind (`bad-topic`, `oversized`, `malformed`, `bad-request`) and
answered with nothing, or with a rejected ack for a block. Store errors (a full
disk) do propagate: without a durable append there is nothing to ack.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgeledger.aggregator.checkpointer import Checkpointer
from edgeledger.aggregator.enrollment import MAX_ROTATION, EnrollmentError, parse_rotation
from edgeledger.aggregator.ingest import Ingest, rotate_device
from edgeledger.core.droprecord import MAX_DROP
from edgeledger.core.errors import DecodeError, EdgeLedgerError, VerificationError
from edgeledger.sync.device import Publish
from edgeledger.sync.messages import (
    MAX_CONS,
    MAX_HELLO,
    MAX_STATE,
    Ack,
    ConsistencyProof,
    ConsistencyRequest,
    Hello,
    State,
)
from edgeledger.sync.topics import (
    DEFAULT_PREFIX,
    DeviceTopics,
    checkpoint_topic,
    parse_device_topic,
)

__all__ = ["QOS_SYNC", "AggregatorSync", "DeviceStatus", "Publish"]

QOS_SYNC = 1
"""DESIGN.md 3: QoS 1 for acks, proofs and the checkpoint."""


@dataclass(frozen=True)
class DeviceStatus:
    """What a device last said about itself (its `state`), and when it was last heard."""

    last_seen_ms: int
    online: bool | None = None
    tip: int | None = None
    backlog: int | None = None
    version: str | None = None


class AggregatorSync:
    """The aggregator's sync state machine; see the module doc."""

    def __init__(self, ingest: Ingest, checkpointer: Checkpointer,
                 prefix: str = DEFAULT_PREFIX) -> None:
        self.ingest = ingest
        self.checkpointer = checkpointer
        self.prefix = prefix
        self.checkpoint_topic = checkpoint_topic(prefix)
        self.statuses: dict[str, DeviceStatus] = {}
        self._told: dict[str, str] = {}
        """device -> the checkpoint note last piggybacked on its ack topic"""

    def start(self, now: int) -> list[Publish]:
        """On (re)start: sign a first checkpoint if due, and (re)publish the latest retained."""
        self.checkpointer.maybe_sign(now)
        note = self.checkpointer.note
        return [] if note is None else [self._checkpoint(note)]

    def tick(self, now: int) -> list[Publish]:
        """Time passed: sign and publish a checkpoint if one is due."""
        note = self.checkpointer.maybe_sign(now)
        return [] if note is None else [self._checkpoint(note)]

    def receive(self, topic: str, payload: bytes, now: int) -> list[Publish]:
        """One message from a device topic in; what to publish out."""
        return self.receive_many([(topic, payload)], now)

    def receive_many(self, messages: Sequence[tuple[str, bytes]], now: int) -> list[Publish]:
        """Several messages in arrival order; each run of `blk` messages is one transaction."""
        out: list[Publish] = []
        run: list[tuple[str, bytes]] = []
        for topic, payload in messages:
            where = self._parse_topic(topic, now)
            if where is None:
                continue
            dev, kind = where
            self._seen(dev, now)
            if kind == "blk":
                run.append((dev, payload))
                continue
            out += self._blocks(run, now)
            run = []
            out += self._other(dev, kind, payload, now)
        out += self._blocks(run, now)
        return out

    # --- per kind ------------------------------------------------------------------------

    def _blocks(self, run: list[tuple[str, bytes]], now: int) -> list[Publish]:
        if not run:
            return []
        acks = self.ingest.receive_batch(run, now)
        out = self.tick(now)
        return out + [self._ack(dev, ack) for (dev, _), ack in zip(run, acks, strict=True)]

    def _other(self, dev: str, kind: str, payload: bytes, now: int) -> list[Publish]:
        handlers: dict[str, tuple[int, Callable[[str, bytes, int], list[Publish]]]] = {
            "hello": (MAX_HELLO, self._hello), "cons": (MAX_CONS, self._cons),
            "state": (MAX_STATE, self._state), "rotate": (MAX_ROTATION, self._rotate),
            "drop": (MAX_DROP, self._drop)}
        if kind not in handlers:
            self.ingest.event("bad-topic", dev, None, f"bad-topic: devices do not publish on "
                                                      f"{kind!r} topics", now)
            return []
        cap, handler = handlers[kind]
        if len(payload) > cap:
            self.ingest.event("oversized", dev, None, f"oversized: {kind} message of "
                                                      f"{len(payload)} bytes; at most {cap}", now)
            return []
        try:
            return handler(dev, payload, now)
        except DecodeError as exc:
            self.ingest.event("malformed", dev, None, f"malformed: {exc}", now)
            return []

    def _hello(self, dev: str, payload: bytes, now: int) -> list[Publish]:
        hello = Hello.decode(payload)
        self._told.pop(dev, None)
        record = self.ingest.book.device(dev)
        if record is None or record.revoked_ms is not None:
            kind = "unknown-device" if record is None else "revoked-key"
            why = f"{kind}: device {dev} is not enrolled" if record is None else \
                f"{kind}: device {dev}'s key was revoked at {record.revoked_ms}"
            self.ingest.event(kind, dev, None, why, now)
            return [self._ack(dev, Ack(0 if record is None else record.next_height,
                                       "rejected", why))]
        n = record.next_height
        if n == 0 or (hello.tip is not None and hello.tip >= n):
            return [self._ack(dev, Ack(n, "gap", f"hello: the log holds blocks below {n}"))]
        if hello.tip is None or hello.tip < n - 1:
            self.ingest.event("device-behind", dev, hello.tip,
                              f"device-behind: hello says tip {hello.tip}, but the log holds "
                              f"blocks up to {n - 1}", now)
        held = self.ingest.book.block(dev, n - 1)
        if held is None:
            raise EdgeLedgerError(f"store: device {dev} is at height {n} without block {n - 1}")
        return [self._ack(dev, Ack(n, "dup", log_index=held[1]))]

    def _cons(self, dev: str, payload: bytes, now: int) -> list[Publish]:
        req = ConsistencyRequest.decode(payload)
        last = self.ingest.log.checkpoint
        if last is None or req.new_size > last.size:
            signed = "none" if last is None else str(last.size)
            self.ingest.event("bad-request", dev, None,
                              f"bad-request: consistency {req.old_size} -> {req.new_size} "
                              f"beyond the latest checkpoint's size ({signed})", now)
            return []
        path = self.ingest.log.consistency_proof(req.old_size, req.new_size)
        proof = ConsistencyProof(req.old_size, req.new_size, tuple(path))
        return [Publish(DeviceTopics(dev, self.prefix).proof, proof.encode(), QOS_SYNC)]

    def _drop(self, dev: str, payload: bytes, now: int) -> list[Publish]:
        return [self._ack(dev, self.ingest.receive_drop(dev, payload, now))]

    def _rotate(self, dev: str, payload: bytes, now: int) -> list[Publish]:
        rotation = parse_rotation(payload)
        if rotation.dev != dev:
            self.ingest.event("wrong-topic", dev, None,
                              f"wrong-topic: a rotation record for {rotation.dev} on {dev}'s "
                              "topic", now)
            return []
        with contextlib.suppress(VerificationError, EnrollmentError):  # journalled there
            rotate_device(self.ingest.book, rotation, now)
        return []

    def _state(self, dev: str, payload: bytes, now: int) -> list[Publish]:
        if not payload:
            return []  # the retained state being cleared
        state = State.decode(payload)
        if dev in self.statuses:  # _seen added every enrolled device
            self.statuses[dev] = DeviceStatus(now, state.online, state.tip, state.backlog,
                                              state.version)
        return []

    # --- helpers -------------------------------------------------------------------------

    def _parse_topic(self, topic: str, now: int) -> tuple[str, str] | None:
        try:
            return parse_device_topic(topic, self.prefix)
        except DecodeError as exc:
            self.ingest.event("bad-topic", None, None, f"bad-topic: {exc}", now)
            return None

    def _seen(self, dev: str, now: int) -> None:
        status = self.statuses.get(dev)
        if status is not None:
            self.statuses[dev] = DeviceStatus(now, status.online, status.tip, status.backlog,
                                              status.version)
        elif self.ingest.book.device(dev) is not None:  # only enrolled ids take memory
            self.statuses[dev] = DeviceStatus(now)

    def _ack(self, dev: str, ack: Ack) -> Publish:
        note = self.checkpointer.note
        if note is not None and self._told.get(dev) != note:
            self._told[dev] = note
            ack = Ack(ack.next, ack.status, ack.why, ack.log_index, note)
        return Publish(DeviceTopics(dev, self.prefix).ack, ack.encode(), QOS_SYNC)

    def _checkpoint(self, note: str) -> Publish:
        return Publish(self.checkpoint_topic, note.encode(), QOS_SYNC, retain=True)
