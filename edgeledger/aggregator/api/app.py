"""The FastAPI application: its context, the reader pool and the error contract.

Errors. Every answer that is not a 2xx has one JSON shape, ErrorBody
`{"error", "parameter", "reason"}`, documented in the OpenAPI for every operation:

- 400 `bad-parameter`: a query or path parameter that does not parse or is out of
  range (pydantic's validation, or our own checks); `parameter` names it. FastAPI's
  default 422 body is replaced, and its schema dropped from the OpenAPI.
- 404 `not-found`: an unknown device, height, index, checkpoint or path.
- 405 `method-not-allowed`; 409 `not-yet-provable` (no checkpoint covers the block
  yet, or the block was signed by a key the store no longer holds).
- 503 `unavailable`: the store failed (EdgeLedgerError, sqlite3.Error, OSError from a
  reader). No input causes one: inputs are validated before any read, and every
  value handed to a reader is in range.

Readers. Each request borrows a StoreReader from a small pool (`ReaderPool`): the API
never touches the ingest thread's connection, and a connection is used by one
request at a time. FastAPI runs the (synchronous) endpoints in its thread pool, so
a slow query holds one worker, not the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgeledger.aggregator.api.metrics import Metrics
from edgeledger.aggregator.api.models import SenmlRecord
from edgeledger.aggregator.service import DeviceStatus
from edgeledger.aggregator.store.reader import StoreReader
from edgeledger.core.errors import EdgeLedgerError
from edgeledger.core.note import Verifier

log = logging.getLogger("edgeledger.aggregator.api")

Statuses = Callable[[], Mapping[str, DeviceStatus]]
"""Gives the devices' latest `state` (AggregatorSync.statuses); read-only."""
STORE_ERRORS = (EdgeLedgerError, sqlite3.Error, OSError)
"""What a failing store raises: answered 503, never 500."""
API_VERSION = "1"


class ApiError(Exception):
    """An answer other than 2xx, in the ErrorBody shape."""

    def __init__(self, status: int, error: str, parameter: str | None, reason: str) -> None:
        super().__init__(reason)
        self.status, self.error, self.parameter, self.reason = status, error, parameter, reason


def bad(parameter: str, reason: str) -> ApiError:
    """400: `parameter` is wrong for `reason`."""
    return ApiError(400, "bad-parameter", parameter, reason)


def not_found(parameter: str | None, reason: str) -> ApiError:
    """404: what `parameter` names does not exist."""
    return ApiError(404, "not-found", parameter, reason)


class ReaderPool:
    """Up to `size` StoreReaders, made on demand by `factory`, lent one at a time."""

    def __init__(self, factory: Callable[[], StoreReader], size: int = 4) -> None:
        self._factory = factory
        self._idle: queue.LifoQueue[StoreReader] = queue.LifoQueue()
        self._made: list[StoreReader] = []
        self._lock = threading.Lock()
        self._size = size

    @contextlib.contextmanager
    def reader(self) -> Iterator[StoreReader]:
        """Borrow a reader (waiting for one if all `size` are lent); give it back after."""
        reader = self._take()
        try:
            yield reader
        finally:
            self._idle.put(reader)

    def _take(self) -> StoreReader:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._made) < self._size:
                reader = self._factory()
                self._made.append(reader)
                return reader
        return self._idle.get()

    def close(self) -> None:
        """Close every reader made (call when no request is running)."""
        with self._lock:
            made, self._made = self._made, []
        for reader in made:
            with contextlib.suppress(*STORE_ERRORS):
                reader.close()


@dataclass
class Context:
    """What the endpoints need: readers, the log's key, device statuses, metrics."""

    pool: ReaderPool
    verifier: Verifier
    statuses: Statuses
    metrics: Metrics | None


def create_app(readers: Callable[[], StoreReader], verifier: Verifier,
               statuses: Statuses | None = None, metrics: Metrics | None = None,
               pool_size: int = 4) -> FastAPI:
    """The API over stores made by `readers`, for the log whose key is `verifier`.

    `statuses` gives the devices' in-memory `state` (none when omitted); `metrics`,
    when given, is served at /metrics with the store's gauges added at scrape time.
    """
    from edgeledger.aggregator.api.routes import add_routes

    app = FastAPI(title="EdgeLedger aggregator", version=API_VERSION,
                  description="Devices, blocks, readings (JSON and SenML), proofs, "
                              "checkpoints and events of one EdgeLedger canonical log.")
    ctx = Context(ReaderPool(readers, pool_size), verifier, statuses or dict, metrics)
    app.state.context = ctx
    add_routes(app, ctx)
    _add_error_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    if metrics is not None:
        metrics.watch_store(ctx.pool.reader, ctx.statuses)
    return app


def error_response(err: ApiError) -> JSONResponse:
    """The JSON answer for `err`."""
    return JSONResponse({"error": err.error, "parameter": err.parameter, "reason": err.reason},
                        status_code=err.status)


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(_validation_error(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kinds = {404: "not-found", 405: "method-not-allowed"}
        response = error_response(ApiError(exc.status_code, kinds.get(exc.status_code, "http"),
                                           None, str(exc.detail)))
        response.headers.update(exc.headers or {})
        return response

    async def store_error(request: Request, exc: Exception) -> JSONResponse:
        log.warning("api: %s %s: store error: %s", request.method, request.url.path, exc)
        return error_response(ApiError(503, "unavailable", None, f"the store failed: {exc}"))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for error in STORE_ERRORS:
        app.add_exception_handler(error, store_error)


def _validation_error(exc: RequestValidationError) -> ApiError:
    """The first fault pydantic found, as a 400 naming the parameter."""
    errors = list(exc.errors())
    if not errors:
        return bad("", "invalid request")
    first: Mapping[str, Any] = errors[0]
    loc = [str(part) for part in first.get("loc", ())]
    parameter = loc[1] if len(loc) > 1 else (loc[0] if loc else "")
    reason = str(first.get("msg", "invalid"))
    value = first.get("input")
    if value is not None and not isinstance(value, dict):
        reason += f" (got {str(value)[:60]!r})"
    return bad(parameter, reason)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, made once: FastAPI's, without its unused validation schemas."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                             description=app.description)
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        schemas["SenmlRecord"] = SenmlRecord.model_json_schema(
            ref_template="#/components/schemas/{model}")
        app.openapi_schema = schema
    return app.openapi_schema
