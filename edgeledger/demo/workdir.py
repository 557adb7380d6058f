"""The demo's directory: its layout, the generated TOML files, the keys and enrollment.

    DIR/.edgeledger-demo        marks a directory this demo may clear on the next run
    DIR/aggregator.toml         the aggregator's configuration
    DIR/aggregator.db           its SQLite store (the canonical log)
    DIR/log.key, log.vkey       the log's signer key (0600) and verifier key
    DIR/broker/mosquitto.conf   our own broker's configuration (unless --broker)
    DIR/logs/<name>.log         every child's stdout and stderr
    DIR/gw-K/agent.toml         gateway K's agent profile (serial framed + NMEA, sync)
    DIR/gw-K/data/              its data directory: device.key, journal, state.json
    DIR/gw-K/serial/            symlinks to its pseudo-terminals, like /dev/serial/by-id
    DIR/proofs/<gw>.json        the proof bundles, DIR/devices.json their public keys

Every run starts from a clean directory: what an earlier run left is removed, but
only in a directory that carries the marker (or is empty), so a mistyped `--dir`
never deletes someone's files.

The keys are made here, before any process starts, so the agents' profiles can
name the log's verifier key and the gateways are enrolled in the store before the
aggregator opens it. With `--seed` they are derived from the seed (a repeatable
demo), otherwise from the OS's random source.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from edgeledger.aggregator.config import load_aggregator_config, open_store
from edgeledger.aggregator.enrollment import kid
from edgeledger.core.note import Signer
from edgeledger.demo.processes import DemoError
from edgeledger.gateway.identity import key_path
from edgeledger.keyfile import write_signer

MARKER = ".edgeledger-demo"
LOG_ORIGIN = "edgeledger.demo/agg-1"
CHECKPOINT_MS = 1000
SEAL_AGE_MS = 1000
FSYNC_WINDOW_MS = 500
MCU_BAUD = 115_200
GPS_BAUD = 9600
_OURS = ("aggregator.toml", "aggregator.db", "aggregator.db-wal", "aggregator.db-shm",
         "log.key", "log.vkey", "devices.json", "broker", "logs", "proofs")


def _q(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text)


@dataclass(frozen=True)
class GatewayFiles:
    """Where one simulated gateway's files are, and its device key."""

    name: str
    dir: Path
    signer: Signer

    @property
    def config(self) -> Path:
        """Its agent profile."""
        return self.dir / "agent.toml"

    @property
    def data_dir(self) -> Path:
        """Its agent's data directory."""
        return self.dir / "data"

    @property
    def mcu_link(self) -> Path:
        """The serial path of its BME280 bridge MCU (a symlink to a pty)."""
        return self.dir / "serial" / "usb-edgeledger_bme280-bridge-if00"

    @property
    def gps_link(self) -> Path:
        """The serial path of its GPS receiver (a symlink to a pty)."""
        return self.dir / "serial" / "usb-u-blox_GNSS_receiver-if00"


def prepare(directory: Path) -> Path:
    """Make `directory` (absolute) ready for a fresh run; refuse a foreign non-empty one."""
    root = directory.resolve()
    if root.exists() and not root.is_dir():
        raise DemoError(f"--dir {directory}: exists and is not a directory")
    if root.is_dir() and any(root.iterdir()) and not (root / MARKER).exists():
        raise DemoError(f"--dir {directory}: is not empty and was not made by the demo; "
                        "choose another --dir (the demo clears its directory on each run)")
    root.mkdir(parents=True, exist_ok=True)
    for name in _OURS:
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for gw in root.glob("gw-*"):
        if gw.is_dir() and not gw.is_symlink():
            shutil.rmtree(gw)
    (root / MARKER).write_text("made by `edgeledger demo`; it clears this directory on "
                               "each run\n")
    return root


def new_key(name: str, rng: random.Random, seeded: bool) -> Signer:
    """A fresh key from the OS's random source, or a repeatable one when seeded."""
    return Signer(name, rng.randbytes(32)) if seeded else Signer.generate(name)


def make_log_key(root: Path, rng: random.Random, seeded: bool) -> Signer:
    """The log's signer key in DIR/log.key (0600), made before the aggregator starts."""
    signer = new_key(LOG_ORIGIN, rng, seeded)
    write_signer(root / "log.key", signer)
    return signer


def make_gateway(root: Path, number: int, rng: random.Random, seeded: bool) -> GatewayFiles:
    """Gateway `gw-<number>`: its directory and its device key where its agent looks."""
    name = f"gw-{number}"
    gw = GatewayFiles(name, root / name, new_key(name, rng, seeded))
    gw.data_dir.mkdir(mode=0o700, parents=True)
    write_signer(key_path(gw.data_dir), gw.signer)
    return gw


def aggregator_toml(root: Path, broker: str, prefix: str, http: str) -> str:
    """The aggregator's configuration (edgeledger/aggregator/config.py)."""
    return f"""# Written by `edgeledger demo`.
[aggregator]
origin = {_q(LOG_ORIGIN)}
key_file = {_q(str(root / "log.key"))}

[store]
backend = "sqlite"
path = {_q(str(root / "aggregator.db"))}

[checkpoint]
interval_ms = {CHECKPOINT_MS}

[broker]
address = {_q(broker)}
prefix = {_q(prefix)}
client_id = "edgeledger-demo-aggregator"

[http]
listen = {_q(http)}
"""


def agent_toml(gw: GatewayFiles, broker: str, prefix: str, log_key: str) -> str:
    """Gateway `gw`'s profile: a framed BME280 bridge and an NMEA GPS, synced over MQTT."""
    return f"""# Written by `edgeledger demo`: serial sensors on pseudo-terminals the demo drives.
[device]
id = {_q(gw.name)}
data_dir = {_q(str(gw.data_dir))}

[journal]
fsync_window_ms = {FSYNC_WINDOW_MS}
quota_policy = "stop"

[sealing]
max_readings = 100
max_age_ms = {SEAL_AGE_MS}
heartbeat_ms = 60000
clock_jump_ms = 2000

[[sensors]]
type = "framed"
id = "bme280-1"
device = {_q(str(gw.mcu_link))}
baud = {MCU_BAUD}
ranges = {{ temperature = [-40.0, 85.0], humidity = [0.0, 100.0], pressure = [30000.0, 110000.0] }}

[[sensors]]
type = "nmea"
id = "gps-1"
device = {_q(str(gw.gps_link))}
baud = {GPS_BAUD}
ranges = {{ fix = {{ lat = [-90.0, 90.0], lon = [-180.0, 180.0], alt = [-500.0, 9000.0] }} }}

[sync]
broker = {_q(broker)}
prefix = {_q(prefix)}
log_key = {_q(log_key)}
window = 16
resend_ms = 5000
"""


def write_configs(root: Path, gateways: list[GatewayFiles], broker: str, prefix: str,
                  http: str, log_key: str) -> Path:
    """Write aggregator.toml and every gw-K/agent.toml; the aggregator file's path."""
    config = root / "aggregator.toml"
    config.write_text(aggregator_toml(root, broker, prefix, http))
    for gw in gateways:
        gw.config.write_text(agent_toml(gw, broker, prefix, log_key))
    return config


def enroll(config: Path, gateways: list[GatewayFiles]) -> None:
    """Enroll every gateway's key in the aggregator's store, as `edgeledger enroll` does."""
    store = open_store(load_aggregator_config(config))
    try:
        with store.transaction():
            for gw in gateways:
                now = time.time_ns() // 1_000_000
                key = gw.signer.public_key
                store.enroll(gw.name, key, now)
                store.add_event("enrolled", gw.name, None,
                                f"key {kid(key)} enrolled by edgeledger demo", now)
    finally:
        store.close()
