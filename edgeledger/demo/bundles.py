"""The demo's results: the log's verifier key and one verified proof bundle per gateway.

Runs after every process has stopped, from what they left on disk: the final
checkpoint and the log from the aggregator's store, the blocks and their readings
from each gateway's own ledger. Each gateway's reading is chosen at random (with
`--seed`, repeatably) from its blocks that the final checkpoint covers, and every
bundle is checked with `verify_bundle` against the log's verifier key before it
is written: the demo never hands out a bundle that `edgeledger verify` would reject.
`summary` is what the demo prints at the end: the measured counts, the files, and
the command that checks a bundle, with paths as the user would type them.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.core import b64
from edgeledger.core.bundle import ProofBundle, Proven, build_bundle, verify_bundle
from edgeledger.core.checkpoint import Checkpoint, open_checkpoint
from edgeledger.core.errors import EdgeLedgerError
from edgeledger.core.note import Signer
from edgeledger.demo.processes import DemoError
from edgeledger.demo.progress import GatewayStatus
from edgeledger.demo.workdir import GatewayFiles
from edgeledger.gateway.ledger import Ledger


@dataclass(frozen=True)
class Written:
    """One bundle written, and what it proves."""

    gateway: str
    path: Path
    proven: Proven


def final_checkpoint(store: SqliteStore, log_signer: Signer) -> tuple[str, Checkpoint]:
    """The store's latest checkpoint note, its signature checked with the log's key."""
    note = store.last_checkpoint()
    if note is None:
        raise DemoError(f"{store.path}: the aggregator signed no checkpoint")
    return note, open_checkpoint(note, log_signer.verifier())


def bundle_for(gw: GatewayFiles, store: SqliteStore, log: CanonicalLog, note: str,
               cp: Checkpoint, rng: random.Random) -> ProofBundle:
    """A bundle for a random reading of `gw` in a block the checkpoint `cp` covers."""
    covered = [(h, block_hash, i) for h, block_hash, i in store.blocks(gw.name) if i < cp.size]
    rng.shuffle(covered)
    ledger = Ledger(gw.data_dir, gw.signer)
    try:
        ledger.recover()
        for height, block_hash, log_index in covered:
            block, readings = ledger.block(height)
            if block.hash != block_hash:
                raise DemoError(f"{gw.name}: block {height} in {gw.data_dir} is not the block "
                                f"the log holds at entry {log_index}")
            if readings:
                return build_bundle(readings, rng.randrange(len(readings)), block,
                                    gw.signer.public_key, log_index,
                                    log.inclusion_proof(log_index, cp.size), note)
    finally:
        ledger.close()
    raise DemoError(f"{gw.name}: none of its {len(covered)} blocks in the log at checkpoint "
                    f"height {cp.height} holds a reading; run the demo longer")


def write_outputs(root: Path, store_path: Path, log_signer: Signer,
                  gateways: list[GatewayFiles], rng: random.Random) -> tuple[Checkpoint,
                                                                            list[Written]]:
    """Write DIR/log.vkey, DIR/devices.json and DIR/proofs/<gw>.json (each verified)."""
    verifier = log_signer.verifier()
    (root / "log.vkey").write_text(verifier.text() + "\n")
    devices = {gw.name: b64.encode(gw.signer.public_key) for gw in gateways}
    (root / "devices.json").write_text(json.dumps(devices, indent=1) + "\n")
    proofs = root / "proofs"
    proofs.mkdir(exist_ok=True)
    store = SqliteStore(store_path)
    try:
        note, cp = final_checkpoint(store, log_signer)
        log = CanonicalLog(store, log_signer)
        written = []
        for gw in gateways:
            bundle = bundle_for(gw, store, log, note, cp, rng)
            try:
                proven = verify_bundle(bundle, verifier)
            except EdgeLedgerError as exc:
                raise DemoError(f"{gw.name}: the bundle built does not verify: {exc}") from exc
            path = proofs / f"{gw.name}.json"
            path.write_text(bundle.to_json())
            written.append(Written(gw.name, path, proven))
    finally:
        store.close()
    return cp, written


def shown(path: Path) -> str:
    """`path` as a person would type it here: relative to the working directory if inside."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def program() -> str:
    """How the user ran this program, for the command we print."""
    argv0 = Path(sys.argv[0])
    return shown(argv0) if argv0.name == "edgeledger" else "edgeledger"


def summary(root: Path, gateways: list[GatewayStatus], cp: Checkpoint,
            written: list[Written]) -> list[str]:
    """What was measured, where the files are, and the command that checks a bundle."""
    lines = [f"{gw.name}: {gw.readings} readings on disk in "
             f"{0 if gw.sealed is None else gw.sealed + 1} blocks; acked up to "
             f"{'-' if gw.acked is None else gw.acked}" for gw in gateways]
    lines.append(f"log {cp.origin}: {cp.size} blocks at the final checkpoint "
                 f"(height {cp.height})")
    vkey = shown(root / "log.vkey")
    lines.append(f"wrote {vkey} and {len(written)} proof bundles in {shown(root / 'proofs')}/:")
    lines += [f"  {w.path.name}: {w.proven.reading.n} q={w.proven.reading.q} in block "
              f"{w.proven.block.header.h}, log entry {w.proven.log_index}" for w in written]
    lines += ["check one with:",
              f"  {program()} verify {shown(written[0].path)} --log-key {vkey}"]
    return lines
