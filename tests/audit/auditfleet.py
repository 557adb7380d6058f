"""A live log for the audit tests: a real SqliteStore fed by the real Ingest, served by
the real API (uvicorn on a free loopback port), that a test can grow between runs.

Readings cover every value kind (float, int, bool, text, a GPS fix map), units and a
sensor attestation, so the audit's rebuilding of reading bytes from the API's JSON is
exercised on all of them; every `heartbeat_every`-th round is an empty block.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgeledger.aggregator.api.app import create_app
from edgeledger.aggregator.api.serve import ApiServer
from edgeledger.aggregator.ingest import Ingest
from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.audit import AuditOptions, run_audit
from edgeledger.core.block import sync_message
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.chain import DeviceChain

ORIGIN = "audit.test/agg-1"
LOG_KEY = Signer(ORIGIN, hashlib.sha256(b"audit test log key").digest())
T0 = 1_700_000_000_000
STEP_MS = 1_000


def device_key(name: str, generation: int = 0) -> Signer:
    """The (deterministic) signer of device `name`; a rotation makes generation 1."""
    return Signer(name, hashlib.sha256(f"device key {name} {generation}".encode()).digest())


def readings(h: int, q: int, t: int) -> list[Reading]:
    """The readings of one block: every kind of value."""
    return [Reading("bme-1/temperature", t, q, 20.5 + h / 10, "Cel"),
            Reading("bme-1/humidity", t + 1, q + 1, 40 + h, "%RH"),
            Reading("door-1/open", t + 2, q, h % 2 == 0),
            Reading("gps-1/fix", t + 3, q, {"lat": 52.5 + h / 1000, "lon": 13.4, "alt": 34.0}),
            Reading("note-1/status", t + 4, q, f"ok {h}"),
            Reading("meter-1/energy", t + 5, q, 1e300 if h == 3 else -0.0, "kWh",
                    a=bytes([h % 256]) * 16)]


class LiveLog:
    """A log in a SQLite store that grows when asked (the aggregator's ingest path)."""

    def __init__(self, path: Path, devices: tuple[str, ...] = ("gw-1", "gw-2")) -> None:
        self.path = path
        self.store = SqliteStore(path)
        self.log = CanonicalLog(self.store, LOG_KEY)
        self.ingest = Ingest(self.log, self.store)
        self.now = T0
        self.chains: dict[str, DeviceChain] = {}
        self.notes: list[str] = []
        for dev in devices:
            signer = device_key(dev)
            self.ingest.enroll(dev, signer.public_key, self.now)
            self.chains[dev] = DeviceChain.after(signer, None)

    def grow(self, rounds: int, checkpoint_every: int = 1, heartbeat_every: int = 4) -> None:
        """`rounds` blocks per device, a checkpoint after every `checkpoint_every` rounds."""
        for r in range(1, rounds + 1):
            self.now += STEP_MS
            batch = []
            for dev, chain in self.chains.items():
                h = chain.next_height
                rds = [] if h % heartbeat_every == heartbeat_every - 1 else \
                    readings(h, 2 * h, self.now)
                batch.append((dev, sync_message(chain.seal(rds, self.now + 500), rds)))
            acks = self.ingest.receive_batch(batch, self.now + 600)
            assert all(a.status == "ok" for a in acks), acks
            if r % checkpoint_every == 0:
                self.checkpoint()

    def checkpoint(self) -> str:
        """Sign a checkpoint over the whole log (if it grew)."""
        note = self.log.sign_checkpoint(self.now + 700)
        if not self.notes or self.notes[-1] != note:
            self.notes.append(note)
        return note

    def rotate(self, dev: str) -> None:
        """Enroll a new key for `dev` (as an applied rotation does); later blocks use it."""
        old = self.chains[dev]
        new = device_key(dev, 1)
        self.ingest.enroll(dev, new.public_key, self.now)
        self.chains[dev] = DeviceChain(new, dev, old.next_height, old.prev)

    def close(self) -> None:
        self.store.close()


@contextmanager
def serve(path: Path) -> Iterator[str]:
    """The real API over the store at `path`, on a free port; yields its base URL."""
    app = create_app(lambda: SqliteStore(path, read_only=True), LOG_KEY.verifier())
    server = ApiServer(app, "127.0.0.1", 0)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@dataclass
class Live:
    """A log, the URL of the real API over it, and a directory for state files."""

    log: LiveLog
    url: str
    tmp: Path

    def audit(self, *devices: str, state: Path, url: str | None = None,
              all_devices: bool = False, key: str | None = None) -> tuple[int, str]:
        """Run the audit; (exit status, stdout + stderr)."""
        out, err = io.StringIO(), io.StringIO()
        opts = AuditOptions(api=url or self.url, log_key=key or LOG_KEY.verifier().text(),
                            state=state, devices=devices,
                            all_devices=all_devices, timeout=10)
        status = run_audit(opts, out, err, environ={})
        return status, out.getvalue() + err.getvalue()
