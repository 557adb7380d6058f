"""A serial port that stays open: a reader thread that survives unplugs, with backoff.

Theory of operation. A `SerialLink` owns one pyserial port, named by path
(normally a `/dev/serial/by-id/...` symlink, which follows the device whatever
ttyUSBn it gets). Its thread opens the port, hands every chunk it reads to the
`on_data` callback, and, when the device disappears or errors, closes it, logs
one line and reopens it with exponential backoff (bounded, with jitter, so a
fleet of gateways does not retry in step). While the device stays away, the
retries are logged at debug only: one warning per outage, one info when it is
back. The callback runs on the link's thread; a source hands what it decodes to
the agent through a queue, so the agent loop never blocks on a device.

`on_open` is called on every (re)open, before the first byte: decoders drop a
partial frame there, because bytes that were in flight during an unplug are
gone and must not be glued to the first bytes after it.

Unplugging shows on Linux as a read that raises (EIO, or pyserial's "device
reports readiness to read but returned no data"); a by-id symlink that vanishes
while the port stays quiet is caught by a stat after an empty read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import serial

from edgeledger.configtable import SerialSettings
from edgeledger.sources.base import SourceStats

log = logging.getLogger("edgeledger.serial")

BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 30.0
CHUNK = 4096


def describe_settings(s: SerialSettings) -> str:
    """The usual short form of a port's settings, e.g. `9600 8N1`."""
    stop = f"{s.stopbits:g}"
    return f"{s.baud} {s.bytesize}{s.parity}{stop}"


class SerialLink:
    """A reader thread for one serial port that reopens it with backoff when it goes away.

    `stats.reopens` counts successful reopens after a loss (not the first open).
    `opener` builds the port (pyserial's `serial.Serial` by default; tests may pass
    another callable with the same keyword arguments).
    """

    def __init__(self, settings: SerialSettings, on_data: Callable[[bytes], None],
                 stats: SourceStats | None = None, name: str = "serial",
                 on_open: Callable[[], None] | None = None,
                 backoff: tuple[float, float] = (BACKOFF_MIN_S, BACKOFF_MAX_S),
                 opener: Callable[..., Any] | None = None) -> None:
        self.settings = settings
        self.on_data = on_data
        self.on_open = on_open
        self.stats = stats if stats is not None else SourceStats()
        self.name = name
        self.backoff = backoff
        self.opener = opener or serial.Serial
        self.opens = 0
        self._port: Any = None
        self._stopping = threading.Event()
        self._opened = threading.Event()
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> Path:
        """The configured device path."""
        return self.settings.device

    @property
    def is_open(self) -> bool:
        """Whether the port is open right now."""
        return self._port is not None

    def start(self) -> None:
        """Start the reader thread (it opens the port, or waits for it to appear)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"serial {self.path}",
                                        daemon=True)
        self._thread.start()

    def wait_open(self, timeout: float) -> bool:
        """Block until the port has been opened at least once (for tests and start-up)."""
        return self._opened.wait(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and close the port; returns within about the read timeout."""
        self._stopping.set()
        port = self._port
        if port is not None and hasattr(port, "cancel_read"):
            with contextlib.suppress(OSError, serial.SerialException):
                port.cancel_read()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._close()

    def write(self, data: bytes) -> bool:
        """Write to the port if it is open; False (nothing sent) while it is away."""
        port = self._port
        if port is None:
            return False
        try:
            with self._write_lock:
                port.write(data)
            return True
        except (OSError, serial.SerialException) as exc:
            log.debug("%s: write to %s failed: %s", self.name, self.path, exc)
            return False

    # --- the thread ----------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        lost_logged = False
        while not self._stopping.is_set():
            error = self._open()
            if error is not None:
                if not lost_logged:
                    log.warning("%s: cannot open %s: %s; retrying with backoff up to %g s",
                                self.name, self.path, error, self.backoff[1])
                    lost_logged = True
                else:
                    log.debug("%s: %s still unavailable: %s", self.name, self.path, error)
                self._stopping.wait(self._delay(failures))
                failures += 1
                continue
            failures, lost_logged = 0, False
            reason = self._read_until_lost()
            self._close()
            if reason is not None and not self._stopping.is_set():
                log.warning("%s: lost %s: %s; reopening with backoff", self.name, self.path,
                            reason)
                lost_logged = True
                self._stopping.wait(self._delay(0))

    def _delay(self, failures: int) -> float:
        """Exponential backoff, bounded, with +-20 % jitter."""
        low, high = self.backoff
        base = min(high, low * (2 ** min(failures, 32)))
        return float(min(high, base * random.uniform(0.8, 1.2)))

    def _open(self) -> str | None:
        """Open the port; None on success, else why not."""
        s = self.settings
        try:
            port = self.opener(port=str(s.device), baudrate=s.baud, bytesize=s.bytesize,
                               parity=s.parity, stopbits=s.stopbits, timeout=s.timeout_s,
                               exclusive=True)
        except (OSError, ValueError, serial.SerialException) as exc:
            return str(exc)
        self._port = port
        self.opens += 1
        real = os.path.realpath(s.device)
        shown = str(s.device) if real == str(s.device) else f"{s.device} ({real})"
        if self.opens > 1:
            self.stats.add(reopens=1)
            log.info("%s: reopened %s at %s (reopen %d)", self.name, shown,
                     describe_settings(s), self.opens - 1)
        else:
            log.info("%s: opened %s at %s", self.name, shown, describe_settings(s))
        if self.on_open is not None:
            self.on_open()
        self._opened.set()
        return None

    def _read_until_lost(self) -> str | None:
        """Read and deliver chunks until stop (None) or a fault (its description)."""
        port = self._port
        while not self._stopping.is_set():
            try:
                data = port.read(port.in_waiting or 1)
                if data and port.in_waiting:
                    data += port.read(min(port.in_waiting, CHUNK))
            except (OSError, serial.SerialException, TypeError) as exc:
                # TypeError: pyserial's read after a concurrent close (fd None).
                return str(exc) or type(exc).__name__
            if data:
                self.on_data(bytes(data))
            elif not os.path.exists(self.settings.device):
                return "device node is gone (unplugged)"
        return None

    def _close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                port.close()
