"""The API benchmark still runs and reports every figure (no timing thresholds).

It builds two small stores (10^3 and 10^4 entries) in a temporary cache, serves them
with the real `edgeledger aggregator` process, checks and times proofs over HTTP, and
runs a few hundred blocks through the SQLite aggregator and the PostgreSQL cluster
with 1 and 2 processes. Needs Mosquitto and PostgreSQL (as tests/aggregator/postgres
does: 127.0.0.1:5432, database `test`, or EDGELEDGER_TEST_PG).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from benchcheck import check_ratio, check_stats

ROOT = Path(__file__).resolve().parents[2]
DSN = os.environ.get("EDGELEDGER_TEST_PG", "host=127.0.0.1 port=5432 dbname=test")


def _finite(value: Any, where: str) -> None:
    assert isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, where


def _check_api(api: dict[str, Any]) -> None:
    assert [s["entries"] for s in api["stores"]] == [1_000, 10_000]
    for s in api["stores"]:
        assert s["cached"] is False and s["build_s"] > 0 and s["devices"] == 100, s
        assert s["built_s"] == s["build_s"], s
    assert api["proofs_verified"] == {"1000": 5, "10000": 5}
    assert api["server_exits"] == [0, 0]
    lat = api["latency"]
    check_ratio(lat, "latency ratio")
    assert lat["target"] == 2.0 and lat["p99_ratio"] > 0
    for size in lat["sizes"]:
        check_stats(size["stats"], f"latency at {size['entries']}")
        assert size["errors"] == 0 and len(size["runs"]) == lat["repeats"]
        assert 0 < size["median_s"] <= size["p90_s"] <= size["p99_s"], size
        _finite(size["others_cores"], "latency others")
        _finite(size["server_cpu_per_proof_s"], "latency server CPU")
        for run in size["runs"]:
            assert run["count"] == lat["requests_per_run"]
    assert math.isclose(lat["ratio"], lat["sizes"][1]["median_s"] / lat["sizes"][0]["median_s"])
    own = api["in_process"]
    assert [s["entries"] for s in own["sizes"]] == [1_000, 10_000] and own["ratio"] > 0
    for size in own["sizes"]:
        check_stats(size["stats"], f"in-process proofs at {size['entries']}")
    tp = api["throughput"]
    check_stats(tp["stats"], "proofs/s")
    assert tp["entries"] == 10_000 and tp["errors"] == 0 and tp["proofs_per_s"] > 0
    assert len(tp["runs"]) == tp["stats"]["repeats"]
    for name in ("server", "clients", "others"):
        _finite(tp["cores"][name], f"throughput cores {name}")
    assert tp["server_cpu_per_proof_s"] > 0
    for run in tp["runs"]:
        assert len(run["per_client"]) == tp["clients"]


def _check_ingest(ing: dict[str, Any]) -> None:
    assert ing["postgres"]["unavailable"] is None, ing["postgres"]
    assert ing["postgres"]["settings"]["fsync"]
    assert [k["kind"] for k in ing["kinds"]] == ["sqlite", "pg1", "pg2"]
    for k in ing["kinds"]:
        where = k["kind"]
        assert k["errors"] == [], (where, k["errors"])
        check_stats(k["stats"], where)
        assert k["complete"] is True and k["blocks_per_s"] == k["stats"]["per_s"], where
        assert len(k["runs"]) == ing["repeats"]
        for run in k["runs"]:
            assert run["statuses"] == {"ok": run["blocks_sent"]}, (where, run["statuses"])
            assert run["exits"] == [0] * k["processes"], (where, run["log_tails"])
            assert run["latency"]["uncovered_blocks"] == 0, where
            assert run["blocks_sent"] == ing["gateways"] * ing["blocks_per_gateway"]
        cpu = k["cpu_per_block_s"]
        for name in ("aggregators", "postgres", "postgres_aux", "store_total"):
            _finite(cpu[name], f"{where} {name}")
        assert cpu["aggregators"] > 0, where
        if k["kind"] != "sqlite":
            assert all(run["processes"]["backends"] >= k["processes"] for run in k["runs"])
    assert set(ing["ratios"]) == {"pg1/sqlite", "pg2/sqlite", "pg2/pg1"}


def test_quick_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.api", "--quick", "--json", "--out", str(out),
         "--cache", str(tmp_path / "cache"), "--pg", DSN],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result
    for key in ("cpu", "python", "cores", "sqlite", "fastapi", "uvicorn", "psycopg"):
        assert result["machine"][key], key
    assert result["quick"] is True
    _check_api(result["api"])
    _check_ingest(result["ingest"])
    assert result["targets"]["latency_ratio"]["met"] == result["api"]["latency"]["met"]
    assert result["targets_met"] == result["api"]["latency"]["met"]
    schemas = [run["schema"] for k in result["ingest"]["kinds"][1:] for run in k["runs"]]
    assert len(schemas) == 4 and all(schemas), schemas
    with psycopg.connect(DSN, autocommit=True) as conn:  # every per-run schema dropped
        left = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)",
                            (schemas,)).fetchall()
    assert left == [], left
