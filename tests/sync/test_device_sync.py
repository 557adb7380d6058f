"""DeviceSync, the device side of sync, against a real Ingest and CanonicalLog in memory.

Table-driven cases pin each rule; a hypothesis state machine runs random
interleavings of seals, connects, disconnects, lost and duplicated messages,
aggregator restarts (in-flight messages forgotten) and checkpoints, and checks that
every sealed block ends in the log exactly once in height order, that `acked` never
goes back and that `prunable` never passes what the aggregator holds and covers.
A lying aggregator (forks, rollbacks, bad proofs, another key) raises the alarm and
moves nothing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edgeledger.aggregator.ingest import Ingest
from edgeledger.aggregator.log import CanonicalLog, MemoryLogStore
from edgeledger.core.block import parse_sync_message, sync_message
from edgeledger.core.checkpoint import Checkpoint
from edgeledger.core.errors import EdgeLedgerError, VerificationError
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.chain import DeviceChain
from edgeledger.sync.device import (
    Action,
    Alarm,
    DeviceSync,
    KeepCheckpoint,
    Publish,
    SendBlock,
    SetPrunable,
    SyncCursor,
)
from edgeledger.sync.messages import (
    Ack,
    ConsistencyProof,
    ConsistencyRequest,
    Hello,
    State,
)
from edgeledger.sync.topics import DeviceTopics

DEV = "gw-1"
DEVICE_KEY = Signer(DEV, bytes([1]) * 32)
LOG_KEY = Signer("log.test/agg-1", bytes([9]) * 32)
ROGUE_KEY = Signer("log.test/agg-1", bytes([7]) * 32)
T = DeviceTopics(DEV)
N_BLOCKS = 24
WINDOW, RESEND = 4, 100


def _make_blocks() -> list[bytes]:
    chain = DeviceChain.after(DEVICE_KEY, None)
    out = []
    for h in range(N_BLOCKS):
        readings = [Reading("s-1/temperature", 1000 + h, h, 20.0 + h, "Cel")]
        out.append(sync_message(chain.seal(readings, 2000 + h), readings))
    return out


BLOCKS = _make_blocks()


class FakeAggregator:
    """The real Ingest and CanonicalLog behind the device's MQTT topics, in memory."""

    def __init__(self) -> None:
        self.log = CanonicalLog(MemoryLogStore(), LOG_KEY)
        self.ingest = Ingest(self.log)
        self.ingest.enroll(DEV, DEVICE_KEY.public_key)
        self.notes: list[str] = []
        self.time = 10_000

    def handle(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """One message from the device in; the messages for the device out."""
        if topic == T.blk:
            a = self.ingest.receive(DEV, payload)
            nxt = a.next
            if a.status == "dup":  # messages.Ack: a dup names the block it answers
                nxt = parse_sync_message(payload)[0].header.h + 1
            return [(T.ack, Ack(nxt, a.status, a.why, a.log_index).encode())]
        if topic == T.cons:
            req = ConsistencyRequest.decode(payload)
            path = self.log.consistency_proof(req.old_size, req.new_size)
            return [(T.proof, ConsistencyProof(req.old_size, req.new_size, tuple(path)).encode())]
        if topic == T.hello:
            Hello.decode(payload)
        return []

    def other_device_appends(self, n: int) -> None:
        for i in range(n):
            self.log.append(f"another device's block {self.log.size} {i}".encode())

    def checkpoint(self) -> str:
        self.time += 1000
        note = self.log.sign_checkpoint(self.time)
        if not self.notes or self.notes[-1] != note:
            self.notes.append(note)
        return note

    def holds_through(self) -> int:
        """Highest height of DEV the log holds (-1 for none)."""
        return self.ingest.devices[DEV].next_height - 1

    def covered_through(self) -> int:
        """Highest height of DEV inside the latest checkpoint the aggregator signed."""
        if not self.notes:
            return -1
        size = _parse(self.notes[-1]).size
        blocks = self.ingest.devices[DEV].blocks
        return max((h for h, (_, index) in blocks.items() if index < size), default=-1)

    def device_entries(self) -> list[bytes]:
        return [self.log.store.entry(i) for i in range(self.log.size)
                if not self.log.store.entry(i).startswith(b"another")]


def _parse(note: str) -> Checkpoint:
    return Checkpoint.parse(note[:note.rfind("\n\n") + 1])


@dataclass
class Net:
    """A device, a fake aggregator and the broker between them (FIFO, lossy on demand)."""

    agg: FakeAggregator = field(default_factory=FakeAggregator)
    dev: DeviceSync = field(default_factory=lambda: DeviceSync(
        DEV, LOG_KEY.verifier(), None, window=WINDOW, resend_ms=RESEND, state_ms=RESEND))
    now: int = 0
    up: deque[tuple[str, bytes]] = field(default_factory=deque)
    down: deque[tuple[str, bytes]] = field(default_factory=deque)
    alarms: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    prunable: list[int] = field(default_factory=list)
    retained_state: bytes | None = None

    def run(self, actions: list[Action]) -> None:
        for act in actions:
            if isinstance(act, Publish):
                if act.topic == T.state:
                    assert act.retain and act.qos == 0
                    self.retained_state = act.payload
                elif self.dev.online:
                    self.up.append((act.topic, act.payload))
            elif isinstance(act, SendBlock):
                assert act.topic == T.blk and act.qos == 1
                if self.dev.online:
                    self.up.append((act.topic, BLOCKS[act.height]))
            elif isinstance(act, SetPrunable):
                # Never beyond what the aggregator holds and a checkpoint it signed covers.
                assert act.height <= min(self.agg.holds_through(), self.agg.covered_through())
                assert not self.prunable or act.height > self.prunable[-1]
                self.prunable.append(act.height)
            elif isinstance(act, KeepCheckpoint):
                self.kept.append(act.note)
            else:
                assert isinstance(act, Alarm)
                self.alarms.append(act.reason)

    def connect(self) -> None:
        self.run(self.dev.connected(self.now))
        if self.agg.notes:  # the broker delivers the retained checkpoint on subscribe
            self.down.append((T.checkpoint, self.agg.notes[-1].encode()))

    def disconnect(self) -> None:
        self.run(self.dev.disconnected())
        self.up.clear()
        self.down.clear()
        self.retained_state = self.dev.last_will().payload  # the broker publishes the will

    def to_agg(self, drop: bool = False, again: bool = False) -> None:
        topic, payload = self.up[0] if again else self.up.popleft()
        if not drop:
            self.down.extend(self.agg.handle(topic, payload))

    def to_dev(self, drop: bool = False) -> None:
        topic, payload = self.down.popleft()
        if not drop:
            self.run(self.dev.received(topic, payload, self.now))

    def publish_checkpoint(self) -> None:
        note = self.agg.checkpoint()
        if self.dev.online:
            self.down.append((T.checkpoint, note.encode()))

    def settle(self, rounds: int = 200) -> None:
        """Deliver everything, tick and checkpoint until the device has nothing left to do."""
        if not self.dev.online:
            self.connect()
        for _ in range(rounds):
            while self.up or self.down:
                if self.up:
                    self.to_agg()
                if self.down:
                    self.to_dev()
            done = (self.dev.acked == self.dev.tip and self.dev.prunable == self.dev.tip
                    and self.dev.pending is None)
            if done:
                return
            self.now += RESEND
            self.run(self.dev.tick(self.now))
            self.publish_checkpoint()
        raise AssertionError(f"did not settle: acked {self.dev.acked}, tip {self.dev.tip}, "
                             f"prunable {self.dev.prunable}")

    def seal(self) -> None:
        self.run(self.dev.sealed(0 if self.dev.tip is None else self.dev.tip + 1, self.now))


def _cose(height: int) -> bytes:
    return parse_sync_message(BLOCKS[height])[0].cose


def _blocks_sent(actions: list[Action]) -> list[int]:
    return [a.height for a in actions if isinstance(a, SendBlock)]


def _ack(nxt: int, status: str, index: int | None = None, why: str = "") -> bytes:
    return Ack(nxt, status, why, index).encode()


def _device(tip: int | None = 9, **kw: Any) -> DeviceSync:
    return DeviceSync(DEV, LOG_KEY.verifier(), tip, window=WINDOW, resend_ms=RESEND, **kw)


# --- sending: table-driven ------------------------------------------------------------


def test_connect_says_hello_then_state_then_fills_the_window_in_height_order() -> None:
    d = _device(9, cursor=SyncCursor(acked=2))
    acts = d.connected(0)
    assert acts[0] == Publish(T.hello, Hello(9, 2).encode(), 1)
    assert acts[1] == Publish(T.state, State(True, 9, 7, "edgeledger").encode(), 0, True)
    assert _blocks_sent(acts) == [3, 4, 5, 6]
    assert State.decode(d.last_will().payload) == State(False, 9, 7, "edgeledger")
    assert d.last_will().retain


ACK_CASES = [
    # (acks in order, acked after, blocks sent by the last ack, alarm expected)
    ([_ack(1, "ok", 0)], 0, [4], False),
    ([_ack(3, "ok", 7)], 2, [4, 5, 6], False),  # cumulative: 0 and 1 are held too
    ([_ack(3, "ok", 7), _ack(1, "ok", 0)], 2, [], False),  # an old ack never moves back
    ([_ack(2, "dup", 5)], 1, [4, 5], False),
    ([_ack(0, "gap")], None, [0, 1, 2, 3], False),  # resend everything from next
    ([_ack(3, "gap")], None, [0, 1, 2, 3], False),  # never skip what is not acked
    ([_ack(2, "ok", 1), _ack(1, "gap")], 1, [1, 2, 3, 4], True),  # asks again: lost blocks
    ([_ack(11, "ok", 3)], None, [], True),  # beyond the tip: ignored
    ([_ack(11, "gap")], None, [], True),
    ([_ack(0, "rejected", why="prev does not link")], None, [], True),
    ([b"\xa1\x61x\x01"], None, [], True),  # malformed
]


@pytest.mark.parametrize(("acks", "acked", "sent", "alarm"), ACK_CASES)
def test_acks(acks: list[bytes], acked: int | None, sent: list[int], alarm: bool) -> None:
    d = _device(9)
    assert _blocks_sent(d.connected(0)) == [0, 1, 2, 3]
    alarms = []
    for payload in acks:
        acts = d.received(T.ack, payload, 1)
        alarms += [a for a in acts if isinstance(a, Alarm)]
    assert d.acked == acked
    assert _blocks_sent(acts) == sent
    assert bool(alarms) == alarm
    assert sorted(d.in_flight) == sorted(d.in_flight)[:WINDOW]
    if not alarm:
        assert all(h > (-1 if d.acked is None else d.acked) for h in d.in_flight)


def test_a_rejected_block_is_not_sent_again_until_the_next_connect() -> None:
    d = _device(5)
    d.connected(0)
    acts = d.received(T.ack, _ack(1, "ok", 0), 1)
    acts += d.received(T.ack, _ack(1, "rejected", why="bad root"), 2)
    assert any("bad root" in a.reason for a in acts if isinstance(a, Alarm))
    assert d.acked == 0 and d.in_flight == {}
    assert _blocks_sent(d.tick(10 * RESEND)) == []
    assert _blocks_sent(d.sealed(6, 3)) == []
    d.disconnected()
    assert _blocks_sent(d.connected(20 * RESEND)) == [1, 2, 3, 4]


def test_unacked_blocks_are_sent_again_after_the_timeout_and_not_before() -> None:
    d = _device(1)
    assert _blocks_sent(d.connected(0)) == [0, 1]
    assert _blocks_sent(d.tick(RESEND - 1)) == []
    assert _blocks_sent(d.tick(RESEND)) == [0, 1]
    assert _blocks_sent(d.sealed(2, RESEND + 1)) == [2]
    d.received(T.ack, _ack(1, "ok", 0), RESEND + 2)
    assert _blocks_sent(d.tick(2 * RESEND)) == [1]
    d.disconnected()
    assert d.tick(10 * RESEND) == [] and d.sealed(3, 1) == []


def test_the_state_is_republished_when_it_changes() -> None:
    d = _device(1, state_ms=RESEND)
    d.connected(0)
    assert [a for a in d.tick(RESEND) if isinstance(a, Publish)] == []
    d.sealed(2, RESEND)
    states = [State.decode(a.payload) for a in d.tick(2 * RESEND)
              if isinstance(a, Publish) and a.topic == T.state]
    assert states == [State(True, 2, 3, "edgeledger")]
    assert State.decode(d.closing()[0].payload).online is False


def test_bad_configuration_and_cursors_are_refused() -> None:
    with pytest.raises(EdgeLedgerError, match="window"):
        DeviceSync(DEV, LOG_KEY.verifier(), None, window=0)
    with pytest.raises(EdgeLedgerError, match="acked height 5 is beyond"):
        _device(3, cursor=SyncCursor(acked=5))
    with pytest.raises(EdgeLedgerError, match="sealed height 3 does not follow"):
        _device(1).sealed(3, 0)
    agg = FakeAggregator()
    note = agg.checkpoint()
    with pytest.raises(VerificationError):
        _device(1, cursor=SyncCursor(checkpoint=note.replace("log.test", "log.tesu")))


# --- checkpoints ----------------------------------------------------------------------


def _synced(n_blocks: int = 6, extra: int = 3) -> Net:
    """A net whose device has sealed and synced `n_blocks`, with a kept checkpoint."""
    net = Net()
    net.agg.other_device_appends(extra)
    for _ in range(n_blocks):
        net.seal()
    net.settle()
    assert net.dev.prunable == n_blocks - 1 and not net.alarms
    return net


def test_prunable_is_min_of_acked_and_covered_and_needs_a_consistent_checkpoint() -> None:
    net = Net()
    net.connect()
    for _ in range(3):
        net.seal()
    while net.up or net.down:
        net.to_agg() if net.up else net.to_dev()
    assert net.dev.acked == 2 and net.prunable == []  # acked, no checkpoint yet
    net.publish_checkpoint()
    net.to_dev()
    assert net.prunable == [2] and len(net.kept) == 1  # the first is kept on its signature
    net.seal()
    net.agg.other_device_appends(2)
    net.to_agg()
    net.to_dev()  # ok for block 3
    assert net.dev.acked == 3 and net.prunable == [2]
    net.publish_checkpoint()
    net.to_dev()
    assert net.up[0][0] == T.cons and net.prunable == [2]  # not before the proof
    net.to_agg()
    net.to_dev()
    assert net.prunable == [2, 3] and len(net.kept) == 2 and not net.alarms
    assert net.dev.cursor().checkpoint == net.kept[-1]


def _forged(base: Checkpoint, signer: Signer = LOG_KEY, **changes: Any) -> str:
    fields = {**base.__dict__, **changes}
    return Checkpoint(**fields).sign(signer)


def _fork_note(net: Net) -> tuple[str, list[bytes]]:
    """A checkpoint of a different log that extends the kept one's height chain."""
    kept = net.dev.kept
    assert kept is not None
    fork = CanonicalLog(MemoryLogStore(), LOG_KEY)
    for i in range(kept.size + 3):
        fork.append(f"forged entry {i}".encode())
    note = _forged(kept, size=fork.size, root=fork.root(), height=kept.height + 1,
                   prev=kept.hash, time=kept.time + 1)
    return note, fork.consistency_proof(kept.size, fork.size)


def _lies(net: Net) -> dict[str, tuple[str, list[bytes] | None]]:
    kept = net.dev.kept
    assert kept is not None
    fork_note, fork_proof = _fork_note(net)
    bigger = _forged(kept, size=kept.size + 2, root=bytes(32), height=kept.height + 1,
                     prev=kept.hash, time=kept.time + 1)
    return {
        "fork with its own proof": (fork_note, fork_proof),
        "rolled back: smaller tree, later height": (
            _forged(kept, size=kept.size - 1, height=kept.height + 1, prev=kept.hash), None),
        "rolled back: an earlier height": (
            _forged(kept, height=kept.height - 1, prev=bytes(32) if kept.height == 1
                    else kept.prev), None),
        "same height, different tree": (_forged(kept, root=bytes([1]) * 32), None),
        "same size, different root": (
            _forged(kept, root=bytes([2]) * 32, height=kept.height + 1, prev=kept.hash), None),
        "bigger tree, proof that does not fit": (bigger, [bytes([3]) * 32] * 3),
        "bigger tree, empty proof": (bigger, []),
        "signed by another key": (_forged(kept, ROGUE_KEY, height=kept.height + 1), None),
        "not a note": ("hello\n", None),
    }


LIE_NAMES = [
    "fork with its own proof", "rolled back: smaller tree, later height",
    "rolled back: an earlier height", "same height, different tree",
    "same size, different root", "bigger tree, proof that does not fit",
    "bigger tree, empty proof", "signed by another key", "not a note"]


@pytest.mark.parametrize("lie", LIE_NAMES)
def test_a_lying_aggregator_raises_the_alarm_and_moves_nothing(lie: str) -> None:
    net = _synced(6, 3)
    net.publish_checkpoint()  # a second honest checkpoint, so the kept one has height >= 1
    net.agg.other_device_appends(1)
    net.seal()
    net.settle()
    kept, prunable, cursor = net.dev.kept, list(net.prunable), net.dev.cursor()
    net.seal()
    net.to_agg()
    net.to_dev()  # block acked, not yet covered
    note, proof = _lies(net)[lie]
    net.run(net.dev.received(T.checkpoint, note.encode(), net.now))
    if proof is not None:
        assert net.up and net.up[-1][0] == T.cons
        req = ConsistencyRequest.decode(net.up.pop()[1])  # the liar answers it
        net.run(net.dev.received(
            T.proof, ConsistencyProof(req.old_size, req.new_size, tuple(proof)).encode(),
            net.now))
    assert len(net.alarms) == 1, net.alarms
    assert net.dev.kept == kept and net.prunable == prunable
    assert net.dev.cursor().checkpoint == cursor.checkpoint
    assert net.dev.pending is None
    # The honest chain still works afterwards.
    net.alarms.clear()
    net.settle()
    assert net.dev.prunable == net.dev.tip and not net.alarms


def test_a_proof_for_another_request_is_ignored_and_asked_again() -> None:
    net = _synced(4, 1)
    net.seal()
    net.agg.other_device_appends(1)
    net.to_agg()
    net.to_dev()
    net.publish_checkpoint()
    net.to_dev()
    assert net.up[-1][0] == T.cons
    net.up.clear()  # the request is lost
    stale = ConsistencyProof(0, 1, ()).encode()
    assert net.dev.received(T.proof, stale, net.now) == []
    net.now += RESEND
    acts = net.dev.tick(net.now)
    assert [a.topic for a in acts if isinstance(a, Publish) and a.topic != T.state] == [T.cons]
    net.run(acts)
    net.settle()
    assert net.dev.prunable == 4 and not net.alarms


def test_a_restarted_device_resumes_from_its_cursor() -> None:
    net = _synced(5, 2)
    cursor = net.dev.cursor()
    net.dev = DeviceSync(DEV, LOG_KEY.verifier(), 4, cursor, window=WINDOW, resend_ms=RESEND)
    for _ in range(3):
        net.seal()
    net.prunable.clear()
    net.disconnect()
    net.settle()
    assert net.dev.acked == 7 and net.dev.prunable == 7 and not net.alarms
    assert net.agg.device_entries() == [_cose(h) for h in range(8)]


# --- random interleavings ---------------------------------------------------------------


class SyncMachine(RuleBasedStateMachine):
    """Random seals, outages, losses, duplicates, restarts and checkpoints; then settle."""

    def __init__(self) -> None:
        super().__init__()
        self.net = Net()
        self.last_acked: int | None = None

    @precondition(lambda self: self.net.dev.tip is None or self.net.dev.tip < N_BLOCKS - 1)
    @rule()
    def seal(self) -> None:
        self.net.seal()

    @precondition(lambda self: not self.net.dev.online)
    @rule()
    def connect(self) -> None:
        self.net.connect()

    @precondition(lambda self: self.net.dev.online)
    @rule()
    def disconnect(self) -> None:
        self.net.disconnect()

    @precondition(lambda self: bool(self.net.up))
    @rule(how=st.sampled_from(["deliver", "deliver", "deliver", "drop", "duplicate"]))
    def deliver_to_aggregator(self, how: str) -> None:
        self.net.to_agg(drop=how == "drop", again=how == "duplicate")

    @precondition(lambda self: bool(self.net.up or self.net.down))
    @rule()
    def deliver_everything(self) -> None:
        while self.net.up or self.net.down:
            if self.net.up:
                self.net.to_agg()
            if self.net.down:
                self.net.to_dev()

    @precondition(lambda self: bool(self.net.down))
    @rule(drop=st.sampled_from([False, False, True]))
    def deliver_to_device(self, drop: bool) -> None:
        self.net.to_dev(drop)

    @rule()
    def aggregator_restarts(self) -> None:
        self.net.up.clear()  # what it had not processed is gone; the log is durable

    @rule(n=st.integers(0, 3))
    def other_devices_append(self, n: int) -> None:
        self.net.agg.other_device_appends(n)

    @rule()
    def checkpoint(self) -> None:
        self.net.publish_checkpoint()

    @rule(dt=st.sampled_from([1, RESEND // 2, RESEND]))
    def tick(self, dt: int) -> None:
        self.net.now += dt
        self.net.run(self.net.dev.tick(self.net.now))

    @invariant()
    def acked_never_goes_back_nor_passes_the_aggregator(self) -> None:
        acked = self.net.dev.acked
        if self.last_acked is not None:
            assert acked is not None and acked >= self.last_acked
        assert (-1 if acked is None else acked) <= self.net.agg.holds_through()
        self.last_acked = acked
        assert not self.net.alarms, self.net.alarms

    def teardown(self) -> None:
        net = self.net
        net.settle()
        tip = -1 if net.dev.tip is None else net.dev.tip
        assert net.agg.device_entries() == [_cose(h) for h in range(tip + 1)]
        assert not net.alarms


SyncMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=80, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_random_interleavings = SyncMachine.TestCase


def test_an_older_checkpoint_delivered_late_is_ignored_but_its_link_is_checked() -> None:
    """A persistent broker restored from its last save re-sends the retained checkpoint."""
    log_key = Signer.generate("late.example/log")
    log = CanonicalLog(MemoryLogStore(), log_key)
    log.append(b"0")
    old = log.sign_checkpoint(1000)
    log.append(b"1")
    new = log.sign_checkpoint(2000)
    device = DeviceSync("gw-1", log_key.verifier(), tip=None)
    assert device.checkpoint_received(new.encode(), 3000) == [KeepCheckpoint(new)]
    assert device.checkpoint_received(old.encode(), 4000) == []
    assert device.kept is not None and device.kept.height == 1
    other = CanonicalLog(MemoryLogStore(), log_key)  # the same key, another history
    other.append(b"forked")
    forked = other.sign_checkpoint(1000)
    (alarm,) = device.checkpoint_received(forked.encode(), 5000)
    assert isinstance(alarm, Alarm) and "does not link to checkpoint 0" in alarm.reason
