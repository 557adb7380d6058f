"""A gateway whose quota dropped unacked blocks (policy drop-oldest) syncs on past them.

Real processes: the agent records offline with a small quota until it has to drop
its oldest blocks, then the aggregator comes up. The agent forwards the signed DROP
record instead of the dropped blocks; the aggregator keeps it and the chain goes on.
"""

from __future__ import annotations

from pathlib import Path

from cluster import HEAVY, Cluster, GatewaySpec
from mosquitto import Mosquitto

from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.core.droprecord import verify_drop


def test_dropped_blocks_are_accounted_for_and_the_chain_continues(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    spec = GatewaySpec(sensors=HEAVY, quota_bytes=1 << 20, quota_policy="drop-oldest")
    with Cluster(tmp_path, mosquitto, gateways=1, spec=spec) as cluster:
        (gw,) = cluster.gateways
        gw.start_and_wait()  # the aggregator is down: nothing is acked, the quota fills
        cluster.wait("a drop under the quota", lambda: "DROPPED blocks" in gw.text(), 60)
        cluster.aggregator.start_and_wait()
        cluster.wait("the agent to forward its DROP record",
                     lambda: "forwarding the signed DROP record" in gw.text(), 30)
        cluster.wait_growth(20, 30)  # and blocks after the dropped ones go on arriving
        tips = cluster.drain()
        cluster.stop_aggregator()
        store = SqliteStore(cluster.aggregator.workdir / "aggregator.db")
        try:
            drops = store.drops(gw.device)
            heights = [h for h, _, _ in store.blocks(gw.device)]
            device = store.device(gw.device)
            events = [e.kind for e in store.events(0, 100_000)]
        finally:
            store.close()
    assert drops, "no DROP record reached the store"
    dropped: set[int] = set()
    for h0, h1, record in drops:
        verify_drop(record, gw.signer.public_key)
        dropped.update(range(h0, h1 + 1))
    tip = tips[gw.device]
    assert tip is not None and device is not None and device.next_height == tip + 1
    # Every height is in the log exactly once or accounted for by a signed DROP record.
    assert sorted(set(heights) | dropped) == list(range(tip + 1))
    assert len(heights) == len(set(heights))
    assert "dropped" in events and "bad-prev" not in events and "rejected" not in events
    assert gw.sync_doc().get("acked") == tip
    assert not any("sync alarm" in line for line in gw.lines("ERROR")), gw.tail()
