"""The demo's child processes: Mosquitto, the aggregator and the agents, each with its log.

Theory of operation. Every child is a `Child`: one command, its stdout and stderr
appended to `DIR/logs/<name>.log` (read back for progress and for the tail shown
when it fails), in a process group of its own so that the terminal's Ctrl-C
reaches only the demo, which then stops the children in its own order. On Linux
each child also asks the kernel for SIGTERM when the demo dies (PR_SET_PDEATHSIG),
so not even a SIGKILLed demo leaves processes behind; every other exit path goes
through `Child.kill`.

The children are the real programs: `mosquitto -c CONF` and `edgeledger aggregator`
/ `edgeledger agent` run by the Python that runs the demo (`python -m edgeledger`
when the package has a `__main__`, else the `edgeledger` script installed next to
that Python).
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from edgeledger.core.errors import EX_CONFIG, EdgeLedgerError

APT_LINE = "sudo apt-get install -y mosquitto"
HOST = "127.0.0.1"
TAIL_LINES = 15
PR_SET_PDEATHSIG = 1


class DemoError(EdgeLedgerError):
    """The demo cannot go on: a child failed, a tool is missing, a wait timed out."""


# Run before the child's program, in the child: ask Linux for SIGTERM when the demo
# dies (PR_SET_PDEATHSIG survives exec), give up if the demo is already gone, then
# exec the program itself. A Popen preexec_fn would do the same between fork and
# exec, where other threads' locks make Python code unsafe.
_LAUNCH = ("import ctypes, os, sys\n"
           "try:\n"
           f"    ctypes.CDLL(None, use_errno=True).prctl({PR_SET_PDEATHSIG}, "
           f"{int(signal.SIGTERM)})\n"
           "except (OSError, AttributeError):\n"
           "    pass\n"
           "if os.getppid() != int(sys.argv[1]):\n"
           "    sys.exit(1)\n"
           "os.execvp(sys.argv[2], sys.argv[2:])\n")


def launched(cmd: list[str]) -> list[str]:
    """`cmd` behind the launcher that ties its life to this process's (on Linux)."""
    if not sys.platform.startswith("linux"):
        return cmd
    return [sys.executable, "-c", _LAUNCH, str(os.getpid()), *cmd]


class Child:
    """One child process and its log file."""

    def __init__(self, name: str, cmd: list[str], log_path: Path) -> None:
        self.name, self.cmd, self.log_path = name, cmd, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.terminated = False

    def start(self) -> None:
        """Start it, appending its stdout and stderr to its log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(launched(self.cmd), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, process_group=0)

    @property
    def pid(self) -> int | None:
        """Its process id once started."""
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        """True while the process exists."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Its exit status, once it has exited (negative: killed by that signal)."""
        return None if self.proc is None else self.proc.poll()

    def terminate(self) -> None:
        """SIGTERM, once: the clean stop every one of our children understands.

        Never twice: a child that has finished its clean stop restores the default
        handler, and a second SIGTERM would then kill it on its way out.
        """
        if self.running and not self.terminated:
            assert self.proc is not None
            self.terminated = True
            self.proc.terminate()

    def wait(self, timeout: float) -> int | None:
        """Its exit status, or None if it is still running after `timeout` seconds."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL; the exit status (None if never run)."""
        if self.proc is None:
            return None
        self.terminate()
        status = self.wait(timeout)
        if status is None:
            self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL and reap it, if it is still running."""
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)

    def log_text(self) -> str:
        """Everything it logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of its log, indented, for an error message."""
        last = self.log_text().splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in last) or "    (it logged nothing)"

    def describe_exit(self) -> str:
        """`<name> exited with N (meaning)`, with the tail of its log."""
        code = self.returncode
        if code is None:
            what = "is still running"
        elif code < 0:
            what = f"was killed by {signal.Signals(-code).name}"
        elif code == EX_CONFIG:
            what = f"exited with {code} (configuration error)"
        else:
            what = f"exited with {code}"
        return f"{self.name} {what}; the end of {self.log_path}:\n{self.tail()}"

    def wait_for(self, needle: str, timeout: float) -> None:
        """Block until `needle` appears in its log; DemoError if it exits or time runs out."""
        deadline = time.monotonic() + timeout
        while needle not in self.log_text():
            if not self.running:
                raise DemoError(self.describe_exit())
            if time.monotonic() > deadline:
                raise DemoError(f"{self.name} did not log {needle!r} within {timeout:g} s; "
                                f"the end of {self.log_path}:\n{self.tail()}")
            time.sleep(0.1)


# --- the programs -----------------------------------------------------------------------

def edgeledger_command() -> list[str]:
    """How to run `edgeledger` with the Python that runs this demo."""
    if importlib.util.find_spec("edgeledger.__main__") is not None:
        return [sys.executable, "-m", "edgeledger"]
    script = Path(sys.executable).with_name("edgeledger")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "import sys; from edgeledger.cli import main; "
                                  "sys.exit(main())"]


def find_mosquitto() -> str:
    """The mosquitto binary (often in /usr/sbin, which is not on a user's PATH)."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
         if os.access(p, os.X_OK)), None)
    if found is None:
        raise DemoError(f"mosquitto is not installed; run: {APT_LINE}  (or pass --broker "
                        "HOST:PORT to use a broker you have)")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def split_address(address: str, what: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) as (host, port); DemoError naming `what` otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DemoError(f"{what} {address!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def probe_http(address: str, attempts: int = 3) -> tuple[str, int | None]:
    """The aggregator's `/v1/log` URL at `address`, and the log size if it answers there."""
    host, port = split_address(address, "--http")
    host = HOST if host in ("0.0.0.0", "") else host
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/v1/log"
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                size = json.loads(response.read()).get("size")
            return url, size if isinstance(size, int) else -1
        except (OSError, ValueError, AttributeError):  # URLError is an OSError
            time.sleep(0.5)
    return url, None


def listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
        return True
    return False


def broker_config(port: int) -> str:
    """A Mosquitto configuration: loopback only, anonymous, nothing persisted."""
    lines = [f"listener {port} {HOST}", "allow_anonymous true", "persistence false",
             "set_tcp_nodelay true",
             "log_dest stderr", "log_type error", "log_type warning", "log_type notice",
             "log_type information", "log_timestamp true", "connection_messages true"]
    if os.geteuid() == 0:
        # Started as root, Mosquitto would switch to user "mosquitto"; stay who we are.
        lines.append(f"user {getpass.getuser()}")
    return "\n".join(lines) + "\n"


def start_broker(workdir: Path, log_path: Path, attempts: int = 3,
                 timeout: float = 10.0) -> tuple[Child, int]:
    """Our own Mosquitto on a free loopback port; the child and its port.

    The port is found by binding port 0 and released before Mosquitto binds it, so
    another program may take it in between: then Mosquitto exits and we try again.
    """
    binary = find_mosquitto()
    conf = workdir / "mosquitto.conf"
    last = ""
    for _ in range(attempts):
        port = free_port()
        conf.write_text(broker_config(port))
        child = Child("mosquitto", [binary, "-c", str(conf)], log_path)
        child.start()
        deadline = time.monotonic() + timeout
        while child.running and time.monotonic() < deadline:
            if listening(HOST, port):
                return child, port
            time.sleep(0.05)
        last = child.describe_exit()
        child.kill()
    raise DemoError(f"could not start mosquitto: {last}")
