"""The second virtualenv for the pycose interop tests: pycose 1.1.0 under cbor2 5.

pycose 1.1.0 needs cbor2 < 6, while the main .venv has cbor2 6; our own code must
work with both. This env, at <repo>/.venv/envs/pycose, holds pycose, cbor2 5,
pytest, hypothesis and edgeledger installed editable from the repository, so the
same source runs under both cbor2 major versions.

It is built once and then reused: a stamp file records what it was built from
(the requirement lines, pyproject.toml's hash and the Python version); while the
stamp matches, no pip runs. A file lock keeps two concurrent test runs from
building it at the same time. A build that fails leaves no stamp, so the next
run runs pip again over what is there (an env built by hand is reused that way).

`Peer` runs pycose_peer.py in the env and talks JSON to it, one line each way.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ENV = ROOT / ".venv" / "envs" / "pycose"
PYTHON = ENV / "bin" / "python"
REQUIREMENTS = ("pycose==1.1.0", "cbor2>=5.4,<6", "pytest", "hypothesis")
CONSTRAINTS = "cbor2<6\n"
STAMP = ENV / ".edgeledger-pycose-stamp"
LOCK = ENV.parent / ".pycose.lock"
PIP_TIMEOUT = 900


class EnvError(Exception):
    """The env could not be built; the message says what to run by hand."""


def _wanted() -> str:
    """What the env is built from: a change to any of it rebuilds the env."""
    pyproject = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return json.dumps({"requirements": REQUIREMENTS, "constraints": CONSTRAINTS,
                       "pyproject": pyproject, "python": sys.version}, sort_keys=True)


def manual_commands() -> str:
    """The shell commands that build the env by hand."""
    q = shlex.quote
    return (f"{q(sys.executable)} -m venv {q(str(ENV))}\n"
            f"echo 'cbor2<6' > {q(str(ENV / 'constraints.txt'))}\n"
            f"{q(str(PYTHON))} -m pip install -c {q(str(ENV / 'constraints.txt'))} "
            + " ".join(q(r) for r in REQUIREMENTS) + f" -e {q(str(ROOT))}")


def ensure_env() -> Path:
    """Build the pycose env unless its stamp says it is current; return its python."""
    ENV.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = _wanted()
        old = STAMP.read_text() if STAMP.exists() else ""
        if PYTHON.exists() and old == wanted:
            return PYTHON
        STAMP.unlink(missing_ok=True)
        if old and _stamp_python(old) != sys.version:
            shutil.rmtree(ENV)  # built for another Python: start afresh
        _build()
        STAMP.write_text(wanted)
    return PYTHON


def _stamp_python(stamp: str) -> str | None:
    try:
        python = json.loads(stamp)["python"]
    except (ValueError, KeyError, TypeError):
        return None
    return python if isinstance(python, str) else None


def clean_environ() -> dict[str, str]:
    """The caller's environment less what would point pip or python elsewhere.

    Index, certificate and proxy settings stay: a CI machine may need them.
    """
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_CONSTRAINT", "PIP_REQUIREMENT",
            "PIP_USER", "PIP_TARGET", "PIP_PREFIX", "PIP_REQUIRE_VIRTUALENV"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _build() -> None:
    if not PYTHON.exists():
        _run([sys.executable, "-m", "venv", str(ENV)], "creating the venv")
    constraints = ENV / "constraints.txt"
    constraints.write_text(CONSTRAINTS)
    _run([str(PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check",
          "-c", str(constraints), *REQUIREMENTS, "-e", str(ROOT)], "pip install")


def _run(argv: list[str], step: str) -> None:
    env = clean_environ()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PIP_TIMEOUT,
                              env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvError(_failure(step, str(exc))) from exc
    if done.returncode != 0:
        raise EnvError(_failure(step, (done.stdout + done.stderr)[-3000:]))


def _failure(step: str, detail: str) -> str:
    return (f"could not build the pycose interop env at {ENV} ({step} failed):\n{detail}\n"
            f"PyPI must be reachable. To build it by hand, run:\n{manual_commands()}\n"
            f"and run the tests again (delete {ENV} to start over).")


class Peer:
    """pycose_peer.py running in the env: JSON requests in, JSON answers out, one a line."""

    def __init__(self, python: Path) -> None:
        # Closed in close(): the peer lives for the whole test session.
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [str(python), str(Path(__file__).with_name("pycose_peer.py")), "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            env=clean_environ(), cwd=tempfile.gettempdir())

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one request; raise PeerError with the peer's traceback if it failed."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise PeerError(f"pycose peer died: {self._stderr_text()}") from None
        line = self._proc.stdout.readline()
        if not line:
            raise PeerError(f"pycose peer died: {self._stderr_text()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer and len(answer) == 1:
            raise PeerError(f"pycose peer failed on {cmd!r}:\n{answer['error']}")
        return answer

    def _stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-3000:]

    def close(self) -> None:
        """Stop the peer (it ends when its stdin closes)."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()


class PeerError(Exception):
    """The peer failed or died; the message holds its traceback or stderr."""
