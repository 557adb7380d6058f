"""The networked demo, start to finish: broker, aggregator, agents, devices, then proofs.

Theory of operation. The demo is a conductor, never a stand-in: every party is the
real program in its own process, talking MQTT through a real broker, and the
sensors are real serial streams on pseudo-terminals. The demo starts them in
dependency order, watches them, and stops them in the order that loses nothing:

1. the simulated devices stop sending;
2. drain: each agent seals its open block (max_age_ms) and sends it; we wait until
   every gateway's acked height (its state.json) equals its sealed tip;
3. the agents get SIGTERM (they seal anything left and flush) and exit 0;
4. we wait until the aggregator's store holds each gateway's last block;
5. the aggregator gets SIGTERM (it signs a final checkpoint if the log grew);
6. our broker (if we started one) gets SIGTERM.

Then the outputs are built from what is on disk (bundles.py). A child that exits
early, a configuration error, a wait that times out: the demo says which child and
shows the end of its log, stops the rest and exits non-zero. A first Ctrl-C or
SIGTERM ends the run early but still stops cleanly and writes the outputs; a second
one kills everything at once. Whatever happens, no child outlives `run()`.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import signal
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.core.errors import EdgeLedgerError
from edgeledger.core.note import Signer
from edgeledger.demo import workdir
from edgeledger.demo.bundles import shown, summary, write_outputs
from edgeledger.demo.devices import DeviceRunner, PtyPort, SimulatedGps, SimulatedMcu
from edgeledger.demo.processes import (
    HOST,
    Child,
    DemoError,
    edgeledger_command,
    listening,
    probe_http,
    split_address,
    start_broker,
)
from edgeledger.demo.progress import GatewayStatus, LogTail, Monitor, View, clear_retained
from edgeledger.demo.workdir import GatewayFiles
from edgeledger.sync.topics import DEFAULT_PREFIX, checkpoint_topic

START_S = 30.0      # for the aggregator and each agent to say they are running
DRAIN_S = 20.0      # for every block to be acked once the devices are quiet
STOP_S = 20.0       # for a child to exit after SIGTERM
TRACK_ORIGIN = (53.5461, 9.9661)  # the simulated vehicles start near the port of Hamburg


@dataclass
class DemoOptions:
    """What `edgeledger demo` was asked to do."""

    gateways: int = 3
    seconds: float = 60
    dir: Path = Path("demo-out")
    http: str = "127.0.0.1:8080"
    broker: str | None = None
    seed: int | None = None
    prefix: str | None = None
    """MQTT topic prefix; default edgeledger/v1 on our own broker, a per-run one on --broker."""


class Demo:
    """One run of the demo; see the module docstring."""

    def __init__(self, opts: DemoOptions, out: TextIO) -> None:
        self.opts, self.out = opts, out
        self.rng = random.Random(opts.seed)
        self.seeded = opts.seed is not None
        self.root = Path()
        self.children: list[Child] = []
        self.agents: dict[str, Child] = {}
        self.broker: Child | None = None
        self.aggregator: Child | None = None
        self.devices = DeviceRunner()
        self.gateways: list[GatewayFiles] = []
        self.monitor: Monitor | None = None
        self.view = View(out)
        self.log_signer: Signer | None = None
        self.broker_address = ""
        self.prefix = DEFAULT_PREFIX
        self.http_answer: str | None = None
        self.problems: list[str] = []
        self.stop_reason: str | None = None
        self.wake = threading.Event()

    # --- the whole run -------------------------------------------------------------------

    def run(self) -> int:
        """Run, stop cleanly, write the outputs; the exit status."""
        restore = self._install_signals()
        try:
            self.setup()
            self.loop()
            self.shutdown()
            return self.results()
        except EdgeLedgerError:
            self._abort()
            raise
        except KeyboardInterrupt:
            self.say("\ninterrupted again: killing every process of the demo")
            return 130
        finally:
            self.devices.close()
            if self.monitor is not None:
                with contextlib.suppress(EdgeLedgerError):
                    self.monitor.close()
            for child in reversed(self.children):
                child.kill()
            restore()

    def _abort(self) -> None:
        """After a failure: devices off, then SIGTERM to each child, newest first, briefly."""
        self.devices.stop()
        for child in reversed(self.children):
            child.stop(5)

    def say(self, text: str) -> None:
        """A line above the live view."""
        self.view.message(text)

    def _install_signals(self) -> Callable[[], None]:
        """First SIGINT/SIGTERM/SIGHUP: stop cleanly; the second: KeyboardInterrupt."""
        def handler(signum: int, frame: FrameType | None) -> None:
            if self.stop_reason is not None:
                raise KeyboardInterrupt
            self.stop_reason = signal.Signals(signum).name
            self.wake.set()

        old: dict[int, Any] = {}
        with contextlib.suppress(ValueError):  # not the main thread: no handlers
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                old[sig] = signal.signal(sig, handler)

        def restore() -> None:
            for sig, previous in old.items():
                signal.signal(sig, previous)
        return restore

    # --- starting ------------------------------------------------------------------------

    def setup(self) -> None:
        """Directory, keys, configs, enrollment; then broker, aggregator, agents, devices."""
        opts = self.opts
        split_address(opts.http, "--http")
        if opts.broker is not None:
            split_address(opts.broker, "--broker")
        self.root = workdir.prepare(opts.dir)
        length = f"{opts.seconds:g} s" if opts.seconds else "until Ctrl-C"
        self.say(f"edgeledger demo: {opts.gateways} gateways, {length}, in {shown(self.root)}")
        self.log_signer = workdir.make_log_key(self.root, self.rng, self.seeded)
        self.gateways = [workdir.make_gateway(self.root, k, self.rng, self.seeded)
                         for k in range(1, opts.gateways + 1)]
        self._start_broker()
        config = workdir.write_configs(self.root, self.gateways, self.broker_address,
                                       self.prefix, opts.http,
                                       self.log_signer.verifier().text())
        workdir.enroll(config, self.gateways)
        self._start_aggregator(config)
        self._start_agents()
        host, port = split_address(self.broker_address, "--broker")
        self.monitor = Monitor(host, port, self.prefix, self.log_signer.verifier(),
                               [GatewayStatus(gw.name, LogTail(self.agents[gw.name].log_path),
                                              gw.data_dir / "state.json")
                                for gw in self.gateways])
        try:
            self.monitor.start()
        except EdgeLedgerError as exc:
            raise DemoError(f"the progress view cannot subscribe at {self.broker_address}: "
                            f"{exc}") from exc
        self.devices.start()
        self._probe_http()

    def _start(self, child: Child) -> Child:
        self.children.append(child)
        child.start()
        return child

    def _start_broker(self) -> None:
        logs = self.root / "logs"
        if self.opts.broker is not None:
            host, port = split_address(self.opts.broker, "--broker")
            if not listening(host, port):
                raise DemoError(f"--broker {self.opts.broker}: nothing accepts connections there")
            self.broker_address = self.opts.broker
            self.prefix = self.opts.prefix or f"edgeledger-demo/{secrets.token_hex(4)}"
            self.say(f"  broker: {self.broker_address} (given), topic prefix {self.prefix}")
            return
        (self.root / "broker").mkdir()
        child, port = start_broker(self.root / "broker", logs / "mosquitto.log")
        self.broker = child
        self.children.append(child)
        self.broker_address = f"{HOST}:{port}"
        self.prefix = self.opts.prefix or DEFAULT_PREFIX
        self.say(f"  broker: mosquitto pid {child.pid} on {self.broker_address}")

    def _start_aggregator(self, config: Path) -> None:
        cmd = [*edgeledger_command(), "aggregator", "--config", str(config)]
        self.aggregator = self._start(Child("aggregator", cmd,
                                            self.root / "logs" / "aggregator.log"))
        self.aggregator.wait_for("aggregator running", START_S)
        self.say(f"  aggregator: pid {self.aggregator.pid}, log {workdir.LOG_ORIGIN}, store "
                 f"{shown(self.root / 'aggregator.db')}")

    def _start_agents(self) -> None:
        """Each gateway's devices (powered on later) on new ptys, then its agent, at debug
        level: its `durable` and `sealed block` lines feed the live view."""
        for gw in self.gateways:
            mcu, gps = PtyPort(gw.mcu_link), PtyPort(gw.gps_link)
            self.devices.attach(f"{gw.name} mcu", SimulatedMcu("bme280-1", self.rng), mcu)
            self.devices.attach(f"{gw.name} gps", SimulatedGps.near(*TRACK_ORIGIN, self.rng),
                                gps)
            cmd = [*edgeledger_command(), "agent", "--config", str(gw.config), "--data-dir",
                   str(gw.data_dir), "--log-level", "debug"]
            agent = self._start(Child(gw.name, cmd, self.root / "logs" / f"{gw.name}.log"))
            self.agents[gw.name] = agent
            self.say(f"  {gw.name}: agent pid {agent.pid}; BME280 bridge (framed) on "
                     f"{mcu.tty_path}, GPS (NMEA 0183) on {gps.tty_path}")
        for gw in self.gateways:
            self.agents[gw.name].wait_for(f"agent {gw.name} running", START_S)

    def _probe_http(self) -> None:
        """Say whether the aggregator's HTTP API answers at --http (it lands with issue 7)."""
        url, size = probe_http(self.opts.http)
        if size is not None:
            self.http_answer = url
            self.say(f"  HTTP API: {url} answers (log size {size})")
        else:
            self.say(f"  HTTP API: nothing answers at {url} yet (the aggregator's HTTP API "
                     "lands with issue 7)")

    # --- running -------------------------------------------------------------------------

    def check_children(self, gone: Collection[str] = ()) -> None:
        """DemoError naming the first child that exited when it should not have."""
        for child in self.children:
            if child.name not in gone and not child.running:
                raise DemoError(child.describe_exit())

    def refresh(self, phase: str, force: bool = False) -> None:
        """Read what the system published and redraw."""
        assert self.monitor is not None
        self.monitor.refresh()
        self.view.show(self.monitor, phase, force)

    def loop(self) -> None:
        """Run for --seconds (0: until a signal), refreshing the view about once a second."""
        end = time.monotonic() + self.opts.seconds
        while self.stop_reason is None and (self.opts.seconds == 0 or time.monotonic() < end):
            self.check_children()
            self.refresh("running")
            self.wake.wait(min(1.0, max(0.05, end - time.monotonic())) if self.opts.seconds
                           else 1.0)
        if self.stop_reason is not None:
            self.say(f"{self.stop_reason}: stopping cleanly (again to kill everything)")
        self.refresh("running", force=True)

    # --- stopping ------------------------------------------------------------------------

    def _wait(self, what: str, done: Callable[[], bool], timeout: float,
              phase: str, gone: Collection[str] = ()) -> bool:
        """Poll `done` (refreshing the view) until it holds; False (a problem) on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_children(gone)
            self.refresh(phase)
            if done():
                return True
            if time.monotonic() > deadline:
                self.problems.append(f"{what}: not done within {timeout:g} s")
                return False
            time.sleep(0.2)

    def shutdown(self) -> None:
        """Stop devices, drain, stop agents, let the log catch up, stop aggregator, broker."""
        assert self.monitor is not None and self.aggregator is not None
        monitor = self.monitor
        self.devices.stop()
        quiet_at = time.monotonic() + (workdir.SEAL_AGE_MS + 2 * workdir.FSYNC_WINDOW_MS) / 1000
        gws = list(monitor.gateways.values())
        self._wait("drain (every sealed block acked)",
                   lambda: time.monotonic() > quiet_at and all(
                       g.sealed is not None and g.acked == g.sealed for g in gws),
                   DRAIN_S, "draining")
        for child in self.agents.values():
            child.terminate()
        gone = set(self.agents)
        for child in self.agents.values():
            status = child.stop(STOP_S)
            if status != 0:
                self.problems.append(child.describe_exit())
        self.refresh("stopping", force=True)
        self._wait("the log holding every gateway's last block", self._log_caught_up,
                   DRAIN_S, "stopping", gone)
        monitor.close()
        status = self.aggregator.stop(STOP_S)
        if status != 0:
            self.problems.append(self.aggregator.describe_exit())
        self._clear_retained()
        if self.broker is not None:
            self.broker.stop(STOP_S)

    def _log_caught_up(self) -> bool:
        """Whether the store's next height for each gateway is past its sealed tip."""
        assert self.monitor is not None
        store = SqliteStore(self.root / "aggregator.db")
        try:
            for gw in self.monitor.gateways.values():
                device = store.device(gw.name)
                if device is None or gw.sealed is None or device.next_height <= gw.sealed:
                    return False
            return True
        finally:
            store.close()

    def _clear_retained(self) -> None:
        """On a broker that is not ours, leave no retained message of this run behind."""
        if self.opts.broker is None:
            return
        topics = [checkpoint_topic(self.prefix),
                  *(f"{self.prefix}/dev/{gw.name}/state" for gw in self.gateways)]
        try:
            clear_retained(*split_address(self.broker_address, "--broker"), topics)
        except EdgeLedgerError as exc:
            self.problems.append(f"could not clear the retained messages under {self.prefix}/ "
                                 f"on {self.broker_address}: {exc}")

    # --- the outputs ---------------------------------------------------------------------

    def results(self) -> int:
        """Write and verify the outputs, print the summary; 0, or 1 if anything went wrong."""
        assert self.log_signer is not None and self.monitor is not None
        cp, written = write_outputs(self.root, self.root / "aggregator.db", self.log_signer,
                                    self.gateways, self.rng)
        self.say("")
        for line in summary(self.root, list(self.monitor.gateways.values()), cp, written):
            self.say(line)
        if self.http_answer is None:
            self.say(f"(no HTTP API answered at {self.opts.http}: it lands with issue 7)")
        for problem in self.problems:
            self.say(f"problem: {problem}")
        return 1 if self.problems else 0
