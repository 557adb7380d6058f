"""Attacks on the real `edgeledger aggregator` process over a real Mosquitto.

One broker and one aggregator process serve the whole module (started once: the
process is what is under attack, and it must survive every case in turn). Each
case plays its own device id, so the cases do not depend on each other's order:
the honest blocks a case sends first are accepted (`ok`), then its attack is
answered as the table says: an ack on the device's ack topic whose `why` names the
reason, and an event of that kind in the aggregator's store (SqliteStore.events),
while the log grows only by the honest blocks. Rotation records have no ack; their
event is the answer. The last test fires every attack again in one burst and checks
that a well-behaved device still gets its blocks in, the checkpoint still follows,
and the process is alive; the fixture's teardown checks that SIGTERM exits 0.

The aggregator's own `wrong-topic` check is tested here (a block of device A
published on B's topic, with no broker ACL); tests/sync/test_mqtt.py has the broker
ACL that stops such a publish before it reaches the aggregator.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mosquitto import Mosquitto, free_port, running_broker

from edgeledger.aggregator.enrollment import (
    MAX_ROTATION,
    Rotation,
    make_rotation,
    rotation_topic,
)
from edgeledger.aggregator.store.sqlite import Event, SqliteStore
from edgeledger.core import cbor
from edgeledger.core.block import MAX_SYNC_MESSAGE, Block, seal, sync_message
from edgeledger.core.checkpoint import open_checkpoint
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.keyfile import write_signer
from edgeledger.sync.messages import Ack, Hello
from edgeledger.sync.mqtt import Event as MqttEvent
from edgeledger.sync.mqtt import MqttTransport, Received
from edgeledger.sync.topics import DeviceTopics

PREFIX = "test/atk"
ORIGIN = "attacks.test/log"
ENROLLED_MS = 1_000_000  # when the test enrolls its devices (before any rotation)
NOW = time.time_ns() // 1_000_000  # block times: near the aggregator's clock, no skew
ZERO = bytes(32)
ATTACKER = Signer("attacker", hashlib.sha256(b"attacker").digest())
GOOD = "good-gw"
WAIT_S = 10.0


def key(dev: str, generation: int = 0) -> Signer:
    """A device's key, the same every run; `generation` 1 is its rotated key."""
    return Signer(dev, hashlib.sha256(f"{dev}/{generation}".encode()).digest())


def readings(h: int, salt: float = 0.0) -> list[Reading]:
    """Three readings for block `h`; another `salt` makes other readings, same shape."""
    return [Reading("s-1/temperature", NOW + 10 * h + i, 10 * h + i, 20.0 + salt + i, "Cel")
            for i in range(3)]


def block(dev: str, h: int, prev: bytes, salt: float = 0.0, signer: Signer | None = None,
          ) -> tuple[Block, bytes]:
    """Block `h` of `dev` and its sync message."""
    rds = readings(h, salt)
    b = seal(signer or key(dev), dev, h, prev, rds, NOW + h)
    return b, sync_message(b, rds)


def chain(dev: str, n: int, signer: Signer | None = None) -> list[tuple[Block, bytes]]:
    """The first `n` honest blocks of `dev`."""
    out: list[tuple[Block, bytes]] = []
    for h in range(n):
        out.append(block(dev, h, out[-1][0].hash if out else ZERO, signer=signer))
    return out


def forged_signature(message_block: Block) -> bytes:
    """The block's sync message with the last byte of its Ed25519 signature flipped."""
    cose = message_block.cose[:-1] + bytes([message_block.cose[-1] ^ 1])
    return cbor.encode({"blk": cose, "rd": [r.raw for r in readings(message_block.header.h)]})


# --- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """Publish `payload` on `kind` of device `on`; expect this ack status and this event."""

    on: str
    kind: str  # "blk" or "rotate"
    payload: bytes
    status: str | None  # the ack's status; None: no ack (rotation records)
    event: str | None  # the event kind journalled for this message (None: none)
    note: str = ""  # a substring of the event's reason (and the ack's why) beyond its kind


@dataclass(frozen=True)
class Attack:
    """One case: its devices (enrolled before the aggregator starts) and its steps."""

    name: str
    devices: tuple[str, ...]
    steps: Callable[[str], list[Step]]
    revoked: bool = False


def _forged_sig(dev: str) -> list[Step]:
    (_, m0), (b1, _) = chain(dev, 2)
    return [Step(dev, "blk", m0, "ok", None),
            Step(dev, "blk", forged_signature(b1), "rejected", "bad-signature", "signature")]


def _unknown_key(dev: str) -> list[Step]:
    _, m0 = block(dev, 0, ZERO, signer=Signer(dev, bytes([7]) * 32))
    return [Step(dev, "blk", m0, "rejected", "unknown-key", "names key")]


def _unknown_device(dev: str) -> list[Step]:
    return [Step(dev, "blk", chain(dev, 1)[0][1], "rejected", "unknown-device",
                 "not enrolled")]


def _revoked(dev: str) -> list[Step]:
    return [Step(dev, "blk", chain(dev, 1)[0][1], "rejected", "revoked-key", "revoked at")]


def _replayed(dev: str) -> list[Step]:
    [(_, m0)] = chain(dev, 1)
    return [Step(dev, "blk", m0, "ok", None),
            Step(dev, "blk", m0, "dup", "dup", "already at log index")]


def _wrong_prev(dev: str) -> list[Step]:
    [(_, m0)] = chain(dev, 1)
    _, bad = block(dev, 1, bytes([0xAB]) * 32)
    return [Step(dev, "blk", m0, "ok", None), Step(dev, "blk", bad, "rejected", "bad-prev",
                                                  "prev does not link")]


def _wrong_root(dev: str) -> list[Step]:
    b0 = seal(key(dev), dev, 0, ZERO, readings(0), NOW)
    swapped = sync_message(b0, readings(0, salt=5.0))  # same count, other values
    return [Step(dev, "blk", swapped, "rejected", "bad-readings", "root")]


def _reordered(dev: str) -> list[Step]:
    (_, m0), (_, m1), (_, m2) = chain(dev, 3)
    return [Step(dev, "blk", m0, "ok", None),
            Step(dev, "blk", m2, "gap", "gap", "next expected is 1"),
            Step(dev, "blk", m1, "ok", None), Step(dev, "blk", m2, "ok", None)]


def _equivocation(dev: str) -> list[Step]:
    [(_, m0)] = chain(dev, 1)
    _, other = block(dev, 0, ZERO, salt=9.0)  # validly signed, another block at height 0
    return [Step(dev, "blk", m0, "ok", None),
            Step(dev, "blk", other, "rejected", "equivocation", "kept as evidence")]


def _malformed(dev: str) -> list[Step]:
    return [Step(dev, "blk", b"\xa2\x63blk\x5f\x41\x00\xff\xff" + bytes(20), "rejected",
                 "malformed")]


def _oversized(dev: str) -> list[Step]:
    return [Step(dev, "blk", b"\xa2" + bytes(MAX_SYNC_MESSAGE), "rejected", "oversized",
                 f"at most {MAX_SYNC_MESSAGE}")]


def _wrong_topic(dev: str) -> list[Step]:
    victim = f"{dev}-b"  # A (dev) publishes its own, validly signed block on B's topic
    return [Step(victim, "blk", chain(dev, 1)[0][1], "rejected", "wrong-topic",
                 f"sent as {victim!r}")]


def _rotation_forged(dev: str) -> list[Step]:
    real = make_rotation(key(dev), dev, key(dev, 1).public_key, NOW)
    fake = make_rotation(ATTACKER, dev, key(dev, 1).public_key, NOW)
    forged = Rotation(dev, real.old, real.new, real.ts, fake.sig)  # names the old key
    (b0, m0), (_, m1) = chain(dev, 2)
    _, m1_new = block(dev, 1, b0.hash, signer=key(dev, 1))
    return [Step(dev, "blk", m0, "ok", None),
            Step(dev, "rotate", forged.encode(), None, "rotation-rejected",
                 "not signed by its old key"),
            Step(dev, "blk", m1_new, "rejected", "unknown-key"),  # the new key is not in
            Step(dev, "blk", m1, "ok", None)]  # the old key still is


def _rotation_stale(dev: str) -> list[Step]:
    stale = make_rotation(key(dev), dev, key(dev, 1).public_key, ENROLLED_MS - 1)
    [(_, m0)] = chain(dev, 1)
    return [Step(dev, "rotate", stale.encode(), None, "rotation-rejected", "stale"),
            Step(dev, "blk", m0, "ok", None)]


def _rotation_valid(dev: str) -> list[Step]:
    rotation = make_rotation(key(dev), dev, key(dev, 1).public_key, NOW)
    (b0, m0), (_, m1_old) = chain(dev, 2)
    b1_new, m1_new = block(dev, 1, b0.hash, salt=1.0, signer=key(dev, 1))
    _, m2_old = block(dev, 2, b1_new.hash, signer=key(dev))
    _, m2_new = block(dev, 2, b1_new.hash, signer=key(dev, 1))
    return [Step(dev, "blk", m0, "ok", None),
            Step(dev, "rotate", rotation.encode(), None, "rotated", "rotation of"),
            Step(dev, "blk", m1_old, "rejected", "unknown-key"),  # the old key is out
            Step(dev, "blk", m1_new, "ok", None),  # the chain goes on under the new key
            Step(dev, "blk", m2_old, "rejected", "unknown-key"),
            Step(dev, "blk", m2_new, "ok", None)]


def _rotation_oversized(dev: str) -> list[Step]:
    record = make_rotation(key(dev), dev, key(dev, 1).public_key, NOW).encode()
    return [Step(dev, "rotate", record + bytes(MAX_ROTATION), None, "oversized",
                 f"at most {MAX_ROTATION}")]


def _rotation_malformed(dev: str) -> list[Step]:
    record = make_rotation(key(dev), dev, key(dev, 1).public_key, NOW).encode()
    return [Step(dev, "rotate", record[:-1], None, "malformed", "rotation record")]


def _rotation_wrong_topic(dev: str) -> list[Step]:
    rotation = make_rotation(key(dev), dev, key(dev, 1).public_key, NOW)
    return [Step(f"{dev}-b", "rotate", rotation.encode(), None, "wrong-topic",
                 f"a rotation record for {dev} on {dev}-b's topic")]


ATTACKS = [
    Attack("forged signature", ("atk-forged-sig",), _forged_sig),
    Attack("unknown key", ("atk-unknown-key",), _unknown_key),
    Attack("unknown device", (), _unknown_device),
    Attack("revoked key", ("atk-revoked",), _revoked, revoked=True),
    Attack("replayed block", ("atk-replay",), _replayed),
    Attack("wrong prev", ("atk-prev",), _wrong_prev),
    Attack("wrong root", ("atk-root",), _wrong_root),
    Attack("reordered heights", ("atk-reorder",), _reordered),
    Attack("equivocation", ("atk-equivocate",), _equivocation),
    Attack("malformed CBOR", ("atk-malformed",), _malformed),
    Attack("oversized message", ("atk-oversized",), _oversized),
    Attack("block on another device's topic", ("atk-topic", "atk-topic-b"), _wrong_topic),
    Attack("forged rotation record", ("atk-rot-forged",), _rotation_forged),
    Attack("stale rotation record", ("atk-rot-stale",), _rotation_stale),
    Attack("valid rotation record", ("atk-rot-valid",), _rotation_valid),
    Attack("oversized rotation record", ("atk-rot-big",), _rotation_oversized),
    Attack("malformed rotation record", ("atk-rot-bad",), _rotation_malformed),
    Attack("rotation on another device's topic", ("atk-rot-topic", "atk-rot-topic-b"),
           _rotation_wrong_topic),
]
ATTACK_DEVICES = {a.name: (a.devices[0] if a.devices else "atk-nobody") for a in ATTACKS}


# --- the aggregator under attack -------------------------------------------------------------


class Acks:
    """Every ack the aggregator publishes, by device, and the retained checkpoint."""

    def __init__(self, broker: Mosquitto) -> None:
        self.by_device: dict[str, list[Ack]] = {}
        self.checkpoints: list[str] = []
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self.transport = MqttTransport(broker.host, broker.port, "attack-watcher",
                                       clean_start=True, on_event=self._on_event)
        self.transport.connect()
        self.transport.subscribe([f"{PREFIX}/dev/+/ack", f"{PREFIX}/checkpoint"])

    def _on_event(self, event: MqttEvent) -> None:
        if not isinstance(event, Received):
            return
        with self._cond:
            if event.topic.endswith("/checkpoint"):
                self.checkpoints.append(event.payload.decode())
            else:
                dev = event.topic.split("/")[-2]
                try:
                    self.by_device.setdefault(dev, []).append(Ack.decode(event.payload))
                except Exception as exc:  # noqa: BLE001 - a test failure, reported later
                    self.errors.append(f"{event.topic}: {exc}")
            self._cond.notify_all()

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
        """Wait until `predicate()` holds (called under the lock) or fail."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                pytest.fail(f"timed out after {timeout} s waiting for {what}")

    def of(self, dev: str) -> list[Ack]:
        """The acks `dev` received so far."""
        with self._cond:
            return list(self.by_device.get(dev, []))


@dataclass
class Aggregator:
    """The running process, its store (read from here), a publisher and the ack watcher."""

    proc: subprocess.Popen[bytes]
    log: Path
    config: Path
    store: SqliteStore
    log_key: Signer
    device: MqttTransport
    acks: Acks

    def alive(self) -> None:
        """Fail with the aggregator's log tail if the process has exited."""
        if self.proc.poll() is not None:
            pytest.fail(f"the aggregator exited with {self.proc.returncode}:\n"
                        f"{self.log.read_text()[-3000:]}")

    def events(self, dev: str, after: int) -> list[Event]:
        """The store's events about `dev` after event id `after`."""
        return [e for e in self.store.events(after, 10_000) if e.dev == dev]

    def last_event_id(self) -> int:
        """The id of the newest event in the store (0 when none)."""
        last = 0
        while page := self.store.events(last, 1000):
            last = page[-1].id
        return last

    def publish(self, dev: str, kind: str, payload: bytes) -> None:
        """Publish as device `dev` (no ACL here: anyone may use any id's topics)."""
        topic = (rotation_topic(PREFIX, dev) if kind == "rotate"
                 else getattr(DeviceTopics(dev, PREFIX), kind))
        self.device.publish(topic, payload, timeout=WAIT_S)


def _write_config(tmp: Path, broker: Mosquitto) -> Path:
    config = tmp / "aggregator.toml"
    config.write_text(f"""
[aggregator]
origin = "{ORIGIN}"
key_file = "{tmp / 'log.key'}"

[store]
path = "{tmp / 'agg.db'}"

[checkpoint]
interval_ms = 200
every_blocks = 1000

[broker]
address = "{broker.address}"
prefix = "{PREFIX}"
client_id = "attacked-aggregator"
[http]
listen = "127.0.0.1:{free_port()}"
""")
    return config


def _cli(*args: str) -> str:
    """Run `edgeledger ARGS` and return its stdout (failing the test on a non-zero exit)."""
    done = subprocess.run([sys.executable, "-m", "edgeledger.cli", *args], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def _enroll_everyone(config: Path, store_path: Path) -> None:
    """The good device by `edgeledger enroll`, the attackers' ids through the store."""
    _cli("enroll", "--config", str(config), GOOD, key(GOOD).verifier().text())
    store = SqliteStore(store_path)
    try:
        with store.transaction():
            for attack in ATTACKS:
                for dev in attack.devices:
                    store.enroll(dev, key(dev).public_key, ENROLLED_MS)
    finally:
        store.close()
    for attack in ATTACKS:
        if attack.revoked:
            _cli("revoke", "--config", str(config), attack.devices[0])


@pytest.fixture(scope="module")
def aggregator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Aggregator]:
    """One broker and one aggregator process for the module; SIGTERM must exit 0."""
    tmp = tmp_path_factory.mktemp("attacks")
    with running_broker() as broker:
        config = _write_config(tmp, broker)
        log_key = Signer.generate(ORIGIN)
        write_signer(tmp / "log.key", log_key)
        _enroll_everyone(config, tmp / "agg.db")
        log = tmp / "aggregator.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG"))}
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgeledger.cli", "aggregator", "--config", str(config),
                 "--log-level", "debug"],
                stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=tmp)
        store = SqliteStore(tmp / "agg.db")
        acks = device = None
        try:
            deadline = time.monotonic() + WAIT_S
            while "aggregator running" not in log.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the aggregator did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.05)
            acks = Acks(broker)
            device = MqttTransport(broker.host, broker.port, "attacker", clean_start=True)
            device.connect()
            agg = Aggregator(proc, log, config, store, log_key, device, acks)
            yield agg
            agg.alive()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0, log.read_text()[-3000:]
            assert "draining" in log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for transport in (acks.transport if acks else None, device):
                if transport is not None:
                    transport.close()
            store.close()
            print(f"--- aggregator log (tail) ---\n{log.read_text()[-4000:]}")


def run_steps(agg: Aggregator, steps: list[Step], name: str) -> None:
    """Publish each step and wait for its ack (or, with no ack, for its event)."""
    for i, step in enumerate(steps):
        where = f"{name}, step {i} ({step.kind} on {step.on})"
        seen = len(agg.acks.of(step.on))
        after = agg.last_event_id()
        agg.publish(step.on, step.kind, step.payload)
        if step.status is not None:
            agg.acks.wait(f"the ack of {where}",
                          lambda on=step.on, n=seen: len(agg.acks.by_device.get(on, [])) > n)
            ack = agg.acks.of(step.on)[seen]
            assert ack.status == step.status, (where, ack)
        else:
            deadline = time.monotonic() + WAIT_S
            while not agg.events(step.on, after):
                assert time.monotonic() < deadline, f"no event for {where}"
                agg.alive()
                time.sleep(0.02)


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_each_attack_is_refused_with_its_own_reason(aggregator: Aggregator,
                                                    attack: Attack) -> None:
    agg = aggregator
    dev = ATTACK_DEVICES[attack.name]
    steps = attack.steps(dev)
    start_event, start_size = agg.last_event_id(), agg.store.size()
    touched = sorted({s.on for s in steps})
    acks_before = {d: len(agg.acks.of(d)) for d in touched}

    run_steps(agg, steps, attack.name)

    agg.alive()
    # The log grew by the accepted blocks only.
    assert agg.store.size() - start_size == sum(s.status == "ok" for s in steps)
    # Each refused message was journalled with its own kind, in order, nothing more.
    events = [e for e in agg.store.events(start_event, 10_000) if e.dev in touched]
    assert [e.kind for e in events] == [s.event for s in steps if s.event], events
    for event, step in zip(events, [s for s in steps if s.event], strict=True):
        assert step.note in event.reason, (event, step.note)
    # Each rejected ack's `why` names the event kind (`gap` says it too).
    for d in touched:
        got = agg.acks.of(d)[acks_before[d]:]
        want = [s for s in steps if s.on == d and s.status is not None]
        assert [a.status for a in got] == [s.status for s in want], got
        for ack, step in zip(got, want, strict=True):
            if step.status in ("rejected", "gap"):
                assert step.event is not None and ack.why.startswith(f"{step.event}: "), ack
                assert step.note in ack.why, (ack, step.note)
            if step.status == "dup":
                assert ack.log_index is not None and ack.log_index < agg.store.size()
    if attack.name == "equivocation":
        [evidence] = agg.store.equivocations(dev)
        assert evidence.height == 0 and agg.store.device(dev).flagged_ms is not None


def test_after_every_attack_a_good_device_still_syncs(aggregator: Aggregator) -> None:
    agg = aggregator
    # Every attack again, fired in one burst under fresh ids (not enrolled: still refused).
    for attack in ATTACKS:
        for step in attack.steps(f"{ATTACK_DEVICES[attack.name]}-x"):
            agg.publish(step.on, step.kind, step.payload)
    agg.alive()

    topics = DeviceTopics(GOOD, PREFIX)
    agg.device.publish(topics.hello, Hello(None, None).encode(), timeout=WAIT_S)
    agg.acks.wait("the hello's answer", lambda: len(agg.acks.by_device.get(GOOD, [])) >= 1)
    assert (agg.acks.of(GOOD)[0].status, agg.acks.of(GOOD)[0].next) == ("gap", 0)
    blocks = chain(GOOD, 6)
    for _, message in blocks:
        agg.device.publish(topics.blk, message, timeout=WAIT_S)
    agg.acks.wait("six ok acks", lambda: len(agg.acks.by_device.get(GOOD, [])) >= 7)
    acks = agg.acks.of(GOOD)[1:]
    assert [(a.status, a.next) for a in acks] == [("ok", h + 1) for h in range(6)]
    indexes = [a.log_index for a in acks]
    assert all(i is not None for i in indexes) and indexes == sorted(indexes)
    for (b, _), index in zip(blocks, indexes, strict=True):
        assert index is not None and agg.store.entry(index) == b.cose

    # A signed checkpoint covering them is published, retained, under the log key.
    last = max(i for i in indexes if i is not None)
    agg.acks.wait("a checkpoint covering the good blocks", lambda: any(
        open_checkpoint(n, agg.log_key.verifier()).size > last for n in agg.acks.checkpoints))
    assert agg.acks.errors == []
    agg.alive()
    assert "Traceback" not in agg.log.read_text()


def test_enroll_and_revoke_take_effect_while_the_aggregator_runs(aggregator: Aggregator) -> None:
    """The operator's commands write the store the running process reads, per message."""
    agg, dev = aggregator, "late-gw"
    blocks = chain(dev, 2)
    run_steps(agg, [Step(dev, "blk", blocks[0][1], "rejected", "unknown-device")], "before")
    _cli("enroll", "--config", str(agg.config), dev, key(dev).verifier().text())
    run_steps(agg, [Step(dev, "blk", blocks[0][1], "ok", None)], "enrolled")
    _cli("revoke", "--config", str(agg.config), dev)
    run_steps(agg, [Step(dev, "blk", blocks[1][1], "rejected", "revoked-key")], "revoked")
    assert [h for h, _, _ in agg.store.blocks(dev)] == [0]


def test_every_event_is_logged_on_stderr(aggregator: Aggregator) -> None:
    """Each event the process journals is also one line on its stderr (journald)."""
    agg = aggregator
    start = agg.last_event_id()
    dev = "atk-logged"  # not enrolled
    record = make_rotation(key(dev), dev, key(dev, 1).public_key, NOW).encode()
    run_steps(agg, [*_malformed(dev), *_unknown_device(dev),
                    Step(dev, "rotate", record, None, "rotation-rejected")], "to be logged")
    events = agg.store.events(start, 10_000)
    assert {e.kind for e in events} >= {"malformed", "unknown-device", "rotation-rejected"}
    deadline = time.monotonic() + 2
    missing = events
    while missing and time.monotonic() < deadline:
        lines = agg.log.read_text().splitlines()
        missing = [e for e in events
                   if not any(e.kind in line and str(e.dev) in line for line in lines)]
        time.sleep(0.05)
    assert missing == [], missing
