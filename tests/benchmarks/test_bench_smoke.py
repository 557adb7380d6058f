"""The core benchmark still runs and reports every figure (no timing thresholds)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STATS = ("median_s", "min_s", "max_s", "spread", "per_s", "repeats", "ops_per_repeat")


def _check_stats(stats: dict[str, Any], where: str) -> None:
    for key in STATS:
        assert key in stats, f"{where}: no {key}"
        assert isinstance(stats[key], (int, float)) and math.isfinite(stats[key]), where
    assert stats["median_s"] > 0 and stats["min_s"] <= stats["median_s"] <= stats["max_s"], where
    assert len(stats["runs_s"]) == stats["repeats"] >= 1, where


def _check_ratio(block: dict[str, Any], where: str) -> None:
    assert block["ratio"] > 0 and block["target"] > 0, where
    assert block["met"] == (block["ratio"] <= block["target"]), where


def test_quick_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "core.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.core", "--quick", "--json", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result

    for key in ("cpu", "python", "cbor2", "pynacl"):
        assert result["machine"][key], key
    assert result["quick"] is True

    assert [s["readings"] for s in result["seal"]] == [1, 10, 100]
    for s in result["seal"]:
        where = f"seal {s['readings']}"
        _check_stats(s["seal"], where)
        _check_stats(s["raw"], f"{where} raw")
        for part in ("cbor", "sha256", "sign"):
            _check_stats(s["raw_parts"][part], f"{where} {part}")
        _check_ratio(s, where)

    assert result["verify"]["readings"] == 10
    _check_stats(result["verify"]["verify"], "verify")

    for key in ("memory_hashes", "append_hashes_dict", "append_hashes_list"):
        _check_stats(result["merkle_append"][key], key)

    inclusion = result["inclusion"]
    for tree in ("small", "large"):
        for part in ("proof_and_verify", "proof", "verify"):
            _check_stats(inclusion[tree][part], f"inclusion {tree} {part}")
        assert inclusion[tree]["path_hashes_mean"] > 0
    assert inclusion["small"]["leaves"] == 1_000
    assert inclusion["large"]["leaves"] > inclusion["small"]["leaves"]
    assert inclusion["large"]["build_s"] >= 0 and inclusion["large"]["built_by"]
    _check_ratio(inclusion, "inclusion")
    assert result["targets_met"] == (all(s["met"] for s in result["seal"]) and inclusion["met"])
