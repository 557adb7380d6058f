"""Measure `edgeledger audit` at scale (not a test: run it by hand).

    .venv/bin/python tests/audit/bench_audit.py [N]

Builds a log of one device with N blocks and a checkpoint after each (N checkpoints),
serves it with the real API, and times: a first run (all N checkpoints), the device's
N blocks, and a second run after 100 more checkpoints.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from auditfleet import LOG_KEY, LiveLog, serve

from edgeledger.audit import AuditOptions, run_audit


def timed(url: str, state: Path, *devices: str) -> str:
    out = io.StringIO()
    start = time.perf_counter()
    status = run_audit(AuditOptions(url, LOG_KEY.verifier().text(), state, devices), out,
                       io.StringIO(), environ={})
    assert status == 0, out.getvalue()
    return f"{time.perf_counter() - start:6.1f} s  {out.getvalue().strip()[:150]}"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        log = LiveLog(Path(tmp) / "agg.db", devices=("gw-1",))
        start = time.perf_counter()
        log.grow(n)
        print(f"built {n} blocks and checkpoints in {time.perf_counter() - start:.1f} s")
        with serve(log.path) as url:
            state = Path(tmp) / "state.json"
            print("first run, checkpoints only:", timed(url, state))
            print("blocks of gw-1 (chain unchanged):", timed(url, state, "gw-1"))
            log.grow(100)
            print("second run after 100 more:", timed(url, state))
        log.close()


if __name__ == "__main__":
    main()
