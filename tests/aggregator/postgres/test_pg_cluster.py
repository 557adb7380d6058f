"""Aggregator processes on PostgreSQL under load and under faults (see pgcluster.py).

Each test streams blocks from simulated devices (the real DeviceSync over MQTT,
with a window and a resend timer) into `edgeledger aggregator` processes sharing
one schema, does something violent to them, then drains and checks that every
block is in the log exactly once with the hashes the devices sent, and that the
checkpoint chain is one consistent chain (Go's sumdb checks it too in the kill
test). Takeover times are measured from the SIGKILL/SIGSTOP to the new term's
start as the new sequencer recorded it, and printed (pytest -s shows them).
"""

from __future__ import annotations

import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from mosquitto import Mosquitto, free_port
from pgcluster import (
    ORIGIN,
    AggProcess,
    SimDevice,
    check_run,
    drain,
    terms,
    write_config,
)

from edgeledger import clock
from edgeledger.aggregator.store.postgres import PostgresStore
from edgeledger.core.note import Signer
from edgeledger.keyfile import write_signer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "interop"))
import gosumdb  # tests/interop: the Go sumdbcheck driver


@pytest.fixture(scope="module")
def go(tmp_path_factory: pytest.TempPathFactory) -> gosumdb.GoSumdb:
    """Go's sumdb/note and sumdb/tlog (tests/interop/gosumdb.py), built once."""
    try:
        return gosumdb.build(tmp_path_factory.mktemp("go-sumdb"))
    except gosumdb.GoUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@dataclass
class Env:
    """One test's cluster: config, processes, devices, and a store to look with."""

    tmp: Path
    broker: Mosquitto
    store: PostgresStore
    log_key: Signer
    make_config: Callable[..., Path]
    procs: list[AggProcess] = field(default_factory=list)
    devices: list[SimDevice] = field(default_factory=list)

    def start(self, config: Path) -> AggProcess:
        proc = AggProcess(config, f"agg-{len(self.procs)}").start()
        self.procs.append(proc)
        return proc

    def stream(self, count: int, rate_hz: float) -> None:
        for i in range(count):
            device = SimDevice(f"gw-{i}", self.broker, self.log_key, rate_hz)
            self.store.enroll(device.dev, device.signer.public_key, clock.wall_ms())
            self.devices.append(device)
        for device in self.devices:
            device.start()

    def sequencer(self, after_term: int = 0, timeout: float = 20.0) -> tuple[int, AggProcess,
                                                                                int]:
        """(term, process, since_ms) of the first term after `after_term`."""
        deadline = time.monotonic() + timeout
        while True:
            later = [t for t in terms(self.store) if t[0] > after_term]
            if later:
                term, pid, since = later[0]
                return term, next(p for p in self.procs if p.pid == pid), since
            assert time.monotonic() < deadline, "no sequencer elected"
            time.sleep(0.02)

    def finish(self) -> None:
        """Drain the devices, then stop every live process cleanly (exit 0)."""
        drain(self.devices)
        for proc in self.procs:
            if proc.alive():
                assert proc.terminate() == 0, proc.stderr()[-3000:]

    def diagnostics(self) -> str:
        return "\n".join(f"--- {p.err_path.name} ---\n{p.stderr()[-2500:]}" for p in self.procs)


@pytest.fixture
def env(tmp_path: Path, pg_dsn: str, pg_schema: str, mosquitto: Mosquitto) -> Iterator[Env]:
    log_key = Signer.generate(ORIGIN)
    write_signer(tmp_path / "log.key", log_key)
    store = PostgresStore(pg_dsn, pg_schema)

    def make_config(**options: int) -> Path:
        return write_config(tmp_path / "agg.toml", mosquitto, pg_dsn, pg_schema,
                            tmp_path / "log.key", **options)
    e = Env(tmp_path, mosquitto, store, log_key, make_config)
    yield e
    for device in e.devices:
        device.stop.set()
    for proc in e.procs:
        proc.kill()
    print(e.diagnostics())
    store.close()


def _queued(proc: AggProcess) -> int:
    found = re.findall(r"\((\d+) queued, \d+ answered", proc.stderr())
    return sum(map(int, found))


def test_two_workers_and_a_sequencer_under_load(env: Env) -> None:
    port = free_port()
    config = env.make_config(http_port=port)
    procs = [env.start(config), env.start(config)]
    for proc in procs:
        proc.wait_for("aggregator running")
    env.sequencer()
    env.stream(6, rate_hz=20)
    time.sleep(6)
    assert len(terms(env.store)) == 1
    drain(env.devices)
    api = httpx.get(f"http://127.0.0.1:{port}/v1/log", timeout=10).json()
    assert api["size"] == env.store.size() and api["origin"] == ORIGIN
    served = [p for p in procs if "HTTP API listening" in p.stderr()]
    assert len(served) == 1, "one process serves the API, the other finds the port taken"
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert f"edgeledger_log_entries {float(env.store.size())}" in metrics
    env.finish()
    report = check_run(env.store, env.devices, env.log_key)
    assert report.size >= 6 * 20 * 5 and report.checkpoints >= 5
    assert all(_queued(p) > report.size // 10 for p in procs), "a worker did no work"
    print(f"under load: {report.size} blocks, {report.checkpoints} checkpoints")


def test_the_sequencer_killed_ten_times_while_devices_stream(env: Env,
                                                             go: gosumdb.GoSumdb) -> None:
    config = env.make_config()
    for _ in range(3):
        env.start(config).wait_for("aggregator running")
    term, current, _ = env.sequencer()
    env.stream(4, rate_hz=20)
    takeovers = []
    for _ in range(10):
        time.sleep(0.8)
        killed_at = clock.wall_ms()
        current.kill()
        env.start(config)  # the fleet keeps its size; the newcomer may win the election
        term, current, since = env.sequencer(term)
        takeovers.append(since - killed_at)
    assert len(terms(env.store)) == 11  # (stopping at the end hands the role on again)
    time.sleep(1)
    env.finish()
    report = check_run(env.store, env.devices, env.log_key, go)
    assert max(takeovers) < 3000, takeovers
    print(f"sequencer SIGKILL takeover ms: {takeovers}; {report.size} blocks, "
          f"{report.checkpoints} checkpoints, {report.go_cases} Go cases")


def test_a_worker_killed_mid_batch_loses_nothing(env: Env) -> None:
    config = env.make_config()
    sequencer = env.start(config)
    sequencer.wait_for("aggregator running")
    _, elected, _ = env.sequencer()
    assert elected is sequencer
    worker = env.start(config)
    worker.wait_for("aggregator running")
    env.stream(4, rate_hz=25)
    for delay in (0.0, 0.01, 0.03):
        time.sleep(1.2)
        worker.signal(signal.SIGSTOP)  # its share of the messages piles up in its socket
        time.sleep(0.4)
        worker.signal(signal.SIGCONT)  # ... it takes them as one batch ...
        time.sleep(delay)
        worker.kill()  # ... and dies in the middle of it
        worker = env.start(config)
    time.sleep(1)
    assert len(terms(env.store)) == 1, "a worker's death moved the sequencer"
    env.finish()
    check_run(env.store, env.devices, env.log_key)


def test_a_frozen_sequencer_is_replaced_and_cannot_append_when_it_thaws(env: Env) -> None:
    config = env.make_config(failover_ms=2000, poll_ms=100)
    first = env.start(config)
    first.wait_for("aggregator running")
    term, elected, _ = env.sequencer()
    assert elected is first
    env.start(config).wait_for("aggregator running")
    env.stream(3, rate_hz=20)
    time.sleep(1)
    frozen_at = clock.wall_ms()
    first.signal(signal.SIGSTOP)
    _, successor, since = env.sequencer(term)
    assert successor is not first
    time.sleep(1.5)
    first.signal(signal.SIGCONT)
    first.wait_for("stepping down", timeout=10)
    time.sleep(1)
    env.finish()
    check_run(env.store, env.devices, env.log_key)
    print(f"frozen sequencer (failover_ms 2000) takeover ms: {since - frozen_at}")
    assert since - frozen_at < 4000


def test_a_store_that_goes_back_under_a_running_process_is_not_signed_again(
        env: Env, pg_dsn: str, pg_schema: str) -> None:
    """A dropped schema is not re-created by a running process, and a store restored to
    an older state (here: made empty again) is not led by a process that saw more: either
    would let it sign a second chain with the same log key."""
    proc = env.start(env.make_config())
    proc.wait_for("aggregator running")
    env.sequencer()
    env.stream(1, rate_hz=20)
    deadline = time.monotonic() + 20
    while (env.store.last_checkpoint() or "\n0\n").split("\n")[1] in ("0", "1") and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    for device in env.devices:
        device.stop.set()
    env.store.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{pg_schema}" CASCADE')
    proc.wait_for("holds no current EdgeLedger store", timeout=20)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        gone = conn.execute("SELECT count(*) FROM information_schema.schemata WHERE "
                            "schema_name = %s", (pg_schema,)).fetchone()
    assert gone == (0,), "the running process re-created the dropped schema"
    env.store = PostgresStore(pg_dsn, pg_schema)  # an empty store: a restore gone wrong
    proc.wait_for("refusing to sign a second chain", timeout=30)
    assert env.store.last_checkpoint() is None
    assert proc.alive()
