"""Shared serial fixtures: pseudo-terminals standing in for USB serial devices.

A `PtyDevice` is the device end (the pty master) of a real tty; the agent side opens
the slave with pyserial through a by-id style symlink, as on a gateway. `unplug()`
closes the master (the reader sees EIO, as when a USB adapter is pulled) and
removes the symlink; `plug()` makes a new pty and points the same symlink at it,
as udev does when the adapter comes back.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


class PtyDevice:
    """A pseudo-terminal whose master plays the device; `path` is a by-id style symlink."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.master: int | None = None
        self.tty = ""
        self.plug()

    def plug(self) -> None:
        """A new pty behind `path` (raw from the start, so nothing is echoed or cooked)."""
        master, slave = os.openpty()
        tty.setraw(slave)
        self.tty = os.ttyname(slave)
        os.close(slave)  # the pty lives while the master is open
        self.master = master
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.path.symlink_to(self.tty)

    def unplug(self) -> None:
        """Close the master and remove the symlink: the device is gone."""
        if self.master is not None:
            os.close(self.master)
            self.master = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def write(self, data: bytes) -> None:
        """Send bytes as the device would."""
        assert self.master is not None, "device is unplugged"
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]

    def read(self, timeout: float = 1.0) -> bytes:
        """What the host side wrote to the device (waits up to `timeout` for some)."""
        assert self.master is not None
        ready, _, _ = select.select([self.master], [], [], timeout)
        return os.read(self.master, 4096) if ready else b""


@pytest.fixture
def pty_device(tmp_path: Path) -> Iterator[PtyDevice]:
    """A pty device behind `tmp_path/by-id/usb-EdgeLedger_Test_0001-if00-port0`."""
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    device = PtyDevice(by_id / "usb-EdgeLedger_Test_0001-if00-port0")
    yield device
    device.unplug()


def poll_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or condition}")
        time.sleep(0.01)


@pytest.fixture
def wait_for() -> Callable[..., None]:
    """`wait_for(condition, timeout=5.0, what="")`: poll until true, else fail the test."""
    return poll_until


@pytest.fixture
def make_pty() -> Iterator[Callable[[Path], PtyDevice]]:
    """`make_pty(path)`: a PtyDevice behind `path` (unplugged at the end of the test)."""
    made: list[PtyDevice] = []

    def make(path: Path) -> PtyDevice:
        made.append(PtyDevice(path))
        return made[-1]

    yield make
    for device in made:
        device.unplug()
