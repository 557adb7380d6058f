"""The demo's process handling and directory rules, without the whole system.

A child that fails is reported by name, exit status and the end of its log; a
child outlives neither a clean stop nor a demo killed with SIGKILL; and the demo
refuses to clear a directory it did not make.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeledger.demo import workdir
from edgeledger.demo.processes import Child, DemoError, broker_config, split_address


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_child_that_fails_is_named_with_its_status_and_log(tmp_path: Path) -> None:
    child = Child("aggregator", [sys.executable, "-c", "import sys; print('bad key x.y', "
                                 "file=sys.stderr); sys.exit(78)"], tmp_path / "a.log")
    child.start()
    with pytest.raises(DemoError) as caught:
        child.wait_for("aggregator running", 20)
    text = str(caught.value)
    assert "aggregator exited with 78 (configuration error)" in text
    assert "bad key x.y" in text and str(tmp_path / "a.log") in text


def test_a_child_that_never_gets_ready_times_out_with_its_log(tmp_path: Path) -> None:
    child = Child("slow", [sys.executable, "-c", "import time; print('starting', flush=True); "
                           "time.sleep(30)"], tmp_path / "s.log")
    child.start()
    try:
        with pytest.raises(DemoError, match=r"slow did not log 'ready' within 1 s"):
            child.wait_for("ready", 1)
    finally:
        assert child.stop(5) == -signal.SIGTERM
    assert not child.running


def test_stop_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    child = Child("stubborn", [sys.executable, "-c", "import signal, time; "
                               "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                               "print('up', flush=True); time.sleep(60)"], tmp_path / "x.log")
    child.start()
    child.wait_for("up", 10)
    assert child.stop(0.5) == -signal.SIGKILL


def test_children_die_with_a_killed_demo(tmp_path: Path) -> None:
    """Even SIGKILL of the demo leaves no child behind (PR_SET_PDEATHSIG)."""
    script = ("import sys, time; from pathlib import Path; "
              "from edgeledger.demo.processes import Child; "
              f"c = Child('sleeper', ['sleep', '60'], Path({str(tmp_path / 'c.log')!r})); "
              "c.start(); print(c.pid, flush=True); time.sleep(60)")
    demo = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert demo.stdout is not None
        pid = int(demo.stdout.readline())
        time.sleep(0.5)  # the launcher has exec'd sleep by now
        os.kill(pid, 0)
    finally:
        demo.kill()
        demo.wait()
    assert _gone(pid), f"child {pid} outlived the demo"


def test_the_broker_config_is_loopback_and_anonymous() -> None:
    lines = broker_config(18830).splitlines()
    assert "listener 18830 127.0.0.1" in lines and "allow_anonymous true" in lines


@pytest.mark.parametrize("bad", ["localhost", ":1883", "host:0", "host:65536", "host:x"])
def test_addresses_are_checked(bad: str) -> None:
    with pytest.raises(DemoError, match="expected HOST:PORT"):
        split_address(bad, "--broker")
    assert split_address("[::1]:1883", "--broker") == ("::1", 1883)


def test_prepare_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(DemoError, match="not empty and was not made by the demo"):
        workdir.prepare(tmp_path)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_prepare_clears_what_an_earlier_run_left(tmp_path: Path) -> None:
    root = workdir.prepare(tmp_path / "out")
    (root / "proofs").mkdir()
    (root / "proofs" / "gw-9.json").write_text("{}")
    (root / "gw-9" / "data").mkdir(parents=True)
    (root / "log.key").write_text("old")
    (root / "notes.txt").write_text("the user's own file stays")
    assert workdir.prepare(tmp_path / "out") == root
    assert sorted(p.name for p in root.iterdir()) == [workdir.MARKER, "notes.txt"]
