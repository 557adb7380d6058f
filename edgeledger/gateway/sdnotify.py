"""A small sd_notify(3): tell systemd we are ready, alive, and stopping.

Datagrams go to $NOTIFY_SOCKET (an AF_UNIX path, or with a leading '@' a name in
the abstract namespace). Without NOTIFY_SOCKET every call is a silent no-op, so
the agent runs the same outside systemd. A failed send is logged once and never
stops the agent: systemd's watchdog will notice a real hang on its own.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("edgeledger.sdnotify")


def socket_address(value: str) -> str | bytes:
    """The address to send to: a path, or (leading '@') an abstract name as bytes."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


class Notifier:
    """Sends notifications to systemd when it asked for them."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        target = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = socket_address(target) if target else None
        self.watchdog_seconds = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when systemd (or a test) gave us a socket to notify."""
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send `KEY=value` lines in one datagram; True if it was sent."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1, with an optional status line."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """STATUS=<text>: what `systemctl status` shows."""
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        """WATCHDOG=1: we are alive."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1."""
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None if not asked."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None  # meant for another process
    return int(usec) / 2_000_000
