"""The processes of a sync run: the broker, the real aggregator, the load generators,
and the subscriber that watches checkpoints arrive.

Theory of operation. Everything talks over loopback TCP to one Mosquitto: ours, on
a free 127.0.0.1 port (its configuration as docs/mosquitto/mosquitto.conf has it for
queues: max_queued_messages 10000), unless `--broker HOST:PORT` names one. The
aggregator is `edgeledger aggregator --config FILE`, a separate process with a
fresh SQLite store in a temporary directory per run, its devices enrolled in the
store before it starts; we wait for its `aggregator running` log line. Each run
uses its own topic prefix and client ids, so no retained checkpoint or broker
session of one run leaks into the next (on a broker not ours, both are cleared
afterwards).
"""

from __future__ import annotations

import contextlib
import cProfile
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from benchmarks.sync.fleet import checkpoint_size, device_id, device_signer
from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.core.errors import EdgeLedgerError
from edgeledger.demo import processes as demo_processes
from edgeledger.demo.processes import free_port
from edgeledger.sync.mqtt import MqttTransport, Received
from edgeledger.sync.topics import checkpoint_topic

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


def find_mosquitto() -> str:
    """The mosquitto binary (edgeledger.demo's lookup); exits saying what to install."""
    try:
        return demo_processes.find_mosquitto()
    except EdgeLedgerError as exc:
        raise SystemExit(str(exc)) from exc


class Broker:
    """Our own Mosquitto on a free loopback port, or an existing one at `address`."""

    def __init__(self, workdir: Path, address: str | None = None) -> None:
        self.external = address is not None
        self.proc: subprocess.Popen[bytes] | None = None
        if address is not None:
            host, _, port = address.rpartition(":")
            self.host, self.port = host.strip("[]"), int(port)
            return
        self.host, self.port = LOOPBACK, free_port()
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text("\n".join([
            f"listener {self.port} {LOOPBACK}", "allow_anonymous true", "persistence false",
            "set_tcp_nodelay true",
            "max_queued_messages 10000", "log_dest stderr", "log_type error",
            "log_type warning", ""]))

    @property
    def address(self) -> str:
        """HOST:PORT."""
        return f"{self.host}:{self.port}"

    def version(self) -> str:
        """Our broker's version line (`mosquitto -h`), or "external"."""
        if self.external:
            return "external"
        out = subprocess.run([find_mosquitto(), "-h"], capture_output=True, text=True,
                             check=False).stdout
        return out.splitlines()[0] if out else "unknown"

    @property
    def pid(self) -> int | None:
        """Our broker's process id (None for an external one)."""
        return None if self.proc is None else self.proc.pid

    def start(self) -> None:
        """Start our broker (if ours) and wait until it accepts connections."""
        if not self.external:
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen([find_mosquitto(), "-c", str(self.conf)],
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1):
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise SystemExit(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"no MQTT broker answers on {self.address}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop our broker (an external one is left alone)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def edgeledger_command() -> list[str]:
    """The installed `edgeledger` program next to this Python (the venv's console script)."""
    script = Path(sys.executable).parent / "edgeledger"
    if script.exists():
        return [str(script)]
    found = shutil.which("edgeledger")
    if found is None:
        raise SystemExit("the edgeledger command is not installed (see the README)")
    return [found]


class Aggregator:
    """`edgeledger aggregator --config FILE` on a fresh store with `devices` enrolled.

    With a `profiler` (cProfile, the --profile fallback) the same server code,
    edgeledger.aggregator.server.AggregatorServer, runs on a thread of this process.
    """

    def __init__(self, workdir: Path, broker: Broker, prefix: str, devices: int,
                 interval_ms: int, every_blocks: int,
                 profiler: cProfile.Profile | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.prefix = workdir, prefix
        self.client_id = f"bench-agg-{prefix.replace('/', '-')}"
        self.store = workdir / "aggregator.db"
        self.config = workdir / "aggregator.toml"
        self.config.write_text(f"""\
[aggregator]
origin = "bench.edgeledger.example/sync"
key_file = "{workdir / 'log.key'}"
max_skew_ms = 604800000

[store]
path = "{self.store}"

[checkpoint]
interval_ms = {interval_ms}
every_blocks = {every_blocks}

[broker]
address = "{broker.address}"
prefix = "{prefix}"
client_id = "{self.client_id}"

[http]
listen = "{LOOPBACK}:{free_port()}"
""")
        store = SqliteStore(self.store)
        now = time.time_ns() // 1_000_000
        with store.transaction():
            for i in range(devices):
                store.enroll(device_id(i), device_signer(i).public_key, now)
        store.close()
        self.lines: list[str] = []
        self._running = threading.Event()
        self.proc: subprocess.Popen[str] | None = None
        self.profiler = profiler
        self._here: tuple[Any, threading.Thread] | None = None  # (AggregatorServer, thread)

    def start(self, timeout: float = 30.0) -> int:
        """Start the process; return its pid once it logs `aggregator running`."""
        if self.profiler is not None:
            return self._start_here(self.profiler, timeout)
        self.proc = subprocess.Popen([*edgeledger_command(), "aggregator", "--config",
                                      str(self.config)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._running.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("the aggregator did not start:\n" + "\n".join(self.lines[-20:]))
        return self.proc.pid

    def _start_here(self, profiler: cProfile.Profile, timeout: float) -> int:
        from edgeledger.aggregator.config import load_aggregator_config, open_store
        from edgeledger.aggregator.server import AggregatorServer

        made: list[AggregatorServer] = []

        def serve() -> None:  # the store must be opened on the thread that uses it
            config = load_aggregator_config(self.config)
            made.append(AggregatorServer(config, open_store(config)))
            profiler.runcall(made[0].run)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not made or made[0].transport is None:  # set once connected and subscribed
            if not thread.is_alive() or time.monotonic() > deadline:
                raise SystemExit("the in-process aggregator did not start")
            time.sleep(0.01)
        self._here = (made[0], thread)
        return os.getpid()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if "aggregator running" in line:
                self._running.set()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (drain, exit 0 by contract); its exit status (None if it had to be killed)."""
        if self._here is not None:
            server, thread = self._here
            server.stop.set()
            thread.join(timeout)
            return None if thread.is_alive() else 0
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode


def forget_session(broker: Broker, client_id: str) -> None:
    """End the broker-side session `client_id` left behind (the aggregator's is persistent):
    on a broker that is not ours, it would otherwise hold its subscriptions for days."""
    with contextlib.suppress(Exception):
        transport = MqttTransport(broker.host, broker.port, client_id, protocol="5",
                                  clean_start=True, session_expiry=0)
        transport.connect(5)
        transport.close()


class CheckpointWatch:
    """A subscriber to `<p>/checkpoint`: when each checkpoint arrived, and its tree size."""

    def __init__(self, broker: Broker, prefix: str) -> None:
        self.arrivals: list[tuple[float, int]] = []
        self.topic = checkpoint_topic(prefix)
        self._transport = MqttTransport(broker.host, broker.port,
                                        f"bench-cp-{prefix.replace('/', '-')}", protocol="5",
                                        clean_start=True, session_expiry=0, on_event=self._event)
        self._transport.connect()
        self._transport.subscribe([self.topic])

    def _event(self, event: object) -> None:
        if isinstance(event, Received) and event.topic == self.topic and event.payload:
            self.arrivals.append((time.time(), checkpoint_size(event.payload.decode())))

    def close(self) -> None:
        """Clear the retained checkpoint of this run's prefix and disconnect."""
        with contextlib.suppress(Exception):
            self._transport.publish(self.topic, b"", 1, retain=True, timeout=5)
        self._transport.close()


class LoadGen:
    """One load-generator child (benchmarks.sync.loadgen), driven by JSON lines."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.sync.loadgen"],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def send(self, cmd: dict[str, Any]) -> None:
        """Send one command."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def answer(self) -> dict[str, Any]:
        """The next answer line; SystemExit if the child died."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"a load generator exited ({self.proc.wait()})")
        out: dict[str, Any] = json.loads(line)
        return out

    def close(self) -> None:
        """Ask the child to quit, and wait."""
        with contextlib.suppress(OSError, ValueError):
            self.send({"cmd": "quit"})
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def load_generators(count: int) -> Iterator[list[LoadGen]]:
    """`count` load-generator children, closed at the end."""
    gens = [LoadGen() for _ in range(count)]
    try:
        yield gens
    finally:
        for gen in gens:
            gen.close()
