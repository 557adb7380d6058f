"""A real Mosquitto broker for tests, on a free loopback port, that a test can cut.

Theory of operation: every broker is its own `mosquitto -c <conf>` process with a
generated configuration in a temporary directory, listening on 127.0.0.1 only, on a
port found by binding port 0. The port is kept across `stop()`/`start()` so clients
can reconnect to the same address. Faults are real process signals: `stop()` is
SIGTERM (a clean shutdown; the broker saves its database when persistence is on),
`kill()` is SIGKILL (nothing saved), `pause()`/`resume()` are SIGSTOP/SIGCONT (the
kernel still accepts TCP connections and buffers bytes, but nothing answers).

Options a test can ask for (through the `mosquitto_factory` fixture):
- `persistence=True`: sessions, queued QoS 1 messages and retained messages survive a
  `stop()`/`start()` (the database lives in the broker's temporary directory);
- `users={"name": "password"}`: anonymous clients are refused, the password file is
  made with `mosquitto_passwd` (it ships in the mosquitto package);
- `acl="..."`: an ACL file's text (see docs/mosquitto/edgeledger.acl);
- `tls=TlsFiles(...)`: the listener speaks TLS with this server certificate.

The broker's log (connections, refusals, ACL denials) is in `broker.log_text()`; the
fixtures print its tail at teardown, which pytest shows when a test fails.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgeledger.core.errors import EdgeLedgerError
from edgeledger.demo import processes as demo_processes
from edgeledger.demo.processes import free_port

APT_LINE = "sudo apt-get install -y mosquitto"
HOST = "127.0.0.1"


def find_mosquitto() -> str:
    """The mosquitto binary (edgeledger.demo's lookup), or the test fails saying what to run."""
    try:
        return demo_processes.find_mosquitto()
    except EdgeLedgerError:
        pytest.fail(f"mosquitto is not installed; run: {APT_LINE}", pytrace=False)


def find_mosquitto_passwd() -> str:
    """mosquitto_passwd, which makes password files; same Debian package."""
    found = shutil.which("mosquitto_passwd") or (
        "/usr/bin/mosquitto_passwd" if os.access("/usr/bin/mosquitto_passwd", os.X_OK) else None
    )
    if found is None:
        pytest.fail(f"mosquitto_passwd is not installed; run: {APT_LINE}", pytrace=False)
    return found


@dataclass(frozen=True)
class TlsFiles:
    """A CA and a server certificate for a TLS listener (and a client cert if wanted)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    client_cert_file: Path | None = None
    client_key_file: Path | None = None


def make_tls_files(directory: Path, client_cn: str | None = None) -> TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1 and, if asked, a client one.

    Made with the openssl command line (Debian: openssl), valid for one day.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed; run: sudo apt-get install -y openssl", pytrace=False)
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=edgeledger test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def leaf(name: str, cn: str, extfile: bool) -> None:
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={cn}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        extra = ["-extfile", "san.ext"] if extfile else []
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            f"{name}.crt",
            *extra,
        )

    leaf("server", "127.0.0.1", True)
    if client_cn is not None:
        leaf("client", client_cn, False)
    return TlsFiles(
        ca_file=directory / "ca.crt",
        cert_file=directory / "server.crt",
        key_file=directory / "server.key",
        client_cert_file=directory / "client.crt" if client_cn else None,
        client_key_file=directory / "client.key" if client_cn else None,
    )


class Mosquitto:
    """One broker process and its configuration; start it with `start()`."""

    def __init__(
        self,
        workdir: Path,
        *,
        persistence: bool = False,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        tls: TlsFiles | None = None,
        require_client_cert: bool = False,
    ) -> None:
        self.host = HOST
        self.port = free_port()
        self.workdir = workdir
        self.persistence = persistence
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = workdir / "mosquitto.log"
        self.conf_path = workdir / "mosquitto.conf"
        self.conf_path.write_text(self._config(users, acl, tls, require_client_cert))

    @property
    def address(self) -> str:
        """host:port, as error messages and `--broker` write it."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running broker's process id, or None when it is not running."""
        return self._proc.pid if self.running and self._proc else None

    @property
    def running(self) -> bool:
        """True while the process exists (paused counts as running)."""
        return self._proc is not None and self._proc.poll() is None

    def _config(
        self,
        users: dict[str, str] | None,
        acl: str | None,
        tls: TlsFiles | None,
        require_cert: bool,
    ) -> str:
        lines = [
            f"listener {self.port} {HOST}",
            "set_tcp_nodelay true",  # as docs/mosquitto/mosquitto.conf: no Nagle delays
            # Mosquitto started as root drops to user "mosquitto", which could not read
            # this directory; stay the user who runs the tests.
            f"user {getpass.getuser()}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp true",
            "connection_messages true",
            f"persistence {'true' if self.persistence else 'false'}",
        ]
        if self.persistence:
            lines += [f"persistence_location {self.workdir}/", "autosave_interval 1"]
        if users is None:
            lines.append("allow_anonymous true")
        else:
            passwd = self.workdir / "passwd"
            passwd.touch(mode=0o600)
            for name, password in users.items():
                subprocess.run(
                    [find_mosquitto_passwd(), "-b", str(passwd), name, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        if acl is not None:
            acl_path = self.workdir / "acl"
            acl_path.write_text(acl)
            lines.append(f"acl_file {acl_path}")
        if tls is not None:
            lines += [
                f"cafile {tls.ca_file}",
                f"certfile {tls.cert_file}",
                f"keyfile {tls.key_file}",
            ]
            if require_cert:
                lines += ["require_certificate true", "use_identity_as_username true"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and return once its port accepts connections."""
        if self.running:
            raise RuntimeError(f"mosquitto on {self.address} is already running")
        log = self._log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [find_mosquitto(), "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto on {self.address} exited with {self._proc.returncode}:\n"
                    + self.log_text()[-2000:]
                )
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.2):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"mosquitto on {self.address} did not listen within {timeout} s")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down cleanly (SIGTERM) and wait; a paused broker is resumed first."""
        if not self.running:
            return
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)
        self._proc.terminate()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """Cut the broker dead (SIGKILL): nothing is saved, sockets are reset."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def restart(self, *, hard: bool = False) -> None:
        """stop() (or kill() if hard) and start() again on the same port."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nobody answers."""
        assert self._proc is not None and self.running, "pause() needs a running broker"
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused broker (SIGCONT)."""
        assert self._proc is not None and self.running, "resume() needs a running broker"
        self._proc.send_signal(signal.SIGCONT)

    def log_text(self) -> str:
        """Everything the broker logged so far, across restarts."""
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@contextlib.contextmanager
def running_broker(**options: Any) -> Iterator[Mosquitto]:
    """A started broker in its own temporary directory, stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="edgeledger-mosquitto-") as tmp:
        broker = Mosquitto(Path(tmp), **options)
        broker.start()
        try:
            yield broker
        finally:
            broker.kill()


def _print_logs(brokers: list[Mosquitto]) -> None:
    # Captured like any test output: pytest shows it only when the test fails.
    for broker in brokers:
        print(f"--- mosquitto {broker.address} log (tail) ---\n{broker.log_text()[-4000:]}")


@pytest.fixture
def mosquitto_factory() -> Iterator[Callable[..., Mosquitto]]:
    """Start brokers with options (persistence, users, acl, tls); all killed at the end."""
    stack = contextlib.ExitStack()
    brokers: list[Mosquitto] = []

    def make(**options: Any) -> Mosquitto:
        broker = stack.enter_context(running_broker(**options))
        brokers.append(broker)
        return broker

    with stack:
        yield make
        _print_logs(brokers)


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A fresh anonymous broker, persistence off, that this test may stop, kill or pause."""
    return mosquitto_factory()


@pytest.fixture(scope="session")
def mosquitto_session() -> Iterator[Mosquitto]:
    """One anonymous broker shared by the session: do not stop, kill or pause it."""
    with running_broker() as broker:
        yield broker
