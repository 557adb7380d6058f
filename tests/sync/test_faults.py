"""Fault injection (issue 6): real agents and a real aggregator over a real Mosquitto, cut.

Each test runs a cluster (tests/sync/cluster.py: three `edgeledger agent` processes
with simulated sensors, one `edgeledger aggregator` process, a broker from
tests/mosquitto.py), injects one kind of fault again and again while blocks stream
(the broker restarted 10 times, with and without persistence; the aggregator
SIGKILLed 20 times; an agent SIGKILLed 20 times; the broker down for 30 s),
and then ends the run the same way: the agents are stopped cleanly and caught up to
their tips (acked and covered = tip), the aggregator is stopped, and `check_cluster`
requires that
- every sealed block of every gateway is in the log exactly once, the same bytes,
  in height order (log index increasing with height), and nothing else is;
- no gateway pruned a block the log does not hold (heights below its first kept
  height are in the store; the heavy profile's 1 MiB journal quota makes retention
  prune while the faults go on);
- the checkpoint chain 0..last is unbroken (each `prev` is the SHA-256 of the note
  text before it) and each consecutive pair is consistent, checked with our
  verifier and with Go's sumdb/tlog (CheckTree, ProveTree, TreeHash over our stored
  hashes) after Go's sumdb/note opened every checkpoint;
- no gateway raised a sync alarm and the aggregator journalled no fault an honest
  cluster cannot cause (equivocation, bad prev, bad signature, ...).

Kill moments are random: the seed is printed at the start of each test (pytest shows
it on failure) and EDGELEDGER_FAULT_SEED=<seed> replays a run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster import COUNTER, HEAVY, Cluster, GatewaySpec, Report, check_cluster
from mosquitto import Mosquitto

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "interop"))
import gosumdb  # tests/interop: the Go sumdbcheck driver

SEED_ENV = "EDGELEDGER_FAULT_SEED"
GATEWAYS = 3
QUOTA = 1 << 20
"""The smallest quota the agent accepts; the heavy profile fills it in about 10 s."""
HEAVY_SPEC = GatewaySpec(sensors=HEAVY, quota_bytes=QUOTA)
LIGHT_SPEC = GatewaySpec(sensors=COUNTER)
SEALED = re.compile(r"sealed block (\d+):")
LOG_SIZE = re.compile(r"\bsize (\d+)")
START_SIZE = re.compile(r"aggregator running: .*?size (\d+)")
MakeCluster = Callable[[GatewaySpec, Mosquitto], Cluster]


@pytest.fixture(scope="module")
def go(tmp_path_factory: pytest.TempPathFactory) -> gosumdb.GoSumdb:
    """tests/interop/go/sumdbcheck.go, built once for this module; fails (never skips)."""
    try:
        return gosumdb.build(tmp_path_factory.mktemp("go-sumdb"))
    except gosumdb.GoUnavailable as exc:
        reason = str(exc)
    pytest.fail(f"the fault tests check checkpoints with Go: {reason}", pytrace=False)


@pytest.fixture
def rng() -> random.Random:
    """Random kill moments, from a printed seed (EDGELEDGER_FAULT_SEED replays it)."""
    seed = int(os.environ.get(SEED_ENV) or random.randrange(1 << 30))
    print(f"fault seed {seed}: replay with {SEED_ENV}={seed}")
    return random.Random(seed)


@pytest.fixture
def make_cluster(tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
                 ) -> Iterator[MakeCluster]:
    """A cluster on a broker; at teardown every process is killed and the tails of their
    logs are printed (pytest shows them when the test failed). It depends on the broker
    fixture only so that it is torn down first."""
    with contextlib.ExitStack() as stack:
        yield lambda spec, broker: stack.enter_context(Cluster(tmp_path, broker, GATEWAYS, spec))


def finish(cluster: Cluster, go: gosumdb.GoSumdb) -> Report:
    """Catch every gateway up to its tip, stop everything, check everything."""
    cluster.drain()
    cluster.stop_aggregator()
    report = check_cluster(cluster, go)
    print(report.summary())
    return report


def last_sealed(text: str) -> int:
    """The height of the last "sealed block N" line in an agent's log (-1 if none)."""
    found = SEALED.findall(text)
    return int(found[-1]) if found else -1


def committed_unlogged(logs: list[Path]) -> int:
    """Runs of the aggregator killed between a COMMIT and the batch's log line: the next
    run started on a larger log than the killed one last logged."""
    count = 0
    for killed, following in itertools.pairwise(logs):
        logged = [int(n) for n in LOG_SIZE.findall(killed.read_text(errors="replace"))]
        started = START_SIZE.search(following.read_text(errors="replace"))
        if logged and started and int(started.group(1)) > logged[-1]:
            count += 1
    return count


@pytest.mark.parametrize("persistence", [False, True], ids=["volatile", "persistent"])
def test_broker_restarted_mid_sync(make_cluster: MakeCluster,
                                   mosquitto_factory: Callable[..., Mosquitto],
                                   persistence: bool, rng: random.Random,
                                   go: gosumdb.GoSumdb) -> None:
    # Volatile: every restart loses sessions, queued messages and the retained checkpoint.
    # Persistent: they survive, so stale acks, proofs and blocks are delivered afterwards.
    mosquitto = mosquitto_factory(persistence=persistence)
    cluster = make_cluster(HEAVY_SPEC, mosquitto)
    cluster.start()
    how = {"SIGTERM": 0, "SIGKILL": 0, "frozen, then SIGKILL": 0}
    for _ in range(10):
        cluster.wait_growth(3, 30)  # blocks are streaming to the aggregator right now
        time.sleep(rng.uniform(0, 0.5))
        mode = rng.choice(list(how))
        how[mode] += 1
        if mode == "frozen, then SIGKILL":  # a hung broker, restarted by its supervisor
            mosquitto.pause()
            time.sleep(rng.uniform(0.3, 1.5))
        mosquitto.restart(hard=mode != "SIGTERM")
    cluster.wait_growth(3 * GATEWAYS, 30)
    report = finish(cluster, go)
    print(f"10 broker restarts {how}")
    assert report.log_size > 100


def test_aggregator_sigkilled_mid_append(make_cluster: MakeCluster, mosquitto: Mosquitto,
                                         rng: random.Random, go: gosumdb.GoSumdb) -> None:
    cluster = make_cluster(HEAVY_SPEC, mosquitto)
    cluster.start()
    aggregator = cluster.aggregator
    moments = {"backlog": 0, "streaming": 0, "start-up": 0}
    for _ in range(20):
        draw = rng.random()
        if draw < 0.5:
            # Frozen for a moment, blocks pile up; thawed, it takes them in one big
            # batch (verify, append, COMMIT, acks): killed inside that batch.
            moments["backlog"] += 1
            cluster.wait_growth(1, 30)
            aggregator.pause()
            time.sleep(rng.uniform(0.3, 1.0))
            aggregator.resume()
            time.sleep(rng.uniform(0, 0.1))
        elif draw < 0.8:  # a random moment while this incarnation takes blocks
            moments["streaming"] += 1
            cluster.wait_growth(1, 30)
            time.sleep(rng.uniform(0, 0.3))
        else:  # while it opens the store, connects, republishes the checkpoint
            moments["start-up"] += 1
            time.sleep(rng.uniform(0.05, 0.5))
        aggregator.kill()
        aggregator.start()
    aggregator.wait_for("aggregator running")
    cluster.wait_growth(3 * GATEWAYS, 30)
    report = finish(cluster, go)
    after_commit = committed_unlogged(aggregator.logs)
    print(f"20 aggregator SIGKILLs {moments}; {after_commit} landed after a batch's COMMIT "
          "and before its log line (its acks possibly unsent)")
    assert aggregator.kills == 20 and report.log_size > 100


def test_agent_sigkilled_and_restarted(make_cluster: MakeCluster, mosquitto: Mosquitto,
                                       rng: random.Random, go: gosumdb.GoSumdb) -> None:
    cluster = make_cluster(HEAVY_SPEC, mosquitto)
    cluster.start()
    for _ in range(20):
        gw = rng.choice(cluster.gateways)
        # Its blocks are arriving (so the kill lands mid-sync), or it is just starting up.
        if rng.random() < 0.8:
            held = cluster.aggregator.next_height(gw.device)
            cluster.wait(f"{gw.device} to sync a block", lambda gw=gw, held=held:
                         cluster.aggregator.next_height(gw.device) > held, 30)
            time.sleep(rng.uniform(0, 1.0))
        else:
            time.sleep(rng.uniform(0.05, 0.6))
        gw.kill()
        gw.start()  # the same data directory: it recovers and resumes from its cursor
    cluster.wait_growth(3 * GATEWAYS, 30)
    # The quota is 1 MiB: ~10 s of the heavy profile. Kills slow a gateway down, so give
    # retention the time it needs (usually none: it has pruned already).
    cluster.wait("retention to prune on some gateway",
                 lambda: any(gw.pruned() for gw in cluster.gateways), 40, poll=0.5)
    report = finish(cluster, go)
    kills = {gw.device: gw.kills for gw in cluster.gateways}
    print(f"agent SIGKILLs {kills}")
    assert sum(kills.values()) == 20 and report.log_size > 100
    assert any(report.pruned.values()), f"retention pruned nothing: {report.summary()}"


def test_broker_down_30s_while_gateways_record(make_cluster: MakeCluster,
                                               mosquitto: Mosquitto,
                                               go: gosumdb.GoSumdb) -> None:
    cluster = make_cluster(LIGHT_SPEC, mosquitto)
    cluster.start()
    cluster.wait_growth(3 * GATEWAYS, 30)
    mosquitto.stop()
    held = {gw.device: cluster.aggregator.next_height(gw.device) for gw in cluster.gateways}
    time.sleep(30)
    for child in cluster.children:
        assert child.running, f"{child.name} died while the broker was down:\n{child.tail()}"
    sealed = {gw.device: last_sealed(gw.text()) for gw in cluster.gateways}
    assert all(sealed[d] >= held[d] + 30 for d in held), \
        f"the gateways did not keep sealing: held {held}, sealed {sealed}"
    mosquitto.start()
    took = cluster.wait("every block sealed during the outage to reach the log", lambda: all(
        cluster.aggregator.next_height(d) > sealed[d] for d in sealed), 60)
    report = finish(cluster, go)
    backlog = {d: sealed[d] + 1 - held[d] for d in held}
    print(f"outage backlog {backlog} blocks, caught up {took:.1f} s after the broker returned")
    assert report.log_size >= sum(backlog.values())
