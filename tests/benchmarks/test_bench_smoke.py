"""The core benchmark still runs and reports every figure (no timing thresholds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchcheck import check_ratio, check_stats

ROOT = Path(__file__).resolve().parents[2]


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
        check_stats(s["seal"], where)
        check_stats(s["raw"], f"{where} raw")
        for part in ("cbor", "sha256", "sign"):
            check_stats(s["raw_parts"][part], f"{where} {part}")
        check_ratio(s, where)

    assert result["verify"]["readings"] == 10
    check_stats(result["verify"]["verify"], "verify")

    for key in ("memory_hashes", "append_hashes_dict", "append_hashes_list"):
        check_stats(result["merkle_append"][key], key)

    inclusion = result["inclusion"]
    for tree in ("small", "large"):
        for part in ("proof_and_verify", "proof", "verify"):
            check_stats(inclusion[tree][part], f"inclusion {tree} {part}")
        assert inclusion[tree]["path_hashes_mean"] > 0
    assert inclusion["small"]["leaves"] == 1_000
    assert inclusion["large"]["leaves"] > inclusion["small"]["leaves"]
    assert inclusion["large"]["build_s"] >= 0 and inclusion["large"]["built_by"]
    check_ratio(inclusion, "inclusion")
    assert result["targets_met"] == (all(s["met"] for s in result["seal"]) and inclusion["met"])
