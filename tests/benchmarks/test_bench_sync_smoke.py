"""The sync benchmark still runs and reports every figure (no timing thresholds).

It starts its own Mosquitto (tests need it anyway), the real `edgeledger aggregator`
process and two load generators; the quick mode sends a few hundred blocks a run.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchcheck import check_ratio, check_stats

ROOT = Path(__file__).resolve().parents[2]
LATENCY = ("median_s", "p90_s", "p99_s", "max_s")


def _finite(value: Any, where: str) -> None:
    assert isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, where


def _check_run(run: dict[str, Any], where: str) -> None:
    """One run: every block sent was acked ok, covered by a checkpoint, and measured."""
    assert run["complete"] is True and run["resends"] == 0, (where, run["statuses"])
    assert run["statuses"] == {"ok": run["blocks_sent"]}, (where, run["statuses"])
    assert run["aggregator_exit"] == 0, (where, run["aggregator_log_tail"])
    t = run["throughput"]
    assert t["blocks"] == run["blocks_sent"] > 0 and 0 < t["window_blocks"] <= t["blocks"]
    assert t["blocks_per_s"] > 0, where
    assert math.isclose(t["readings_per_s"], 10 * t["blocks_per_s"]), where
    assert t["cpu_s"]["aggregator"] > 0, where
    for name in ("aggregator", "loadgen0", "broker", "others"):
        _finite(t["cores"][name], f"{where} cores {name}")
    lat = run["latency"]
    assert lat["uncovered_blocks"] == 0, where
    for key in ("block_to_checkpoint", "publish_to_ack"):
        assert lat[key]["count"] == run["blocks_sent"], (where, key)
        assert 0 <= lat[key]["median_s"] <= lat[key]["p99_s"] <= lat[key]["max_s"], (where, key)


def test_quick_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "sync.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.sync", "--quick", "--json", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result

    for key in ("cpu", "python", "cbor2", "pynacl"):
        assert result["machine"][key], key
    assert result["quick"] is True
    assert result["broker"]["ours"] is True
    assert result["method"]["window_per_device"] == 16
    assert result["method"]["readings_per_block"] == 10

    raw = result["raw"]
    for part in ("ed25519_verify", "sha256_reading_leaves", "sha256_inner_nodes",
                 "sha256_block_hash", "sha256_log_append", "total"):
        check_stats(raw[part], f"raw {part}")
    assert raw["hashes_per_block"] == 22 and raw["readings"] == 10

    assert [t["gateways"] for t in result["throughput"]] == [1, 10, 100]
    for t in result["throughput"]:
        where = f"{t['gateways']} gateways"
        check_stats(t["stats"], where)
        check_ratio(t, where)
        assert t["complete"] is True, where
        assert t["blocks_per_s"] == t["stats"]["per_s"], where
        _finite(t["aggregator_cpu_per_block_s"], where)
        assert math.isclose(t["ratio"], t["aggregator_cpu_per_block_s"]
                            / raw["total"]["median_s"]), where
        for key in ("publish_to_ack", "block_to_checkpoint"):
            for q in LATENCY:
                _finite(t["latency"][key][q], f"{where} {key} {q}")
        assert len(t["runs"]) == t["stats"]["repeats"]
        for run in t["runs"]:
            assert run["paced"] is False and run["gateways"] == t["gateways"]
            _check_run(run, where)

    assert [lt["interval_ms"] for lt in result["latency"]] == [1000, 100]
    for lt in result["latency"]:
        where = f"latency at {lt['interval_ms']} ms"
        assert lt["gateways"] == 100 and lt["complete"] is True, where
        for key in ("block_to_checkpoint", "reading_to_checkpoint"):
            for q in LATENCY:
                _finite(lt[key][q], f"{where} {key} {q}")
        # a reading waits in its open block before the seal, so never less than its block
        assert lt["reading_to_checkpoint"]["max_s"] >= lt["block_to_checkpoint"]["max_s"]
        for run in lt["runs"]:
            assert run["paced"] is True and run["interval_ms"] == lt["interval_ms"]
            _check_run(run, where)
            assert run["latency"]["reading_to_checkpoint"]["count"] == 10 * run["blocks_sent"]

    targets = result["targets"]
    assert targets["rate"]["target"] == 3_000 and targets["ratio"]["target"] == 2.0
    assert targets["rate"]["met"] == (targets["rate"]["blocks_per_s"] >= 3_000)
    check_ratio(targets["ratio"], "ratio target")
    assert result["targets_met"] == (targets["rate"]["met"] and targets["ratio"]["met"])
