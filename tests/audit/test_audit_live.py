"""`edgeledger audit` against the real API over a real, growing log: what passes, what
a second run checks, key rotation, the state file, unreachable APIs and usage errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from auditfleet import LOG_KEY, Live, LiveLog, serve
from auditproxy import tampered

from edgeledger.cli import main
from edgeledger.core import b64
from edgeledger.core.checkpoint import Checkpoint
from edgeledger.core.note import Signer

VKEY = LOG_KEY.verifier().text()


def saved_height(state: Path) -> int:
    height: int = json.loads(state.read_text())["height"]
    return height


def test_a_first_run_checks_everything_and_saves_the_latest(shared: Live,
                                                            tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    status, out = shared.audit("gw-1", "gw-2", state=state)
    assert status == 0, out
    assert out.startswith("OK: log audit.test/agg-1 checkpoints 0..3 consistent (size 16); "
                          "device gw-1 blocks 0..8 verified (1 after the latest checkpoint, "
                          "not yet provable); device gw-2 blocks 0..8 verified"), out
    assert out.count("\n") == 1
    saved = json.loads(state.read_text())
    assert (saved["height"], saved["size"], saved["checkpoint"]) == (3, 16, shared.log.notes[3])
    assert saved["verifier_key"] == VKEY and saved["origin"] == "audit.test/agg-1"
    assert oct(state.stat().st_mode & 0o777) == "0o600"


def test_a_second_run_checks_only_new_checkpoints(fresh: Live) -> None:
    state = fresh.tmp / "state.json"
    fresh.log.grow(4)
    assert fresh.audit(state=state)[0] == 0
    assert saved_height(state) == 3
    fresh.log.grow(3)
    sizes = [Checkpoint.parse(n[:n.rfind("\n\n") + 1]).size for n in fresh.log.notes]
    with tampered(fresh.url) as proxy:
        status, out = fresh.audit(url=proxy.url, state=state)
    assert status == 0, out
    assert out.startswith(f"OK: log audit.test/agg-1 checkpoints 3..6 consistent (size "
                          f"{sizes[6]}), extending the saved checkpoint 3 ["), out
    assert proxy.requested == [
        "/v1/log", "/v1/checkpoint", "/v1/checkpoints/3",
        "/v1/checkpoints/4", f"/v1/consistency?from={sizes[3]}&to={sizes[4]}",
        "/v1/checkpoints/5", f"/v1/consistency?from={sizes[4]}&to={sizes[5]}",
        f"/v1/consistency?from={sizes[5]}&to={sizes[6]}",
        f"/v1/consistency?from={sizes[3]}&to={sizes[6]}"]
    assert saved_height(state) == 6
    with tampered(fresh.url) as proxy:
        status, out = fresh.audit(url=proxy.url, state=state)
    assert status == 0 and "checkpoints 6..6 consistent" in out, out
    assert "unchanged since the saved checkpoint 6" in out
    assert proxy.requested == ["/v1/log", "/v1/checkpoint"]


def test_a_log_without_checkpoints(fresh: Live) -> None:
    state = fresh.tmp / "state.json"
    status, out = fresh.audit("gw-1", state=state)
    assert (status, out.split(" [")[0]) == (0, "OK: log audit.test/agg-1 has no checkpoint "
                                               "yet; device gw-1 has no blocks"), out
    fresh.log.grow(2, checkpoint_every=99)
    status, out = fresh.audit("gw-1", state=state)
    assert status == 0 and "device gw-1 blocks 0..1 verified (2 after the latest" in out, out
    assert not state.exists()


def test_blocks_proven_against_a_newer_checkpoint_extend_the_walk(fresh: Live) -> None:
    """The API's latest moved on between /v1/checkpoint and the blocks' proofs."""
    fresh.log.grow(2)
    stale = fresh.log.notes[-1]
    cp = Checkpoint.parse(stale[:stale.rfind("\n\n") + 1])
    fresh.log.grow(3)
    rules = {"/v1/checkpoint": lambda b: {**b, "note": stale, "height": cp.height,
                                          "size": cp.size, "root": b64.encode(cp.root)}}
    state = fresh.tmp / "state.json"
    with tampered(fresh.url, rules) as proxy:
        status, out = fresh.audit("gw-2", url=proxy.url, state=state)
    assert status == 0, out
    assert "checkpoints 0..4 consistent" in out and "blocks 0..4 verified" in out, out
    assert "/v1/checkpoints/2" in proxy.requested
    assert saved_height(state) == 4


def test_a_log_whose_first_checkpoint_appears_during_the_run(fresh: Live) -> None:
    fresh.log.grow(3)
    gone = (404, {"error": "not-found", "parameter": None, "reason": "none yet"})
    state = fresh.tmp / "state.json"
    with tampered(fresh.url, {"/v1/checkpoint": gone}) as proxy:
        status, out = fresh.audit("gw-1", url=proxy.url, state=state)
    assert status == 0, out
    assert "checkpoints 0..2 consistent" in out and "gw-1 blocks 0..2 verified [" in out, out
    assert saved_height(state) == 2


def test_blocks_before_a_key_rotation_are_checked_with_the_key_of_their_time(
        fresh: Live) -> None:
    fresh.log.grow(3)
    fresh.log.rotate("gw-1")
    fresh.log.grow(2)
    state = fresh.tmp / "state.json"
    status, out = fresh.audit("gw-2", "gw-1", state=state)
    assert status == 0, out
    assert out.startswith("OK: ") and "gw-1" in out
    assert state.exists()


def test_all_devices_are_listed_page_by_page(tmp_path: Path) -> None:
    log = LiveLog(tmp_path / "agg.db", devices=("a-1", "a-2", "a-3", "a-4", "a-5"))
    log.grow(3)
    log.ingest.revoke("a-2", log.now)
    with serve(log.path) as url:
        live = Live(log, url, tmp_path)
        status, out = live.audit(all_devices=True, state=tmp_path / "s.json")
        assert status == 0, out
        assert "checkpoints 0..2 consistent (size 15); 5 devices, 15 blocks verified [" in out
        status, out = live.audit("a-2", state=tmp_path / "s.json")
        assert "device a-2 (revoked) blocks 0..2 verified" in out, out
    log.close()


def test_an_unknown_device_is_a_fault(shared: Live, tmp_path: Path) -> None:
    status, out = shared.audit("gw-9", state=tmp_path / "s.json")
    assert status == 1 and out.startswith("FAILED device: the API has no device gw-9"), out


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_an_unreachable_api_is_named(shared: Live, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    status, out = shared.audit(url=url, state=tmp_path / "s.json")
    assert status == 3
    assert out.startswith(f"ERROR api: cannot reach the API at {url}/v1/log: "), out
    assert "refused" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--api", "ftp://x", "--log-key", VKEY], "--api 'ftp://x': expected http://"),
    (["--api", "http://h:99999", "--log-key", VKEY], "--api 'http://h:99999': Port out of"),
    (["--api", "http://h", "--log-key", "nonsense+key"], "--log-key: verifier key"),
    (["--api", "http://h", "--log-key", "/no/such/file"], "is neither a verifier key"),
    (["--api", "http://h", "--log-key", VKEY, "--device", "GW_1"], "--device 'GW_1': not"),
    (["--api", "http://h", "--log-key", VKEY, "--timeout", "0"], "--timeout 0.0: must be"),
])
def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             args: list[str], message: str) -> None:
    assert main(["audit", *args, "--state", str(tmp_path / "s.json")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err, captured.err


def test_a_state_file_of_another_log_or_corrupt_is_refused(shared: Live,
                                                           tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    other = Signer("audit.test/agg-1", b"o" * 32)
    status, out = shared.audit(state=state, key=other.verifier().text())
    assert status == 1 and out.startswith("FAILED log key: "), out
    assert shared.audit(state=state)[0] == 0
    status, out = shared.audit(state=state, key=other.verifier().text())
    assert status == 2 and f"{state}: verifier_key: the state is of log key" in out, out
    state.write_text("{")
    status, out = shared.audit(state=state)
    assert status == 2 and "not an audit state file" in out and "remove the file" in out


def test_the_command_line_and_the_default_state_path(shared: Live, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path), "CI": "true"}
    key_file = tmp_path / "log.vkey"
    key_file.write_text(VKEY + "\n")
    run = subprocess.run([sys.executable, "-m", "edgeledger", "audit", "--api", shared.url,
                          "--log-key", str(key_file), "--device", "gw-1"],
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("OK: log audit.test/agg-1 checkpoints 0..3 consistent")
    assert "\r" not in run.stderr
    assert (tmp_path / "edgeledger" / "audit-audit.test_agg-1.json").exists()
