"""The agent's TinyDB state: typed documents, written atomically."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgeledger.gateway.state import (
    MAX_CLOCK_FLAGS,
    CheckpointCursor,
    IdentityRecord,
    State,
    StateError,
)


def test_documents_round_trip_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = State(path)
    assert state.identity is None and state.acked is None and state.covered is None
    state.set_identity(IdentityRecord("gw-1", "cHVi", 123))
    state.acked = 7
    state.set_checkpoint("origin\n10\nroot\n", 6)
    state.set_setting("mode", {"a": 1})
    state.flag_clock("jump", "jumped", 99)
    assert state.bump("starts") == 1
    assert state.bump("starts", 2) == 3
    state.close()

    again = State(path)
    assert again.identity == IdentityRecord("gw-1", "cHVi", 123)
    assert again.acked == 7
    assert again.checkpoint == CheckpointCursor("origin\n10\nroot\n", 6)
    assert again.covered == 6
    assert again.setting("mode") == {"a": 1} and again.setting("none", 5) == 5
    assert [(f.kind, f.wall_ms) for f in again.clock_flags()] == [("jump", 99)]
    assert again.counters() == {"starts": 3, "clock_flags": 1}
    assert again.counter("never") == 0
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_clock_flags_keep_the_newest(tmp_path: Path) -> None:
    state = State(tmp_path / "state.json")
    for i in range(MAX_CLOCK_FLAGS + 5):
        state.flag_clock("backwards", f"flag {i}", i)
    flags = state.clock_flags()
    assert len(flags) == MAX_CLOCK_FLAGS
    assert flags[0].wall_ms == 5 and flags[-1].wall_ms == MAX_CLOCK_FLAGS + 4
    assert state.counter("clock_flags") == MAX_CLOCK_FLAGS + 5


def test_the_file_is_plain_json_with_the_cursor_where_log_verify_reads_it(
        tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = State(path)
    state.acked = 4
    data = json.loads(path.read_text())
    assert data["sync"]["1"]["acked"] == 4


CRASH = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from edgeledger.gateway.state import State
    state = State(Path(sys.argv[1]))
    os.replace = lambda *a, **k: os._exit(9)   # power cut after the temp file, before rename
    state.acked = 6
""")


def test_a_crash_before_the_rename_leaves_the_old_state(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = State(path)
    state.acked = 5
    state.bump("starts")
    state.close()
    before = path.read_bytes()
    run = subprocess.run([sys.executable, "-c", CRASH, str(path)], check=False)
    assert run.returncode == 9
    assert path.read_bytes() == before
    assert (tmp_path / "state.json.tmp").exists()  # the new state was written, not renamed
    again = State(path)
    assert again.acked == 5 and again.counter("starts") == 1
    assert not (tmp_path / "state.json.tmp").exists()
    again.acked = 6
    assert State(path).acked == 6


def test_a_failed_write_raises_and_keeps_the_old_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    state = State(path)
    state.acked = 1

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", full)
    with pytest.raises(OSError):
        state.acked = 2
    monkeypatch.undo()
    assert State(path).acked == 1


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_corrupt_state_file_is_named(tmp_path: Path, text: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(StateError, match=str(path)):
        State(path).acked  # noqa: B018
