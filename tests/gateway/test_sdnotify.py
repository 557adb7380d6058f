"""sd_notify over a real AF_UNIX datagram socket, by path and in the abstract namespace."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeledger.gateway.sdnotify import Notifier, socket_address


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[socket.socket,
                                                                                str]]:
    """A bound datagram socket and the NOTIFY_SOCKET value that names it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        name = str(tmp_path / "notify.sock")
        sock.bind(name)
    else:
        name = f"@edgeledger-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name[1:].encode())
    sock.settimeout(2)
    yield sock, name
    sock.close()


def test_messages_arrive(listener: tuple[socket.socket, str]) -> None:
    sock, name = listener
    notifier = Notifier({"NOTIFY_SOCKET": name})
    assert notifier.enabled
    assert notifier.ready("recording")
    assert sock.recv(4096) == b"READY=1\nSTATUS=recording"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.status("tip 3")
    assert sock.recv(4096) == b"STATUS=tip 3"
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    notifier.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready() and not notifier.watchdog() and not notifier.stopping()
    assert notifier.watchdog_seconds is None


def test_a_missing_socket_is_not_fatal(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.ready() is False
    assert notifier.watchdog() is False


@pytest.mark.parametrize(("env", "seconds"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "400000"}, 0.2),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "x"}, None),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(env: dict[str, str],
                                                    seconds: float | None) -> None:
    assert Notifier(env).watchdog_seconds == seconds


def test_socket_address() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abc") == b"\0abc"
