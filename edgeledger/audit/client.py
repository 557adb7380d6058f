"""A small HTTP client for the aggregator's API: GET a path, get JSON back.

Why the standard library: the audit runs on an auditor's machine or a cron host,
which should not need the server's stack (FastAPI, uvicorn) nor any other client
package; `http.client` is enough for GETs. It keeps one connection open (HTTP/1.1
keep-alive) because an audit makes one request per checkpoint and per block: a
new TCP connection each time would cost more than the checks. A connection that
the server closed while idle is reopened once; GETs are safe to repeat.

Failures are split by whose they are: the API unreachable, timing out or failing
(5xx, any status but 200 and 404) is a TransportError naming the URL, since the
audit could not judge anything; a 404 is `NotFound`, which the caller judges (a
checkpoint the log claims to have must be there); a 200 whose body is not JSON is
the log's fault, the check "api response".
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

from edgeledger import __version__
from edgeledger.audit.responses import API_RESPONSE
from edgeledger.core.errors import EdgeLedgerError, TransportError, VerificationError

MAX_BODY = 64 << 20
"""Largest answer read (a block of 10,000 readings is a few MB of JSON)."""


class NotFound(EdgeLedgerError):
    """The API answered 404 for `url`; `reason` is its ErrorBody reason, if any."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: not found ({reason})")
        self.url = url
        self.reason = reason


@dataclass(frozen=True)
class ApiUrl:
    """The API's base URL, split: scheme, host, port and path prefix."""

    scheme: str
    host: str
    port: int
    prefix: str

    @classmethod
    def parse(cls, text: str) -> ApiUrl:
        """Parse http(s)://host[:port][/prefix]; ValueError saying what is wrong."""
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"--api {text!r}: {exc}") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--api {text!r}: expected http://HOST[:PORT] or https://...")
        if parts.query or parts.fragment or parts.username:
            raise ValueError(f"--api {text!r}: give the base URL only (no query, fragment "
                             "or user)")
        default = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, parts.hostname, port or default, parts.path.rstrip("/"))

    def url(self, path: str) -> str:
        """The full URL of an API path, for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.prefix}{path}"


class ApiClient:
    """GET JSON from the API over one kept-alive connection; `close()` when done."""

    def __init__(self, base: ApiUrl, timeout: float = 30.0) -> None:
        self.base = base
        self.timeout = timeout
        self.requests = 0
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str, params: Mapping[str, int | str] | None = None) -> object:
        """The JSON body of GET `path` (with query `params`); see the module doc."""
        target = self.base.prefix + quote(path) + (f"?{urlencode(params)}" if params else "")
        url = self.base.url(path) + (f"?{urlencode(params)}" if params else "")
        status, reason, body = self._request(target, url)
        self.requests += 1
        if status == 404:
            raise NotFound(url, _reason(body))
        if status != 200:
            raise TransportError(f"the API at {url} answered HTTP {status} {reason}: "
                                 f"{_reason(body)}")
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise VerificationError(API_RESPONSE, f"{url}: the body is not JSON "
                                                  f"({exc})") from exc

    def _request(self, target: str, url: str) -> tuple[int, str, bytes]:
        """One GET; a kept-alive connection the server dropped is reopened once."""
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._connection()
            try:
                conn.request("GET", target, headers={"Accept": "application/json",
                                                     "User-Agent": f"edgeledger-audit/"
                                                                   f"{__version__}"})
                response = conn.getresponse()
                body = response.read(MAX_BODY + 1)
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError) as exc:
                self.close()
                if reused and attempt == 1:
                    continue
                raise TransportError(f"cannot reach the API at {url}: {exc}") from exc
            except TimeoutError as exc:
                self.close()
                raise TransportError(f"no answer from the API at {url} within "
                                     f"{self.timeout:g} s") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise TransportError(f"cannot reach the API at {url}: {exc}") from exc
            if len(body) > MAX_BODY:
                self.close()
                raise TransportError(f"the API at {url} answered more than {MAX_BODY} bytes")
            if response.will_close:
                self.close()
            return response.status, response.reason, body
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            kind = (http.client.HTTPSConnection if self.base.scheme == "https"
                    else http.client.HTTPConnection)
            self._conn = kind(self.base.host, self.base.port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _reason(body: bytes) -> str:
    """The `reason` of an ErrorBody, or the start of whatever the body is."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return body[:200].decode(errors="replace") or "no body"
    if isinstance(obj, dict) and isinstance(obj.get("reason"), str):
        return str(obj["reason"])[:200]
    return str(obj)[:200]

