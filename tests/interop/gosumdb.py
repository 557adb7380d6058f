"""Build and drive tests/interop/go/sumdbcheck.go: Go's sumdb/note and sumdb/tlog.

The Go program is built once per test session in GOPATH mode against the
golang.org/x/mod source that Debian's golang-golang-x-mod-dev installs, so no
network and no Go module proxy are needed. Each `GoSumdb.run` call is one process:
tests batch their cases (thousands per call) to stay fast.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).parent / "go" / "sumdbcheck.go"
X_MOD = Path("src/golang.org/x/mod/sumdb")
DEFAULT_GOPATH = "/usr/share/gocode"
INSTALL_HINT = "apt-get install golang-go golang-golang-x-mod-dev"


class GoUnavailable(Exception):
    """Go or golang.org/x/mod is missing; the message says what to install."""


def b64(raw: bytes) -> str:
    """Standard base64, as the Go program reads and writes hashes."""
    return base64.b64encode(raw).decode()


def unb64(text: str) -> bytes:
    """Decode what the Go program wrote."""
    return base64.b64decode(text, validate=True)


def find_gopath() -> str:
    """The GOPATH entry that holds golang.org/x/mod/sumdb (GOPATH first, then Debian's)."""
    candidates = [p for p in os.environ.get("GOPATH", "").split(os.pathsep) if p]
    candidates.append(DEFAULT_GOPATH)
    for entry in candidates:
        if (Path(entry) / X_MOD / "note" / "note.go").is_file() and \
                (Path(entry) / X_MOD / "tlog" / "tlog.go").is_file():
            return entry
    raise GoUnavailable(f"golang.org/x/mod/sumdb source not found under {candidates} "
                        f"(GOPATH mode); install it with: {INSTALL_HINT}")


def build_env(gopath: str, workdir: Path) -> dict[str, str]:
    """The environment the program is built with: GOPATH mode, offline, private cache."""
    env = dict(os.environ)
    env.update(GO111MODULE="off", GOPATH=gopath, GOFLAGS="", GOPROXY="off",
               GOCACHE=str(workdir / "gocache"), CGO_ENABLED="0")
    return env


def build(workdir: Path) -> GoSumdb:
    """Build sumdbcheck into `workdir`; GoUnavailable if Go or x/mod is missing."""
    go = shutil.which("go")
    if go is None:
        raise GoUnavailable(f"the go command is not on PATH; install it with: {INSTALL_HINT}")
    gopath = find_gopath()
    binary = workdir / "sumdbcheck"
    cmd = [go, "build", "-o", str(binary), str(SOURCE)]
    done = subprocess.run(cmd, cwd=workdir, env=build_env(gopath, workdir),
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise GoUnavailable(f"building {SOURCE.name} with GOPATH={gopath} GO111MODULE=off "
                            f"failed (is golang.org/x/mod complete? {INSTALL_HINT}):\n"
                            f"{done.stderr}")
    return GoSumdb(binary)


class GoSumdb:
    """The built program: one JSON request in, one result per case out."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.calls = 0

    def run(self, cases: Sequence[dict[str, Any]],
            stores: dict[str, Sequence[bytes]] | None = None) -> dict[str, dict[str, Any]]:
        """Run `cases` (each with a unique "id") and return the results by id."""
        ids = [c["id"] for c in cases]
        assert len(set(ids)) == len(ids), "case ids must be unique"
        request = {"cases": list(cases),
                   "stores": {name: [b64(h) for h in hashes]
                              for name, hashes in (stores or {}).items()}}
        done = subprocess.run([str(self.binary)], input=json.dumps(request),
                              capture_output=True, text=True, timeout=120, check=False)
        self.calls += 1
        assert done.returncode == 0, f"sumdbcheck failed: {done.stderr}"
        results = json.loads(done.stdout)["results"]
        assert [r["id"] for r in results] == ids
        return {r["id"]: r for r in results}
