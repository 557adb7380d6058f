"""Proofs served over HTTP, checked by code nobody here wrote: Go's sumdb and `edgeledger verify`.

A writer in this process grows a SQLite log (real blocks, real Ingest) while the API
serves the same file from its own read-only connections; after each checkpoint, at
sizes that are mostly not powers of two, the test fetches proof bundles and
consistency proofs over HTTP. Go's tlog.CheckRecord and tlog.CheckTree check the
log paths and consistency proofs, note.Open the checkpoints; `edgeledger verify`
(a subprocess) checks whole bundles; a flipped bit in a served proof is refused.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gosumdb
import httpx
import pytest
from apifleet import DEVICES, LOG_KEY, T0, readings_for

from edgeledger.aggregator.api.app import create_app
from edgeledger.aggregator.api.serve import ApiServer
from edgeledger.aggregator.ingest import Ingest
from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.core import merkle
from edgeledger.core.block import sync_message
from edgeledger.core.bundle import ProofBundle, verify_bundle
from edgeledger.core.checkpoint import open_checkpoint
from edgeledger.gateway.chain import DeviceChain

pytestmark = pytest.mark.interop

SIZES = (1, 2, 3, 5, 7, 11, 13, 21, 22, 33, 47, 64, 65, 100)


@pytest.fixture(scope="module")
def go(tmp_path_factory: pytest.TempPathFactory) -> gosumdb.GoSumdb:
    """sumdbcheck (tests/interop/go), built once; fails, never skips, without Go."""
    try:
        return gosumdb.build(tmp_path_factory.mktemp("go-sumdb"))
    except gosumdb.GoUnavailable as exc:
        reason = str(exc)
    pytest.fail(f"Go interop needs Go and golang.org/x/mod: {reason}", pytrace=False)


class Growing:
    """One device's blocks appended by a writer, and the API over the same file."""

    def __init__(self, path: Path) -> None:
        self.store = SqliteStore(path)
        self.log = CanonicalLog(self.store, LOG_KEY)
        self.ingest = Ingest(self.log, self.store)
        self.ingest.enroll("gw-1", DEVICES["gw-1"].public_key, T0)
        self.chain = DeviceChain.after(DEVICES["gw-1"], None)
        self.leaves: list[bytes] = []
        self.hashes = merkle.MemoryHashes()

    def grow_to(self, size: int) -> str:
        """Append blocks up to `size` entries, then sign a checkpoint; its note."""
        while self.log.size < size:
            h = self.chain.next_height
            readings = readings_for("gw-1", h, 2 * h)[: 1 + h % 7]
            block = self.chain.seal(readings, T0 + h * 10_000 + 500)
            ack = self.ingest.receive("gw-1", sync_message(block, readings))
            assert ack.status == "ok"
            self.leaves.append(block.cose)
            self.hashes.append(merkle.leaf_hash(block.cose))
        return self.log.sign_checkpoint(T0 + size)


@pytest.fixture
def growing(tmp_path: Path) -> Iterator[tuple[Growing, httpx.Client]]:
    g = Growing(tmp_path / "agg.db")
    app = create_app(lambda: SqliteStore(tmp_path / "agg.db", read_only=True),
                     LOG_KEY.verifier())
    server = ApiServer(app, "127.0.0.1", 0)
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield g, client
    server.stop()
    g.store.close()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_served_proofs_pass_go_sumdb_at_sizes_that_are_not_powers_of_two(
        growing: tuple[Growing, httpx.Client], go: gosumdb.GoSumdb, tmp_path: Path) -> None:
    g, client = growing
    vkey = LOG_KEY.verifier().text()
    cases: list[dict[str, Any]] = []
    bundles: list[str] = []
    for n, size in enumerate(SIZES):
        note = g.grow_to(size)
        cp = open_checkpoint(note, LOG_KEY.verifier())
        assert client.get("/v1/log").json()["size"] == size
        cases.append({"id": f"open {size}", "op": "open", "note": note, "vkeys": [vkey],
                      "checkpoint": True})
        for height in sorted({0, size // 2, size - 1}):
            r = client.get("/v1/proof", params={"device": "gw-1", "height": height, "index": 0})
            assert r.status_code == 200, r.text
            bundle = ProofBundle.from_json(r.text)
            verify_bundle(bundle, LOG_KEY.verifier())
            assert bundle.checkpoint == note and bundle.log_index == height
            bundles.append(r.text)
            case = {"op": "check_record", "size": size, "root": b64(cp.root), "index": height,
                    "leaf": b64(merkle.leaf_hash(bundle.block)),
                    "proof": [b64(h) for h in bundle.log_path]}
            cases.append({**case, "id": f"incl {height}/{size}"})
            if bundle.log_path:
                bad = [bytes([bundle.log_path[0][0] ^ 1]) + bundle.log_path[0][1:],
                       *bundle.log_path[1:]]
                cases.append({**case, "id": f"bad incl {height}/{size}",
                              "proof": [b64(h) for h in bad]})
        for old in SIZES[:n]:
            body = client.get("/v1/consistency", params={"from": old, "to": size}).json()
            cases.append({"id": f"cons {old}/{size}", "op": "check_tree", "size": size,
                          "root": b64(cp.root), "old_size": old,
                          "old_root": b64(g.hashes.root(old)), "proof": body["proof"]})
    results = go.run(cases)
    wrong = [f"{i}: {r.get('error', 'accepted')}" for i, r in results.items()
             if r["ok"] == i.startswith("bad ")]
    assert not wrong, wrong[:10]
    assert sum(i.startswith("cons ") for i in results) == len(SIZES) * (len(SIZES) - 1) // 2
    _edgeledger_verify(bundles[::9], vkey, tmp_path)


def _edgeledger_verify(bundles: list[str], vkey: str, tmp_path: Path) -> None:
    """`edgeledger verify` accepts each bundle, and refuses it with one bit flipped."""
    assert len(bundles) >= 4
    for k, text in enumerate(bundles):
        good = tmp_path / f"bundle-{k}.json"
        good.write_text(text)
        run = subprocess.run([sys.executable, "-m", "edgeledger", "verify", str(good),
                              "--log-key", vkey], capture_output=True, text=True, timeout=60,
                             check=False, stdin=subprocess.DEVNULL)
        assert run.returncode == 0, run.stderr
        assert "is in block" in run.stdout
        obj = json.loads(text)
        if not obj["log_path"]:
            continue
        raw = bytearray(base64.b64decode(obj["log_path"][-1]))
        raw[5] ^= 0x10
        obj["log_path"][-1] = b64(bytes(raw))
        bad = tmp_path / f"bad-{k}.json"
        bad.write_text(json.dumps(obj))
        run = subprocess.run([sys.executable, "-m", "edgeledger", "verify", str(bad),
                              "--log-key", vkey], capture_output=True, text=True, timeout=60,
                             check=False, stdin=subprocess.DEVNULL)
        assert run.returncode == 1 and "log inclusion" in (run.stdout + run.stderr)
