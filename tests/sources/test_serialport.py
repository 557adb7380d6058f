"""SerialLink over real ttys: pseudo-terminals opened with pyserial through a by-id symlink."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgeledger.configtable import SerialSettings
from edgeledger.sources.base import SourceStats
from edgeledger.sources.serialport import SerialLink

Wait = Callable[..., None]


class Collector:
    """The link's callbacks: bytes received, and each (re)open."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.opens = 0
        self.lock = threading.Lock()

    def on_data(self, chunk: bytes) -> None:
        with self.lock:
            self.data += chunk

    def on_open(self) -> None:
        self.opens += 1

    def received(self) -> bytes:
        with self.lock:
            return bytes(self.data)


def link_for(path: Path, sink: Collector, backoff: tuple[float, float] = (0.02, 0.2),
             stats: SourceStats | None = None) -> SerialLink:
    return SerialLink(SerialSettings(path, 115200, timeout_s=0.05), sink.on_data, stats,
                      name="test", on_open=sink.on_open, backoff=backoff)


def test_reads_what_the_device_sends_and_logs_the_real_tty(
        pty_device: Any, wait_for: Wait, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "edgeledger.serial")
    sink = Collector()
    link = link_for(pty_device.path, sink)
    link.start()
    try:
        assert link.wait_open(5)
        payload = bytes(range(256)) * 40  # every byte value, more than one read's worth
        pty_device.write(payload)
        wait_for(lambda: len(sink.received()) >= len(payload), what="the payload")
        assert sink.received() == payload
        assert link.write(b"ping")
        assert pty_device.read() == b"ping"
    finally:
        link.stop()
    assert f"({pty_device.tty})" in caplog.text and "115200 8N1" in caplog.text
    assert link.stats.reopens == 0 and sink.opens == 1


def test_unplug_and_replug_mid_stream_loses_nothing_after_the_reopen(
        pty_device: Any, wait_for: Wait, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "edgeledger.serial")
    sink = Collector()
    stats = SourceStats()
    link = link_for(pty_device.path, sink, stats=stats)
    link.start()
    try:
        assert link.wait_open(5)
        pty_device.write(b"before-1\nbefore-2\npartial-li")
        wait_for(lambda: sink.received().endswith(b"partial-li"), what="data before")
        pty_device.unplug()
        wait_for(lambda: not link.is_open, what="the link to notice the unplug")
        time.sleep(0.3)  # a few failed reopens while the device is away
        assert not link.write(b"x")
        pty_device.plug()
        wait_for(lambda: stats.reopens == 1, what="the reopen")
        after = b"".join(b"after-%d\n" % i for i in range(2000))
        pty_device.write(after)
        wait_for(lambda: sink.received().endswith(after[-20:]), what="data after")
    finally:
        link.stop()
    assert sink.received() == b"before-1\nbefore-2\npartial-li" + after
    assert sink.opens == 2
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.WARNING  # one line per outage
    assert "reopened" in caplog.text and pty_device.tty in caplog.text


def test_a_device_that_appears_later_is_opened(tmp_path: Path, wait_for: Wait, make_pty: Any,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "edgeledger.serial")
    path = tmp_path / "usb-later"
    sink = Collector()
    link = link_for(path, sink)
    link.start()
    try:
        time.sleep(0.3)
        assert not link.is_open
        device = make_pty(path)
        assert link.wait_open(5)
        device.write(b"hello")
        wait_for(lambda: sink.received() == b"hello", what="hello")
    finally:
        link.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot open" in warnings[0].getMessage()
    assert link.stats.reopens == 0


@pytest.mark.parametrize("plugged", [True, False])
def test_stop_is_prompt(pty_device: Any, plugged: bool) -> None:
    if not plugged:
        pty_device.unplug()
    link = link_for(pty_device.path, Collector(), backoff=(5.0, 30.0))
    link.start()
    time.sleep(0.2)
    started = time.monotonic()
    link.stop()
    assert time.monotonic() - started < 1.0
    assert not link.is_open
    if plugged:  # the port is closed: another process may open it (exclusive lock gone)
        link2 = link_for(pty_device.path, Collector())
        link2.start()
        try:
            assert link2.wait_open(5)
        finally:
            link2.stop()


def test_backoff_is_bounded_and_grows() -> None:
    link = link_for(Path("/nonexistent"), Collector(), backoff=(0.1, 30.0))
    delays = [link._delay(n) for n in range(40)]
    assert all(0.08 <= d <= 30.0 for d in delays)
    assert delays[0] <= 0.12 and min(delays[20:]) >= 24.0


def test_a_missing_port_is_retried_not_raised(tmp_path: Path) -> None:
    link = link_for(tmp_path / "never", Collector())
    link.start()
    time.sleep(0.2)
    link.stop()
    assert link.opens == 0


def test_exclusive_open(pty_device: Any, wait_for: Wait) -> None:
    """Two links on one port: the second waits (flock), as two agents must not share one."""
    first, second = link_for(pty_device.path, Collector()), link_for(pty_device.path,
                                                                     Collector())
    first.start()
    try:
        assert first.wait_open(5)
        second.start()
        assert not second.wait_open(0.3)
    finally:
        second.stop()
        first.stop()
    assert os.path.exists(pty_device.path)
