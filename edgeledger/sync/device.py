"""The device side of sync as a sans-I/O state machine (h11 style).

`DeviceSync` never touches a socket, a disk or a clock. The agent feeds it events
(`connected(now)`, `disconnected()`, `sealed(h, now)`, `received(topic, payload,
now)`, `tick(now)`, `closing()`) and carries out the actions each call returns, in
order:

- `Publish(topic, payload, qos, retain)`: publish these bytes;
- `SendBlock(height, topic, qos)`: load block `height`'s sync message from the ledger
  (`sync_message(*ledger.block(h))`) and publish it on `topic`;
- `SetPrunable(height)`: blocks up to `height` may be pruned (retention's
  `prunable_through`);
- `KeepCheckpoint(note)`: persist this verified checkpoint as the one kept;
- `Alarm(reason)`: tell the operator, loudly. An alarm never changes what is kept.

`cursor()` is what the agent persists (with the kept checkpoint) to resume after a
restart.

Theory of operation
-------------------
Sending. At most `window` blocks are in flight, sent in height order from
`acked + 1`; one not acked within `resend_ms` is sent again. Every connect starts
afresh from `acked + 1` after a hello, so nothing depends on what the broker kept
across the outage. The aggregator appends each device's blocks in height order, so
its `next` says it holds every block below `next`: an `ok` or `dup` ack moves
`acked` up to `next - 1` (never down). A `gap` resumes sending at
min(`next`, `acked + 1`): never beyond a block not yet acked; the aggregator answers
`dup` for what it already held, and that acks it. A `next` beyond our tip + 1 is an
alarm and the ack is ignored; a `gap` asking again for an acked block is an alarm
(the aggregator lost blocks), and the blocks are offered again. `rejected` is an
alarm and stops sending at the aggregator's `next` until the next connect: no later
block can be accepted before it.

Checkpoints. A checkpoint (from `<p>/checkpoint` or an ack's `checkpoint` key) is
verified with the configured log key first. The first one is kept as it is (trust on
first use, after the signature). An older one (lower height, no larger tree: a
broker redelivering what it retained) is ignored, after checking its link when it
is the kept one's predecessor. A later one is kept only once `check_extends`
accepts it after the last kept one: same-size and older ones need no proof; for a
larger one the device asks for a consistency proof on `cons` and checks the answer
on `proof` (resent after `resend_ms` while unanswered; a newer checkpoint replaces
the one waiting). A checkpoint that fails either check is an alarm and changes
nothing.

Pruning. `covered` is the highest height whose log index (from `ok` and `dup` acks) is below
the kept checkpoint's size; since a device's blocks enter the log in height order,
every lower height is covered too, so a height whose index the device never
learnt (an ack lost, an index dropped from an old cursor) is covered by a later
block's index. `prunable =
min(acked, covered)`, and it only grows. Trust note: log indexes come from acks, so
coverage trusts the aggregator's word that a block is at that index; the signed,
consistent checkpoints bound what it can later deny. Inclusion proofs per block
would remove that trust (not done here).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeledger.core.checkpoint import Checkpoint, check_extends, open_checkpoint
from edgeledger.core.errors import ConfigError, DecodeError, EdgeLedgerError, VerificationError
from edgeledger.core.note import Verifier
from edgeledger.sync.messages import (
    Ack,
    ConsistencyProof,
    ConsistencyRequest,
    Hello,
    State,
    decode_checkpoint_payload,
)
from edgeledger.sync.topics import DEFAULT_PREFIX, DeviceTopics

QOS_SYNC = 1
QOS_STATE = 0
"""DESIGN.md 3: QoS 1 for everything but `state` (retained, so the latest wins anyway)."""


@dataclass(frozen=True)
class Publish:
    """Publish `payload` on `topic`."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False


@dataclass(frozen=True)
class SendBlock:
    """Load block `height`'s sync message from the ledger and publish it on `topic`."""

    height: int
    topic: str
    qos: int = QOS_SYNC


@dataclass(frozen=True)
class SetPrunable:
    """Blocks up to and including `height` are acked and covered by a verified checkpoint."""

    height: int


@dataclass(frozen=True)
class KeepCheckpoint:
    """Persist `note` as the last checkpoint kept (verified and consistent)."""

    note: str


@dataclass(frozen=True)
class Alarm:
    """Something the operator must hear about; nothing was changed because of it."""

    reason: str


Action = Publish | SendBlock | SetPrunable | KeepCheckpoint | Alarm


@dataclass(frozen=True)
class SyncCursor:
    """What a device persists to resume sync after a restart."""

    acked: int | None = None
    checkpoint: str | None = None
    covered: int | None = None
    log_indexes: tuple[tuple[int, int], ...] = ()
    """(height, log index) of acked blocks not yet covered."""


class DeviceSync:
    """The device's sync state machine; see the module doc."""

    def __init__(self, device: str, log_key: Verifier, tip: int | None,
                 cursor: SyncCursor | None = None, *, prefix: str = DEFAULT_PREFIX,
                 window: int = 16, resend_ms: int = 10_000, state_ms: int = 10_000,
                 version: str = "edgeledger") -> None:
        cursor = cursor or SyncCursor()
        self.topics = DeviceTopics(device, prefix)
        for key, value in (("window", window), ("resend_ms", resend_ms),
                           ("state_ms", state_ms)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError("[sync]", key, f"must be a positive integer, not {value!r}")
        if cursor.acked is not None and (tip is None or cursor.acked > tip):
            raise EdgeLedgerError(f"sync {device}: acked height {cursor.acked} is beyond "
                                  f"the ledger's tip {tip}")
        self.log_key, self.window, self.resend_ms, self.state_ms = (log_key, window, resend_ms,
                                                                    state_ms)
        self.version = version
        self.tip, self.acked, self.covered = tip, cursor.acked, cursor.covered
        self.kept: Checkpoint | None = None
        self.kept_note = cursor.checkpoint
        if cursor.checkpoint is not None:  # re-verified: a state file is not trusted blindly
            self.kept = open_checkpoint(cursor.checkpoint, log_key)
        self.log_indexes = dict(cursor.log_indexes)
        self.prunable = _min(self.acked, self.covered)
        self.online = False
        self.in_flight: dict[int, int] = {}
        self.next_send = _after(self.acked)
        self.halted_at: int | None = None
        self.pending: tuple[Checkpoint, str] | None = None
        self.pending_sent_at = 0
        self._state_sent: tuple[int | None, int] | None = None
        self._state_at = 0

    # --- what the agent persists and publishes ---------------------------------------

    def cursor(self) -> SyncCursor:
        """The state to persist (after KeepCheckpoint and SetPrunable at least)."""
        return SyncCursor(self.acked, self.kept_note, self.covered,
                          tuple(sorted(self.log_indexes.items())))

    @property
    def backlog(self) -> int:
        """Sealed blocks not yet acked."""
        return _after(self.tip) - _after(self.acked)

    def state(self, online: bool) -> Publish:
        """The retained `state` message."""
        payload = State(online, self.tip, self.backlog, self.version).encode()
        return Publish(self.topics.state, payload, QOS_STATE, retain=True)

    def last_will(self) -> Publish:
        """The last will to register before connecting: state with online false."""
        return self.state(False)

    # --- events ----------------------------------------------------------------------

    def connected(self, now: int) -> list[Action]:
        """The broker accepted our connection: hello, state, then resume sending."""
        self.online, self.in_flight, self.halted_at = True, {}, None
        self.next_send = _after(self.acked)
        acts: list[Action] = [Publish(self.topics.hello,
                                      Hello(self.tip, self.acked).encode(), QOS_SYNC),
                              self._publish_state(now)]
        if self.pending is not None:
            acts.append(self._request(self.pending[0], now))
        return acts + self._fill(now)

    def disconnected(self) -> list[Action]:
        """The connection is gone: nothing is in flight any more."""
        self.online, self.in_flight = False, {}
        return []

    def closing(self) -> list[Action]:
        """A clean shutdown is about to disconnect (the will is not sent then)."""
        return [self.state(False)] if self.online else []

    def sealed(self, height: int, now: int) -> list[Action]:
        """The ledger sealed block `height` (the new tip)."""
        if height != _after(self.tip):
            raise EdgeLedgerError(f"sync {self.topics.device}: sealed height {height} does "
                                  f"not follow the tip {self.tip}")
        self.tip = height
        return self._fill(now)

    def tick(self, now: int) -> list[Action]:
        """Time passed: resend what timed out, re-ask for a proof, refresh the state."""
        if not self.online:
            return []
        acts: list[Action] = []
        for h in sorted(self.in_flight):
            if now - self.in_flight[h] >= self.resend_ms:
                self.in_flight[h] = now
                acts.append(SendBlock(h, self.topics.blk))
        if self.pending is not None and now - self.pending_sent_at >= self.resend_ms:
            acts.append(self._request(self.pending[0], now))
        if (self._state_sent != (self.tip, self.backlog)
                and now - self._state_at >= self.state_ms):
            acts.append(self._publish_state(now))
        return acts

    def received(self, topic: str, payload: bytes, now: int) -> list[Action]:
        """A message arrived on one of `topics.subscriptions()`."""
        if topic == self.topics.ack:
            return self.ack_received(payload, now)
        if topic == self.topics.proof:
            return self.proof_received(payload, now)
        if topic == self.topics.checkpoint:
            return self.checkpoint_received(payload, now)
        return []

    def ack_received(self, payload: bytes, now: int) -> list[Action]:
        """An `ack` payload from the aggregator."""
        try:
            ack = Ack.decode(payload)
        except DecodeError as exc:
            return [Alarm(f"sync {self.topics.device}: {exc}")]
        if ack.next > _after(self.tip):
            return [Alarm(f"sync {self.topics.device}: aggregator says it holds blocks up to "
                          f"{ack.next - 1}, but the tip is {self.tip} ({ack.status} ack ignored)")]
        if ack.status in ("ok", "dup"):
            acts = self._acked(ack, now)
        elif ack.status == "gap":
            acts = self._gap(ack.next, now)
        else:
            acts = self._rejected(ack)
        if ack.checkpoint is not None:
            acts += self._checkpoint(ack.checkpoint, now)
        return acts

    def checkpoint_received(self, payload: bytes, now: int) -> list[Action]:
        """A `<p>/checkpoint` payload (signed note text)."""
        try:
            note = decode_checkpoint_payload(payload)
        except DecodeError as exc:
            return [Alarm(f"sync {self.topics.device}: {exc}")]
        return self._checkpoint(note, now)

    def proof_received(self, payload: bytes, now: int) -> list[Action]:
        """A `proof` payload answering our consistency request."""
        try:
            msg = ConsistencyProof.decode(payload)
        except DecodeError as exc:
            return [Alarm(f"sync {self.topics.device}: {exc}")]
        if self.pending is None or self.kept is None:
            return []
        new, note = self.pending
        if (msg.old_size, msg.new_size) != (self.kept.size, new.size):
            return []  # an answer to an older request
        self.pending = None
        try:
            check_extends(self.kept, new, msg.proof)
        except EdgeLedgerError as exc:
            return [self._bad_checkpoint(new, exc)]
        return self._keep(new, note, now)

    # --- sending ---------------------------------------------------------------------

    def _fill(self, now: int) -> list[Action]:
        """Send blocks in height order while the window has room."""
        acts: list[Action] = []
        while (self.online and len(self.in_flight) < self.window
               and self.tip is not None and self.next_send <= self.tip
               and (self.halted_at is None or self.next_send < self.halted_at)):
            self.in_flight[self.next_send] = now
            acts.append(SendBlock(self.next_send, self.topics.blk))
            self.next_send += 1
        return acts

    def _acked(self, ack: Ack, now: int) -> list[Action]:
        acts: list[Action] = []
        if ack.log_index is not None:  # ok and dup: block next - 1 is at log_index
            acts += self._record_index(ack.next - 1, ack.log_index)
        top = ack.next - 1
        self.in_flight = {h: t for h, t in self.in_flight.items() if h > top}
        if top >= 0 and (self.acked is None or top > self.acked):
            self.acked = top
            self.next_send = max(self.next_send, top + 1)
            acts += self._update_prunable()
        return acts + self._fill(now)

    def _record_index(self, height: int, index: int) -> list[Action]:
        known = self.log_indexes.get(height)
        if known is not None and known != index:
            return [Alarm(f"sync {self.topics.device}: block {height} acked at log index "
                          f"{index}, earlier at {known}: appended twice?")]
        if self.covered is not None and height <= self.covered:
            return []
        below = [i for h, i in self.log_indexes.items() if h < height and i >= index]
        above = [i for h, i in self.log_indexes.items() if h > height and i <= index]
        if below or above:
            return [Alarm(f"sync {self.topics.device}: block {height} acked at log index "
                          f"{index}, out of height order with other blocks' indexes")]
        self.log_indexes[height] = index
        return self._update_prunable()

    def _gap(self, next_height: int, now: int) -> list[Action]:
        acts: list[Action] = []
        if self.acked is not None and next_height <= self.acked:
            acts.append(Alarm(f"sync {self.topics.device}: aggregator asks for block "
                              f"{next_height} again after acking up to {self.acked}: "
                              "it lost blocks; offering them again"))
        resume = min(next_height, _after(self.acked))
        self.in_flight = {h: t for h, t in self.in_flight.items() if h < resume}
        self.next_send = resume
        return acts + self._fill(now)

    def _rejected(self, ack: Ack) -> list[Action]:
        stop = max(ack.next, _after(self.acked))
        self.halted_at = stop if self.halted_at is None else min(self.halted_at, stop)
        self.in_flight = {h: t for h, t in self.in_flight.items() if h < self.halted_at}
        self.next_send = min(self.next_send, self.halted_at)
        return [Alarm(f"sync {self.topics.device}: aggregator rejected a block (next expected "
                      f"{ack.next}): {ack.why}; not sending block {stop} or later until the "
                      "next connect")]

    def _publish_state(self, now: int) -> Publish:
        self._state_sent, self._state_at = (self.tip, self.backlog), now
        return self.state(True)

    # --- checkpoints -----------------------------------------------------------------

    def _checkpoint(self, note: str, now: int) -> list[Action]:
        try:
            new = open_checkpoint(note, self.log_key)
        except EdgeLedgerError as exc:
            return [Alarm(f"sync {self.topics.device}: checkpoint refused: {exc}")]
        kept = self.kept
        if kept is None:
            return self._keep(new, note, now)
        if new == kept or (self.pending is not None and self.pending[0] == new):
            return []
        if new.height < kept.height and new.size <= kept.size:
            return self._older(kept, new)
        if new.size <= kept.size or new.height <= kept.height:
            try:  # no proof can make these good; check_extends says what is wrong
                check_extends(kept, new, [])
            except EdgeLedgerError as exc:
                return [self._bad_checkpoint(new, exc)]
            return self._keep(new, note, now)
        if self.pending is not None and self.pending[0].height > new.height:
            return []  # waiting on a newer one already
        self.pending = (new, note)
        return [self._request(new, now)] if self.online else []

    def _older(self, kept: Checkpoint, new: Checkpoint) -> list[Action]:
        """An older checkpoint delivered late (a broker restored a retained message, or
        redelivered an ack): nothing to keep. Its link is checked where it can be."""
        if new.height == kept.height - 1 and kept.prev != new.hash:
            return [self._bad_checkpoint(new, VerificationError(
                "checkpoint chain", f"checkpoint {kept.height} does not link to checkpoint "
                                    f"{new.height} (prev mismatch)"))]
        return []

    def _request(self, new: Checkpoint, now: int) -> Publish:
        assert self.kept is not None
        self.pending_sent_at = now
        payload = ConsistencyRequest(self.kept.size, new.size).encode()
        return Publish(self.topics.cons, payload, QOS_SYNC)

    def _bad_checkpoint(self, new: Checkpoint, exc: EdgeLedgerError) -> Alarm:
        kept = self.kept
        was = f"height {kept.height}, size {kept.size}" if kept else "none"
        return Alarm(f"sync {self.topics.device}: checkpoint {new.height} (size {new.size}) "
                     f"is not consistent with the kept checkpoint ({was}): {exc}; "
                     "keeping every block")

    def _keep(self, new: Checkpoint, note: str, now: int) -> list[Action]:
        self.kept, self.kept_note = new, note
        waiting, self.pending = self.pending, None
        acts: list[Action] = [KeepCheckpoint(note), *self._update_prunable()]
        if waiting is not None and waiting[0].height > new.height:
            acts += self._checkpoint(waiting[1], now)  # ask again, from the new kept size
        return acts

    def _update_prunable(self) -> list[Action]:
        kept = self.kept
        if kept is not None:
            inside = [h for h, i in self.log_indexes.items() if i < kept.size]
            if inside and (self.covered is None or max(inside) > self.covered):
                self.covered = max(inside)
            if self.covered is not None:
                self.log_indexes = {h: i for h, i in self.log_indexes.items()
                                    if h > self.covered}
        prunable = _min(self.acked, self.covered)
        if prunable is None or (self.prunable is not None and prunable <= self.prunable):
            return []
        self.prunable = prunable
        return [SetPrunable(prunable)]


def _after(height: int | None) -> int:
    """The height that follows `height` (0 when there is none)."""
    return 0 if height is None else height + 1


def _min(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else min(a, b)
