"""The command line as a user runs it: exit codes and what it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mosquitto import free_port

from edgeledger.cli import main
from edgeledger.keyfile import load_signer

PROGRAM = Path(sys.executable).with_name("edgeledger")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `edgeledger` program."""
    return subprocess.run([str(PROGRAM), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_keygen_writes_a_0600_key_and_prints_the_public_key(tmp_path: Path) -> None:
    out = tmp_path / "greenhouse-7.key"
    result = run("keygen", "--out", str(out))
    assert result.returncode == 0, result.stderr
    signer = load_signer(out)
    assert signer.name == "greenhouse-7"
    assert signer.verifier().text() in result.stdout
    assert out.stat().st_mode & 0o777 == 0o600


def test_keygen_refuses_to_overwrite_and_says_which_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k.key"
    assert main(["keygen", "--out", str(out)]) == 0
    assert main(["keygen", "--out", str(out)]) == 1
    assert f"{out}: already exists" in capsys.readouterr().err


def test_keygen_rejects_a_bad_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--out", str(tmp_path / "k"), "--name", "a b"]) == 1
    assert "--name" in capsys.readouterr().err


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    result = run("demo", "--seconds", "3", "--gateways", "2", "--dir", str(out), "--seed", "7",
                 "--http", f"127.0.0.1:{free_port()}")
    assert result.returncode == 0, result.stderr
    assert "verify" in result.stdout
    return out


def test_verify_names_the_failed_check(demo_dir: Path, tmp_path: Path) -> None:
    bundle = demo_dir / "proofs" / "gw-1.json"
    other_key = tmp_path / "other.vkey"
    assert run("keygen", "--out", str(tmp_path / "o.key"), "--name",
               "edgeledger.demo/agg-1").returncode == 0
    other_key.write_text(load_signer(tmp_path / "o.key").verifier().text())
    result = run("verify", str(bundle), "--log-key", str(other_key))
    assert result.returncode == 1
    assert result.stdout.startswith("FAILED checkpoint signature:")


@pytest.mark.parametrize(("content", "expected"), [
    ("{", "FAILED bundle format: bundle: not valid JSON"),
    ('{"version": 2}', "FAILED bundle format: bundle: missing keys"),
])
def test_verify_rejects_a_malformed_bundle(demo_dir: Path, tmp_path: Path, content: str,
                                           expected: str) -> None:
    path = tmp_path / "b.json"
    path.write_text(content)
    result = run("verify", str(path), "--log-key", str(demo_dir / "log.vkey"))
    assert (result.returncode, result.stdout.splitlines()[0][:len(expected)]) == (1, expected)


def test_verify_reports_an_unreadable_bundle_and_a_bad_key(demo_dir: Path) -> None:
    result = run("verify", str(demo_dir / "nope.json"), "--log-key", str(demo_dir / "log.vkey"))
    assert result.returncode == 1 and "FAILED bundle: cannot read" in result.stdout
    result = run("verify", str(demo_dir / "proofs" / "gw-1.json"), "--log-key", "x+y+z")
    assert result.returncode == 1 and result.stdout.startswith("FAILED log key:")
