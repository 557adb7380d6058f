"""The gateway benchmark still runs and reports every figure (no timing thresholds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchcheck import check_ratio, check_stats

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "gateway.json"
    before = set((ROOT / "benchmarks" / "results").glob("gateway-bench-*"))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gateway", "--quick", "--json", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result
    assert set((ROOT / "benchmarks" / "results").glob("gateway-bench-*")) == before, \
        "the benchmark left its ledgers behind"

    for key in ("cpu", "python"):
        assert result["machine"][key], key
    for key in ("mount", "type", "device", "options"):
        assert result["filesystem"][key], key
    assert result["quick"] is True

    t = result["throughput"]
    for mode in ("group_commit", "fsync_per_reading"):
        check_stats(t[mode]["stats"], mode)
        assert t[mode]["readings_per_run"] > 0 and t[mode]["seal_every"] == 100, mode
        runs = t[mode]["stats"]["repeats"]
        for key in ("syncs_per_run", "fsyncs_per_run", "bytes_per_run"):
            assert len(t[mode][key]) == runs and min(t[mode][key]) > 0, (mode, key)
    assert t["group_commit"]["window_s"] == 1.0
    assert t["fsync_per_reading"]["syncs_per_run"][0] == t["fsync_per_reading"][
        "readings_per_run"]
    assert t["speedup"] > 0 and t["target_per_s"] == 20_000
    assert t["met"] == (t["group_commit"]["stats"]["per_s"] >= t["target_per_s"])

    big = result["big_log"]
    assert big["blocks"] > 0 and big["bytes"] > 0 and big["build_s"] >= 0 and big["built_by"]
    assert big["verified"]["tip"] == big["blocks"] - 1
    assert all(big["verified"][k] is True for k in ("recovered", "block_tip_read_back",
                                                    "signature_ok", "merkle_root_ok",
                                                    "prev_links_ok"))

    a = result["append"]
    assert a["small"]["height"] == 10 and a["big"]["height"] == big["blocks"]
    for key in ("small", "big"):
        check_stats(a[key]["stats"], f"append {key}")
        assert a[key]["stats"]["ops_per_repeat"] == a["blocks_per_run"]
    check_ratio(a, "append")
    assert a["met"] == (a["ratio"] <= a["target"])

    rec = result["recovery"]
    sizes = [row["blocks"] for row in rec["sizes"]]
    assert len(sizes) >= 3 and sizes == sorted(sizes) and sizes[-1] == big["blocks"]
    for row in rec["sizes"]:
        for cache in ("warm", "cold"):
            check_stats(row[cache], f"recovery {row['blocks']} {cache}")
        assert row["segments"] >= 1 and row["newest_segment_bytes"] > 0 and row["log_bytes"] > 0
    check_ratio(rec, "recovery")
    assert rec["cold_ratio"] > 0
    assert rec["met"] == (rec["ratio"] <= rec["target"] and rec["cold_ratio"] <= rec["target"])

    assert result["targets_met"] == (t["met"] and a["met"] and rec["met"])
