"""A tiny stdlib HTTP server in front of the real API that alters chosen answers.

Each rule maps a request target (path and query, as the audit sends it) to either a
function of the real answer's JSON (what a lying or broken aggregator would serve
instead) or a fixed (status, body). Everything else is passed through unchanged, so
a test changes exactly one thing. It also records what was asked, so a test can say
which requests an audit made.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

Rule = Callable[[Any], Any] | tuple[int, Any]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body in separate sends would stall 40 ms
    server: _Server

    def do_GET(self) -> None:
        self.server.requested.append(self.path)
        rule = self.server.rules.get(self.path)
        if isinstance(rule, tuple):
            status, body = rule
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        else:
            status, data = self.server.forward(self.path)
            if rule is not None and status == 200:
                data = json.dumps(rule(json.loads(data))).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, rules: Mapping[str, Rule]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "", parts.port or 80)
        self.rules = rules
        self.requested: list[str] = []
        self._lock = threading.Lock()

    def forward(self, target: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            conn.request("GET", target)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


@contextmanager
def tampered(upstream: str, rules: Mapping[str, Rule] | None = None) -> Iterator[_Server]:
    """Serve `upstream` with `rules` applied; the server's `url` is its base URL."""
    server = _Server(upstream, rules or {})
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
