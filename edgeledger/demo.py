"""`edgeledger demo`: simulated gateways, an aggregator and a log, end to end.

This first demo runs in one process: each simulated gateway seals signed blocks
from simulated sensors and hands its sync messages (the real bytes of DESIGN.md
2.2) to the aggregator's ingest, which verifies and appends them to the canonical
log; checkpoints are signed as the log grows. At the end it writes the log's
verifier key and one proof bundle per gateway. The networked demo (Mosquitto,
agent processes, pseudo-terminals, HTTP API) replaces the in-process hand-over.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from edgeledger.aggregator.ingest import Ingest
from edgeledger.aggregator.log import CanonicalLog, MemoryLogStore
from edgeledger.clock import wall_ms
from edgeledger.core import b64
from edgeledger.core.block import Block, sync_message
from edgeledger.core.bundle import build_bundle
from edgeledger.core.errors import EdgeLedgerError
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.chain import DeviceChain
from edgeledger.sources.simulator import SimulatedEnvironmentSensor, SimulatedTracker

LOG_ORIGIN = "edgeledger.demo/agg-1"
POLL_SECONDS = 0.25
SEAL_READINGS = 40
SEAL_AGE_MS = 1000
CHECKPOINT_MS = 2000


@dataclass
class DemoOptions:
    """What `edgeledger demo` was asked to do."""

    gateways: int = 3
    seconds: float = 60
    dir: Path = Path("demo-out")
    http: str = "127.0.0.1:8080"
    broker: str | None = None
    seed: int | None = None


@dataclass
class Gateway:
    """One simulated gateway: its sensors, its chain and what it has sealed."""

    chain: DeviceChain
    sensors: list[SimulatedEnvironmentSensor | SimulatedTracker]
    pending: list[Reading] = field(default_factory=list)
    opened_ms: int = 0
    sealed: list[tuple[Block, list[Reading]]] = field(default_factory=list)
    readings: int = 0
    acked: int | None = None

    @property
    def name(self) -> str:
        """The device id."""
        return self.chain.dev

    def poll(self, now_ms: int) -> None:
        """Take one reading from every sensor into the open block."""
        if not self.pending:
            self.opened_ms = now_ms
        for sensor in self.sensors:
            self.pending.extend(sensor.poll(now_ms))

    def seal_due(self, now_ms: int) -> bytes | None:
        """Seal the open block if it is full or old enough; return its sync message."""
        if not self.pending or (len(self.pending) < SEAL_READINGS
                                and now_ms - self.opened_ms < SEAL_AGE_MS):
            return None
        block = self.chain.seal(self.pending, now_ms)
        self.sealed.append((block, self.pending))
        self.readings += len(self.pending)
        self.pending = []
        return sync_message(block, self.sealed[-1][1])


def make_gateways(count: int, rng: random.Random, seed: int | None) -> list[Gateway]:
    """`count` gateways, each with an environment sensor and a tracker."""
    gateways = []
    for i in range(1, count + 1):
        signer = _new_key(f"gw-{i}", rng, seed)
        sensors: list[SimulatedEnvironmentSensor | SimulatedTracker] = [
            SimulatedEnvironmentSensor("bme280-1", rng), SimulatedTracker("gps-1", rng)]
        gateways.append(Gateway(DeviceChain.after(signer, None), sensors))
    return gateways


def run_demo(opts: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run the demo for `opts.seconds` (0: until Ctrl-C), then write keys and bundles."""
    rng = random.Random(opts.seed)
    if opts.broker or opts.http != DemoOptions.http:
        print("note: --broker and --http take effect in the networked demo; this demo runs "
              "in one process", file=out)
    log = CanonicalLog(MemoryLogStore(), _new_key(LOG_ORIGIN, rng, opts.seed))
    ingest = Ingest(log)
    gateways = make_gateways(opts.gateways, rng, opts.seed)
    for gw in gateways:
        ingest.enroll(gw.name, gw.chain.signer.public_key)
    _run(opts, gateways, ingest, out)
    return _write_outputs(opts, gateways, ingest, rng, out)


def _run(opts: DemoOptions, gateways: list[Gateway], ingest: Ingest, out: TextIO) -> None:
    """The main loop: poll, seal, ingest, checkpoint, show progress."""
    start = time.monotonic()
    view = Progress(out)
    last_checkpoint = 0
    try:
        while opts.seconds == 0 or time.monotonic() - start < opts.seconds:
            now = wall_ms()
            for gw in gateways:
                gw.poll(now)
                _deliver(gw, ingest, gw.seal_due(now))
            if now - last_checkpoint >= CHECKPOINT_MS:
                ingest.log.sign_checkpoint(now)
                last_checkpoint = now
            view.show(time.monotonic() - start, gateways, ingest.log)
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        print("\nstopping", file=out)
    for gw in gateways:
        _deliver(gw, ingest, gw.seal_due(wall_ms() + SEAL_AGE_MS))
    ingest.log.sign_checkpoint(wall_ms())
    view.show(time.monotonic() - start, gateways, ingest.log, final=True)


def _deliver(gw: Gateway, ingest: Ingest, message: bytes | None) -> None:
    """Hand a gateway's sync message to the aggregator; every block must be accepted."""
    if message is None:
        return
    ack = ingest.receive(gw.name, message)
    if ack.status != "ok":
        raise EdgeLedgerError(f"demo: block of {gw.name} was {ack.status}: {ack.why}")
    gw.acked = ack.next - 1


def _write_outputs(opts: DemoOptions, gateways: list[Gateway], ingest: Ingest,
                   rng: random.Random, out: TextIO) -> int:
    """Write DIR/log.vkey and DIR/proofs/<gateway>.json; print how to check one."""
    log = ingest.log
    if log.checkpoint is None or log.checkpoint_note is None:
        raise EdgeLedgerError("demo: the log has no checkpoint to prove against")
    proofs = opts.dir / "proofs"
    proofs.mkdir(parents=True, exist_ok=True)
    for stale in proofs.glob("*.json"):
        stale.unlink()
    (opts.dir / "log.vkey").write_text(log.signer.verifier().text() + "\n")
    devices = {gw.name: b64.encode(gw.chain.signer.public_key) for gw in gateways}
    (opts.dir / "devices.json").write_text(json.dumps(devices, indent=1) + "\n")
    size = log.checkpoint.size
    for gw in gateways:
        block, readings = rng.choice([s for s in gw.sealed if s[1]])
        index = rng.randrange(len(readings))
        log_index = ingest.devices[gw.name].blocks[block.header.h][1]
        bundle = build_bundle([r.raw for r in readings], index, block, gw.chain.signer.public_key,
                              log_index, log.inclusion_proof(log_index, size),
                              log.checkpoint_note)
        (proofs / f"{gw.name}.json").write_text(bundle.to_json())
    first = proofs / f"{gateways[0].name}.json"
    print(f"\nwrote {opts.dir / 'log.vkey'} and {len(gateways)} proof bundles in {proofs}/",
          file=out)
    print("check one with:", file=out)
    print(f"  {_program()} verify {first} --log-key {opts.dir / 'log.vkey'}", file=out)
    return 0


class Progress:
    """A live view: redrawn in place on a terminal, a line every 5 s otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.lines = 0
        self.last = -5.0

    def show(self, elapsed: float, gateways: list[Gateway], log: CanonicalLog,
             final: bool = False) -> None:
        """Show the state of every gateway and of the log."""
        if not self.tty and not final and elapsed - self.last < 5:
            return
        self.last = elapsed
        cp = log.checkpoint
        rows = [f"{elapsed:6.1f}s  log: {log.size} blocks, checkpoint height "
                f"{cp.height if cp else '-'} (size {cp.size if cp else 0})"]
        rows += [f"   {gw.name:<8} readings {gw.readings + len(gw.pending):>7}  blocks "
                 f"{len(gw.sealed):>5}  acked height {gw.acked if gw.acked is not None else '-':>5}"
                 f"  backlog {len(gw.sealed) - (gw.acked + 1 if gw.acked is not None else 0):>3}"
                 for gw in gateways]
        if self.tty and self.lines:
            self.out.write(f"\x1b[{self.lines}F")
        self.out.write("".join(row + "\x1b[K\n" if self.tty else row + "\n" for row in rows))
        self.out.flush()
        self.lines = len(rows)


def _new_key(name: str, rng: random.Random, seed: int | None) -> Signer:
    """A fresh key from the OS's random source, or a repeatable one when seeded."""
    return Signer.generate(name) if seed is None else Signer(name, rng.randbytes(32))


def _program() -> str:
    """How the user ran this program, for the command we print."""
    argv0 = Path(sys.argv[0])
    return str(argv0) if argv0.name == "edgeledger" else "edgeledger"
