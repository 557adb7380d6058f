"""enroll, revoke, devices and rotate-key as an operator runs them, on a temporary store."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edgeledger.aggregator.enrollment import parse_rotation
from edgeledger.core import b64
from edgeledger.keyfile import load_signer

PROGRAM = Path(sys.executable).with_name("edgeledger")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `edgeledger` program."""
    return subprocess.run([str(PROGRAM), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def ok(*args: str) -> str:
    done = run(*args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """An aggregator config on a fresh store, and keys: gw-1 (old, new, a thief's), gw-2."""
    (tmp_path / "agg.toml").write_text(
        f'[aggregator]\norigin = "test.example/log"\nkey_file = "{tmp_path}/log.key"\n'
        f'[store]\npath = "{tmp_path}/db/agg.db"\n[broker]\naddress = "127.0.0.1:1883"\n')
    for name, dev in [("old", "gw-1"), ("new", "gw-1"), ("thief", "gw-1"), ("gw2", "gw-2")]:
        ok("keygen", "--out", str(tmp_path / f"{name}.key"), "--name", dev)
    return tmp_path


def devices(site: Path) -> list[list[str]]:
    return [line.split() for line in ok("devices", "--config", str(site / "agg.toml"))
            .splitlines()]


def events(site: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(site / "db" / "agg.db") as db:
        return list(db.execute("SELECT kind, dev FROM events ORDER BY id"))


def pub(site: Path, name: str) -> str:
    return b64.encode(load_signer(site / f"{name}.key").public_key)


def test_enroll_is_idempotent_and_lists_keys_in_every_spelling(site: Path) -> None:
    cfg = str(site / "agg.toml")
    assert ok("enroll", "--config", cfg, "gw-1", str(site / "old.key")).startswith("enrolled")
    again = ok("enroll", "--config", cfg, "gw-1", pub(site, "old"))
    assert again.startswith("already enrolled, unchanged")
    verifier = load_signer(site / "gw2.key").verifier().text()
    ok("enroll", "--config", cfg, "gw-2", verifier)
    listed = devices(site)
    assert [(d[0], d[1], d[4]) for d in listed] == [("gw-1", "enrolled", pub(site, "old")),
                                                    ("gw-2", "enrolled", pub(site, "gw2"))]
    # A different key for an enrolled id is refused without a rotation record.
    refused = run("enroll", "--config", cfg, "gw-1", pub(site, "thief"))
    assert refused.returncode == 1 and "rotation record" in refused.stderr
    # A key named after another device is refused.
    misnamed = run("enroll", "--config", cfg, "gw-3", str(site / "gw2.key"))
    assert misnamed.returncode == 1 and "named 'gw-2'" in misnamed.stderr
    assert devices(site)[0][4] == pub(site, "old")
    assert events(site) == [("enrolled", "gw-1"), ("enrolled", "gw-2")]


def test_a_revoked_device_stays_listed_with_its_history(site: Path) -> None:
    cfg = str(site / "agg.toml")
    ok("enroll", "--config", cfg, "gw-1", pub(site, "old"))
    out = ok("revoke", "--config", cfg, "gw-1", "--reason", "stolen from site B")
    assert out.startswith("revoked gw-1")
    assert ok("revoke", "--config", cfg, "gw-1").startswith("already revoked, unchanged")
    assert [d[:2] for d in devices(site)] == [["gw-1", "revoked"]]
    back = run("enroll", "--config", cfg, "gw-1", pub(site, "old"))
    assert back.returncode == 1 and "revoked" in back.stderr
    unknown = run("revoke", "--config", cfg, "gw-9")
    assert unknown.returncode == 1 and "not enrolled" in unknown.stderr
    with sqlite3.connect(site / "db" / "agg.db") as db:
        reasons = dict(db.execute("SELECT kind, reason FROM events"))
    assert reasons["revoked"] == "stolen from site B"


def test_rotation_forged_refused_valid_applied(site: Path) -> None:
    cfg = str(site / "agg.toml")
    ok("enroll", "--config", cfg, "gw-1", pub(site, "old"))
    # A thief's key signs a rotation to its own choice: refused, and journalled.
    forged = site / "forged.rot"
    ok("rotate-key", "--old-key", str(site / "thief.key"), "--new-key", pub(site, "new"),
       "--out", str(forged))
    refused = run("enroll", "--config", cfg, "--rotation", str(forged))
    assert refused.returncode == 1 and "rotation key" in refused.stderr
    # A record that claims the enrolled key as `old` but carries the thief's signature.
    claim = parse_rotation(forged.read_bytes())
    lying = site / "lying.rot"
    lying.write_bytes(type(claim)(claim.dev, load_signer(site / "old.key").public_key,
                                  claim.new, claim.ts, claim.sig).encode())
    refused = run("enroll", "--config", cfg, "--rotation", str(lying))
    assert refused.returncode == 1 and "rotation signature" in refused.stderr
    assert devices(site)[0][4] == pub(site, "old")
    # The real old key signs: applied once, then "already applied".
    good = site / "good.rot"
    made = ok("rotate-key", "--old-key", str(site / "old.key"), "--new-key",
              str(site / "new.key"), "--out", str(good))
    assert "edgeledger/v1/dev/gw-1/rotate" in made
    applied = ok("enroll", "--config", cfg, "gw-1", "--rotation", str(good))
    assert applied.startswith("applied rotation of gw-1")
    assert ok("enroll", "--config", cfg, "--rotation", str(good)).startswith("already applied")
    assert [(d[0], d[1], d[4]) for d in devices(site)] == [("gw-1", "enrolled",
                                                            pub(site, "new"))]
    # The old key cannot hand the device on again once it is no longer enrolled.
    replay = site / "replay.rot"
    ok("rotate-key", "--old-key", str(site / "old.key"), "--new-key", pub(site, "thief"),
       "--out", str(replay))
    assert run("enroll", "--config", cfg, "--rotation", str(replay)).returncode == 1
    assert events(site) == [("enrolled", "gw-1"), ("rotation-rejected", "gw-1"),
                            ("rotation-rejected", "gw-1"), ("rotated", "gw-1"),
                            ("rotation-rejected", "gw-1")]


def test_a_bad_config_is_named_and_nothing_is_created(tmp_path: Path) -> None:
    cfg = tmp_path / "agg.toml"
    cfg.write_text(f'[aggregator]\norigin = "o"\nkey_file = "k"\n[store]\n'
                   f'path = "{tmp_path}/x.db"\nbackend = "postgres"\n[broker]\naddress = "h:1"\n')
    done = run("enroll", "--config", str(cfg), "gw-1", b64.encode(bytes(32)))
    assert done.returncode == 1
    assert f"{cfg}: store.path:" in done.stderr
    assert not (tmp_path / "x.db").exists()
