"""Shared helpers for the gateway ledger tests: a fixed device key, readings that
number themselves, a ledger built to a given shape, and a walk over everything kept.

Everything is deterministic (fixed seed, fixed times) so a failure reproduces.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from edgeledger.core.block import verify_readings
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.journal import FileOps
from edgeledger.gateway.ledger import Ledger
from edgeledger.gateway.logverify import run_log_verify
from edgeledger.keyfile import write_signer

DEVICE = "gw-test-1"
T0 = 1_700_000_000_000
SENSORS = ("env-1", "meter-2")
# This module as imported: by the time a fixture runs, sys.modules["conftest"] is
# whichever conftest.py pytest imported last (tests/sources has one too).
_THIS = sys.modules[__name__]


def device_signer() -> Signer:
    """The test device's key, the same every run."""
    return Signer(DEVICE, hashlib.sha256(b"edgeledger gateway tests").digest())


@pytest.fixture(scope="session")
def gw() -> ModuleType:
    """These helpers, as one namespace (tests take it as a fixture rather than
    importing `conftest`, which tests/core has too)."""
    return _THIS


def new_data_dir(path: Path) -> Path:
    """A data dir holding the device key, as the agent leaves it on first start."""
    write_signer(path / "device.key", device_signer())
    return path


def reading(sensor: str, q: int) -> Reading:
    """A reading whose value and time follow from its sequence number."""
    return Reading(f"{sensor}/count", T0 + q, q, q * 3 + 1)


def open_ledger(data_dir: Path, segment_bytes: int = 4 << 20,
                ops: FileOps | None = None) -> Ledger:
    """A recovered ledger over `data_dir`."""
    ledger = Ledger(data_dir, device_signer(), segment_bytes, ops)
    ledger.recover()
    return ledger


def fill(ledger: Ledger, blocks: int, per_block: int, open_readings: int = 0) -> None:
    """Add `per_block` readings per block (alternating sensors), seal `blocks` blocks,
    then add `open_readings` more, syncing after every block."""
    for _ in range(blocks):
        add(ledger, per_block)
        ledger.seal(T0 + 10_000_000 + (ledger.tip or 0))
        ledger.sync()
    add(ledger, open_readings)
    ledger.sync()


def add(ledger: Ledger, count: int) -> None:
    """Add `count` readings, alternating between the test sensors."""
    for i in range(count):
        sensor = SENSORS[(sum(ledger.last_q.values()) + i) % len(SENSORS)]
        ledger.add(reading(sensor, ledger.next_q(sensor)))


def everything(ledger: Ledger) -> tuple[list[bytes], list[bytes]]:
    """The readings of every kept block (each checked against its block) and the open ones."""
    sealed: list[bytes] = []
    for h in range(ledger.tip + 1 if ledger.tip is not None else 0):
        block, raws = ledger.block(h)
        assert block.header.h == h
        verify_readings(block, raws)
        sealed += raws
    return sealed, [r.raw for r in ledger.open]


def log_verify(data_dir: Path) -> tuple[int, str]:
    """Run `edgeledger log verify` in-process: (exit status, printed line)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_log_verify(data_dir)
    return status, out.getvalue().strip()


def copy_dir(src: Path, dst: Path) -> Path:
    """A copy of a data dir (a fresh case for a destructive test)."""
    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[[Path, Path], tuple[subprocess.Popen[bytes],
                                                                     Path]]]:
    """Start agent processes (killed at the end if still running)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(config: Path, data_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"agent-{len(procs)}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG"))}
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgeledger.cli", "agent", "--config", str(config),
                 "--data-dir", str(data_dir), "--log-level", "debug"],
                stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=tmp_path)
        procs.append(proc)
        return proc, log

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
