"""The auditor's memory between runs: the last checkpoint it verified, per log.

Why: a log that shows each auditor a consistent chain can still fork between two
runs, or roll back. Keeping the last verified checkpoint and proving the next run's
latest consistent with it closes that gap, and makes each run O(new checkpoints).

The file is JSON (`version`, `origin`, `verifier_key`, the signed `checkpoint` note,
its `height` and `size`, `saved_ms`), written only after a run's checks passed, and
atomically (temp file in the same directory, fsync, rename, fsync of the directory),
so a crash leaves the old state or the new one, never half of one. On load the note
is verified again with the log key: a file from another log, or edited by hand, is
refused (ConfigError naming the file) rather than trusted or silently replaced.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from edgeledger.atomicfile import replace_file
from edgeledger.core.checkpoint import Checkpoint, open_checkpoint
from edgeledger.core.errors import ConfigError, DecodeError, VerificationError
from edgeledger.core.note import Verifier

STATE_VERSION = 1
MAX_STATE = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def default_path(origin: str, environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_STATE_HOME/edgeledger/audit-<origin>.json` (default `~/.local/state`), the
    origin with every character but letters, digits, `.`, `_` and `-` made `_`."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    base = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "edgeledger" / f"audit-{_UNSAFE.sub('_', origin)}.json"


def load_state(path: Path, key: Verifier) -> Checkpoint | None:
    """The checkpoint saved at `path` (None if there is no file), verified with `key`."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STATE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read the audit state: "
                                           f"{exc.strerror}") from exc
    fix = "; remove the file to audit this log from its first checkpoint again"
    try:
        obj = json.loads(data) if len(data) <= MAX_STATE else None
    except (ValueError, RecursionError):
        obj = None
    if not isinstance(obj, dict) or obj.get("version") != STATE_VERSION \
            or not isinstance(obj.get("checkpoint"), str):
        raise ConfigError(str(path), None, f"not an audit state file (version "
                                           f"{STATE_VERSION}){fix}")
    if obj.get("verifier_key") != key.text():
        raise ConfigError(str(path), "verifier_key", f"the state is of log key "
                                                     f"{obj.get('verifier_key')!r}, not "
                                                     f"{key.text()!r}: use --state{fix}")
    try:
        return open_checkpoint(obj["checkpoint"], key)
    except (DecodeError, VerificationError) as exc:
        raise ConfigError(str(path), "checkpoint", f"{exc}{fix}") from exc


def save_state(path: Path, key: Verifier, note: str, cp: Checkpoint, now_ms: int) -> None:
    """Atomically replace `path` with the state for checkpoint `cp` (signed `note`)."""
    body = json.dumps({"version": STATE_VERSION, "origin": cp.origin,
                       "verifier_key": key.text(), "height": cp.height, "size": cp.size,
                       "saved_ms": now_ms, "checkpoint": note}, indent=1) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        replace_file(path, body.encode(), path.with_name(f".{path.name}.tmp-{os.getpid()}"))
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot write the audit state: "
                                           f"{exc.strerror or exc}") from exc
