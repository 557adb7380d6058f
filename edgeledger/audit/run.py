"""`edgeledger audit`: options in, one result line and an exit status out.

Exit status: 0 and `OK: ...` when every check passed (then, and only then, the state
file advances); 1 and `FAILED <check>: <detail>` for the first fault found (the log,
a checkpoint or a block is not what it must be); 2 for a usage error (a bad option,
key or state file); 3 and `ERROR api: ...` when the audit could not be completed
(the API unreachable, timing out or failing), so that monitoring can tell "the log
lied" from "the network is down". The result line goes to standard output, progress
to standard error.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from edgeledger.audit.blocks import DeviceAudit
from edgeledger.audit.client import ApiClient, ApiUrl
from edgeledger.audit.progress import Progress, is_live
from edgeledger.audit.state import default_path, load_state, save_state
from edgeledger.audit.walk import ChainWalker, audit_device, list_devices
from edgeledger.core.block import valid_device_id
from edgeledger.core.errors import (
    ConfigError,
    DecodeError,
    EdgeLedgerError,
    TransportError,
    VerificationError,
)
from edgeledger.core.note import Verifier
from edgeledger.keyfile import load_verifier

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
LISTED_DEVICES = 3


@dataclass(frozen=True)
class AuditOptions:
    """What to audit: the API, the log key (text or file), state file, devices."""

    api: str
    log_key: str
    state: Path | None = None
    devices: tuple[str, ...] = ()
    all_devices: bool = False
    timeout: float = 30.0
    progress: bool = True


def run_audit(opts: AuditOptions, out: TextIO | None = None, err: TextIO | None = None,
              environ: Mapping[str, str] | None = None) -> int:
    """Run the audit; print one result line on `out`; return the exit status."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        key, url = _usage(opts)
        saved_path = opts.state or default_path(key.name, environ)
        saved = load_state(saved_path, key)
    except (ConfigError, DecodeError, ValueError) as exc:
        print(f"edgeledger audit: {exc}", file=err)
        return EXIT_USAGE
    progress = Progress(err, is_live(err, environ), enabled=opts.progress)
    client = ApiClient(url, opts.timeout)
    started = time.monotonic()
    try:
        walker = ChainWalker(client, key, progress)
        walker.begin(saved)
        devices = list(dict.fromkeys(
            [*opts.devices, *(list_devices(client) if opts.all_devices else [])]))
        audits = [audit_device(client, walker, dev, progress) for dev in devices]
        if walker.tip is not None:
            save_state(saved_path, key, walker.tip_note, walker.tip, time.time_ns() // 10**6)
    except VerificationError as exc:
        progress.finish()
        print(f"FAILED {exc.check}: {exc.detail}", file=out)
        return EXIT_FAILED
    except TransportError as exc:
        progress.finish()
        print(f"ERROR api: {exc}", file=out)
        return EXIT_UNREACHABLE
    except ConfigError as exc:
        progress.finish()
        print(f"edgeledger audit: {exc}", file=err)
        return EXIT_USAGE
    except EdgeLedgerError as exc:  # a fault of ours or of the environment, named
        progress.finish()
        print(f"ERROR: {exc}", file=out)
        return EXIT_UNREACHABLE
    finally:
        client.close()
    elapsed = time.monotonic() - started
    print(f"OK: {summary(walker, saved is not None, audits)} "
          f"[{client.requests} requests, {elapsed:.1f} s]", file=out)
    return EXIT_OK


def _usage(opts: AuditOptions) -> tuple[Verifier, ApiUrl]:
    """Check the options that need no I/O but the key file; ValueError/ConfigError."""
    if opts.timeout <= 0:
        raise ValueError(f"--timeout {opts.timeout}: must be positive")
    bad = [d for d in opts.devices if not valid_device_id(d)]
    if bad:
        raise ValueError(f"--device {bad[0]!r}: not a device id ([a-z0-9][a-z0-9-]{{0,63}})")
    try:
        key = load_verifier(opts.log_key)
    except DecodeError as exc:
        raise ValueError(f"--log-key: {exc}") from exc
    return key, ApiUrl.parse(opts.api)


def summary(walker: ChainWalker, had_state: bool, audits: Sequence[DeviceAudit]) -> str:
    """The one line that says what was verified."""
    tip, start = walker.tip, walker.start
    if tip is None or start is None:
        text = f"log {walker.key.name} has no checkpoint yet"
    else:
        text = (f"log {tip.origin} checkpoints {start.height}..{tip.height} consistent "
                f"(size {tip.size})")
        if had_state:
            text += (f", extending the saved checkpoint {start.height}" if tip != start
                     else f", unchanged since the saved checkpoint {start.height}")
    if len(audits) > LISTED_DEVICES:
        blocks = sum(a.next_height for a in audits)
        pending = sum(a.pending for a in audits)
        text += f"; {len(audits)} devices, {blocks} blocks verified"
        text += f" ({pending} after the latest checkpoint)" if pending else ""
    for a in audits:
        if len(audits) <= LISTED_DEVICES:
            text += f"; {_device_line(a)}"
    return text


def _device_line(a: DeviceAudit) -> str:
    flags = "".join((" (revoked)" if a.info.revoked else "",
                     " (flagged: equivocation evidence)" if a.info.flagged else ""))
    if a.next_height == 0:
        return f"device {a.dev}{flags} has no blocks"
    text = f"device {a.dev}{flags} blocks 0..{a.next_height - 1} verified"
    if a.pending:
        text += f" ({a.pending} after the latest checkpoint, not yet provable)"
    return text
