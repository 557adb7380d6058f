"""Serving the API: uvicorn on a background thread of the aggregator process.

Theory of operation. The aggregator's main thread is the ingest loop (one writer);
the API runs beside it on its own thread, with its own event loop and its own store
connections (the app's ReaderPool), so a slow HTTP client never delays an ack.

- The listening socket is bound here, before uvicorn starts, so that an address in
  use (or not ours) is a ConfigError naming the address and the key `http.listen`,
  raised in the caller's thread, instead of uvicorn's `sys.exit` inside the thread.
- uvicorn does not install signal handlers off the main thread: SIGTERM stays the
  aggregator's, which stops ingest, then calls `stop()`.
- `stop()` asks uvicorn to exit (it stops accepting, lets running requests finish for
  up to GRACE_S), joins the thread, then closes the readers. Idempotent.
- uvicorn's own INFO lines are silenced (one line per start and stop is ours); its
  access log is off: the aggregator's log is for events, not for every GET.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from edgeledger.aggregator.api.app import Context, Statuses, create_app
from edgeledger.aggregator.api.metrics import Metrics
from edgeledger.aggregator.config import AggregatorConfig
from edgeledger.aggregator.store.sqlite import SqliteStore
from edgeledger.core.errors import ConfigError, EdgeLedgerError
from edgeledger.core.note import Verifier

log = logging.getLogger("edgeledger.aggregator.api")

CONFIG_KEY = "http.listen"
START_TIMEOUT_S = 10.0
GRACE_S = 3.0


def bind(host: str, port: int, config_path: str) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port); ConfigError if not."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ConfigError(config_path, CONFIG_KEY, f"cannot resolve {where}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = " (another process is listening there)" if exc.errno == 98 else ""
        raise ConfigError(config_path, CONFIG_KEY, f"cannot listen on {where}: "
                                                   f"{exc.strerror}{hint}") from exc
    return sock


class ApiServer:
    """The app served by uvicorn on a daemon thread; `start()`, then `stop()`."""

    def __init__(self, app: FastAPI, host: str, port: int, config_path: str = "") -> None:
        self.app = app
        self.host, self.port = host, port
        self.config_path = config_path
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL it serves (the bound port when 0 was asked for)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind, start uvicorn, and return once it accepts connections."""
        sock = bind(self.host, self.port, self.config_path)
        self.port = sock.getsockname()[1]
        logging.getLogger("uvicorn").setLevel(logging.WARNING)
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=int(GRACE_S), server_header=False)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=self._run, args=(server, sock), daemon=True,
                                  name="edgeledger-http")
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise EdgeLedgerError(f"HTTP API: uvicorn did not start on {self.url}")
            time.sleep(0.01)
        log.info("HTTP API listening on %s (OpenAPI at %s/openapi.json)", self.url, self.url)

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException:  # the thread's last word: log it, never die silently
            log.exception("HTTP API: uvicorn stopped with an error")
        finally:
            sock.close()

    def stop(self) -> None:
        """Stop serving (running requests get GRACE_S), join, close the store readers."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(GRACE_S + 2)
            if thread.is_alive():
                log.warning("HTTP API: the server thread did not stop in time")
                return
            log.info("HTTP API stopped")
        context = getattr(self.app.state, "context", None)
        if isinstance(context, Context):
            with contextlib.suppress(EdgeLedgerError):
                context.pool.close()


def start_api(config: AggregatorConfig, verifier: Verifier, statuses: Statuses | None = None,
              metrics: Metrics | None = None) -> ApiServer:
    """The aggregator's API over its SQLite store (read-only connections), started on
    `[http] listen`; ConfigError naming `http.listen` if it cannot listen there."""
    path = config.store.path
    app = create_app(lambda: SqliteStore(path, read_only=True), verifier, statuses, metrics)
    server = ApiServer(app, config.http.host, config.http.port, str(config.path))
    server.start()
    return server
