"""The sources benchmark still runs and reports every figure (no timing thresholds)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pymodbus")
pytest.importorskip("pynmeagps")

from benchcheck import check_stats

ROOT = Path(__file__).resolve().parents[2]
DECODERS = ("framed", "nmea", "nmea_capture", "lines_csv", "lines_json", "lines_kv", "modbus")
SOURCES = ("framed", "nmea", "lines", "modbus")


def test_quick_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "sources.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.sources", "--quick", "--json", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result

    for key in ("cpu", "python", "pyserial", "pymodbus", "pynmeagps"):
        assert result["machine"][key], key
    assert result["quick"] is True
    assert result["method"]["readings_per_s"] == 100

    assert tuple(result["decode"]) == DECODERS
    for name, d in result["decode"].items():
        check_stats(d["stats"], f"decode {name}")
        check_stats(d["to_reading"], f"{name} Sample -> Reading")
        assert d["stats"]["ops_per_repeat"] == d["frames_per_run"] > 0, name
        assert d["readings_per_frame"] > 0 and d["bytes_per_frame"] > 0, name
    check_stats(result["decode"]["modbus"]["decode_reply_only"], "decode_reply")
    assert result["decode"]["modbus"]["readings_per_frame"] == 10

    assert tuple(result["cpu_share"]) == SOURCES
    for name, c in result["cpu_share"].items():
        for key in ("cpu_share", "min", "max", "spread", "other_threads_share",
                    "cpu_per_reading_s"):
            assert isinstance(c[key], float) and math.isfinite(c[key]), (name, key)
        assert 0 < c["min"] <= c["cpu_share"] <= c["max"], name
        assert len(c["runs"]) == c["repeats"] == len(c["received"]) == len(c["expected"]) >= 1
        for run in c["runs"]:
            assert run["wall_s"] > 0 and run["cpu_s"] > 0 and run["polls"] > 0, name
        assert c["all_received"] is True, (name, c["received"], c["expected"], c["runs"])
