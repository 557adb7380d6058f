"""`edgeledger demo`: the whole system, networked, on one machine (DESIGN.md section 8).

Its own Mosquitto (unless `--broker`), the real aggregator process, and N gateway
agent processes, each reading a simulated BME280 bridge (framed protocol) and a GPS
(NMEA 0183) through real pseudo-terminals; a live view while it runs; then a clean
stop and, in DIR, the log's verifier key and one verified proof bundle per gateway.

    runner.py     the conductor: start order, the run, the stop order, the summary
    workdir.py    DIR's layout, generated TOML files, keys, enrollment
    processes.py  child processes (broker, aggregator, agents) and their logs
    devices.py    the simulated MCU and GPS writing to pseudo-terminals
    progress.py   the live view, from what the system itself publishes
    bundles.py    log.vkey and the proof bundles (verified before they are written),
                  and the closing summary
"""

from __future__ import annotations

import sys
from typing import TextIO

from edgeledger.demo.runner import Demo, DemoOptions

__all__ = ["DemoOptions", "run_demo"]


def run_demo(opts: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run the demo as `opts` says; the exit status (errors raise EdgeLedgerError)."""
    return Demo(opts, out).run()
