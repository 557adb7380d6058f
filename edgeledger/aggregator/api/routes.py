"""The endpoints of DESIGN.md 5, each a thin function over a borrowed StoreReader.

Every parameter is typed and bounded in its annotation (so pydantic answers a bad one
with a 400 naming it, and the OpenAPI says what is valid); what only the store can
tell (an unknown device, a height past the tip) is a 404 naming the parameter.
Proofs are against the latest checkpoint, read first: everything it covers is
already in the store, whatever ingest commits meanwhile.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query, Request, Response

from edgeledger.aggregator.api import senml, views
from edgeledger.aggregator.api.app import Context, bad, not_found
from edgeledger.aggregator.api.metrics import CONTENT_TYPE
from edgeledger.aggregator.api.models import (
    INT64_MAX,
    INT64_MIN,
    BlockOut,
    CheckpointOut,
    ConsistencyOut,
    DeviceOut,
    DevicePage,
    ErrorBody,
    EventOut,
    EventPage,
    LogInfo,
    ProofBundleOut,
    ReadingPage,
)
from edgeledger.aggregator.api.readings import (
    CURSOR_PATTERN,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Cursor,
)
from edgeledger.aggregator.api.readings import Query as ReadingQuery
from edgeledger.core import b64, merkle

DEVICE_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$"
KIND_PATTERN = r"^[a-z][a-z-]{0,31}$"


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for ErrorBody answers (4XX also keeps FastAPI's 422 out)."""
    text = {400: "a parameter is invalid (named in `parameter`)", 404: "not found",
            409: "not provable yet", 503: "the store failed"}
    out: dict[int | str, dict[str, Any]] = {c: {"model": ErrorBody, "description": text[c]}
                                            for c in codes}
    out["4XX"] = {"model": ErrorBody, "description": "any other client error"}
    out.setdefault(503, {"model": ErrorBody, "description": text[503]})
    return out


def add_routes(app: FastAPI, ctx: Context) -> None:
    """Register every endpoint on `app`."""
    _log_routes(app, ctx)
    _device_routes(app, ctx)
    _reading_routes(app, ctx)
    _event_routes(app, ctx)


def _log_routes(app: FastAPI, ctx: Context) -> None:
    @app.get("/v1/log", response_model=LogInfo, responses=_errors(), tags=["log"])
    def log_info() -> LogInfo:
        """The log's origin and verifier key, and its latest checkpoint's size and height."""
        with ctx.pool.reader() as r:
            cp = views.latest(r)
        return LogInfo(origin=ctx.verifier.name, verifier_key=ctx.verifier.text(),
                       size=0 if cp is None else cp[0].size,
                       height=None if cp is None else cp[0].height)

    @app.get("/v1/checkpoint", response_model=CheckpointOut, responses=_errors(404),
             tags=["log"])
    def checkpoint() -> CheckpointOut:
        """The latest signed checkpoint: its note and its parsed fields."""
        with ctx.pool.reader() as r:
            cp = views.latest(r)
        if cp is None:
            raise not_found(None, "no checkpoint has been signed yet")
        return views.checkpoint_out(*cp)

    @app.get("/v1/checkpoints/{height}", response_model=CheckpointOut,
             responses=_errors(400, 404), tags=["log"])
    def checkpoint_at(height: Annotated[int, Path(ge=0, le=INT64_MAX)]) -> CheckpointOut:
        """The checkpoint at canonical height `height`."""
        with ctx.pool.reader() as r:
            note = r.checkpoint(height)
        if note is None:
            raise not_found("height", f"no checkpoint at height {height}")
        return views.checkpoint_out(views.parse_checkpoint(note), note)

    @app.get("/v1/consistency", response_model=ConsistencyOut, responses=_errors(400, 404),
             tags=["log"])
    def consistency(from_size: Annotated[int, Query(alias="from", ge=0, le=INT64_MAX,
                                                    description="the older tree size")],
                    to: Annotated[int | None, Query(ge=0, le=INT64_MAX,
                                                    description="the newer tree size "
                                                    "(default: the latest checkpoint's)")
                                  ] = None) -> ConsistencyOut:
        """RFC 9162 consistency proof between two tree sizes, both at most the latest
        checkpoint's size."""
        with ctx.pool.reader() as r:
            cp = views.latest(r)
            if cp is None:
                raise not_found(None, "no checkpoint has been signed yet")
            size = cp[0].size
            new = size if to is None else to
            if new > size:
                raise bad("to", f"{new} is beyond the latest checkpoint's size {size}")
            if from_size > new:
                raise bad("from", f"{from_size} is larger than `to` ({new})")
            proof = merkle.consistency_proof(from_size, new, r.read_hashes)
        return ConsistencyOut.model_validate(
            {"from": from_size, "to": new, "proof": [b64.encode(h) for h in proof]})


def _device_routes(app: FastAPI, ctx: Context) -> None:
    @app.get("/v1/devices", response_model=DevicePage, responses=_errors(400),
             tags=["devices"])
    def devices(after: Annotated[str, Query(pattern=r"^([a-z0-9][a-z0-9-]{0,63})?$",
                                            description="the last id of the previous page")
                                 ] = "",
                limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT
                ) -> DevicePage:
        """Enrolled (and revoked) devices by id, a page at a time."""
        with ctx.pool.reader() as r:
            found = r.devices(after, limit)
        statuses = ctx.statuses()
        out = [views.device_out(d, statuses.get(d.dev)) for d in found]
        return DevicePage(devices=out, next=found[-1].dev if len(found) == limit else None)

    @app.get("/v1/devices/{id}", response_model=DeviceOut, responses=_errors(400, 404),
             tags=["devices"])
    def device(dev: Annotated[str, Path(alias="id", pattern=DEVICE_PATTERN)]) -> DeviceOut:
        """One device: key, enrolment, revocation, flag, next height, last state."""
        with ctx.pool.reader() as r:
            record = r.device(dev)
            keys = r.keys(dev)
        if record is None:
            raise not_found("id", f"device {dev} is not enrolled")
        return views.device_out(record, ctx.statuses().get(dev), keys)

    @app.get("/v1/devices/{id}/blocks/{height}", response_model=BlockOut,
             responses=_errors(400, 404), tags=["devices"])
    def block(dev: Annotated[str, Path(alias="id", pattern=DEVICE_PATTERN)],
              height: Annotated[int, Path(ge=0, le=INT64_MAX)]) -> BlockOut:
        """An accepted block: COSE bytes, header, readings, inclusion proof."""
        with ctx.pool.reader() as r:
            return views.block_out(r, dev, height)

    @app.get("/v1/proof", response_model=ProofBundleOut, responses=_errors(400, 404, 409),
             tags=["proofs"])
    def proof(device: Annotated[str, Query(pattern=DEVICE_PATTERN)],
              height: Annotated[int, Query(ge=0, le=INT64_MAX)],
              index: Annotated[int, Query(ge=0, le=INT64_MAX,
                                          description="the reading's position in the block")]
              ) -> Response:
        """The proof bundle (DESIGN.md 2.4) of one reading against the latest checkpoint:
        check it with `edgeledger verify BUNDLE --log-key VKEY`."""
        with ctx.pool.reader() as r:
            bundle = views.proof_bundle(r, device, height, index)
        return Response(bundle.to_json(), media_type="application/json")


def _reading_routes(app: FastAPI, ctx: Context) -> None:
    senml_schema = {"type": "array", "items": {"$ref": "#/components/schemas/SenmlRecord"}}
    extra: dict[int | str, dict[str, Any]] = {200: {
        "content": {senml.MEDIA_TYPE: {"schema": senml_schema}},
        "description": "JSON (ReadingPage), or a resolved SenML pack when asked for by "
                       "`format=senml` or Accept: application/senml+json; its next page "
                       "is in the Link header (rel=next)"}}

    @app.get("/v1/readings", response_model=ReadingPage,
             responses={**_errors(400), **extra}, tags=["readings"])
    def readings(request: Request,
                 device: Annotated[str | None, Query(pattern=DEVICE_PATTERN)] = None,
                 name: Annotated[str | None, Query(pattern=NAME_PATTERN,
                                                   description="a reading name "
                                                   "(sensor/metric), or a sensor id")] = None,
                 since: Annotated[int, Query(ge=INT64_MIN, le=INT64_MAX,
                                             description="Unix ms, inclusive")] = INT64_MIN,
                 until: Annotated[int, Query(ge=INT64_MIN, le=INT64_MAX,
                                             description="Unix ms, inclusive")] = INT64_MAX,
                 limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
                 cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN,
                                                     description="`next` of the previous "
                                                                 "page")] = None,
                 format: Annotated[Literal["json", "senml"] | None, Query()] = None,
                 ) -> Any:
        """Readings by device, name and time, a page at a time, as JSON or SenML."""
        if since > until:
            raise bad("until", f"{until} is before `since` ({since})")
        try:
            start = None if cursor is None else Cursor.parse(cursor)
        except ValueError as exc:
            raise bad("cursor", str(exc)) from exc
        query = ReadingQuery(device, name, since, until)
        with ctx.pool.reader() as r:
            if device is not None and r.device(device) is None:
                raise not_found("device", f"device {device} is not enrolled")
            found, nxt = views.readings_page(r, query, start, limit)
        if not views.wants_senml(format, request.headers.get("accept", "")):
            return ReadingPage(readings=[views.reading_out(f) for f in found],
                               next=None if nxt is None else nxt.text())
        return views.senml_response(request, found, nxt)


def _event_routes(app: FastAPI, ctx: Context) -> None:
    @app.get("/v1/events", response_model=EventPage, responses=_errors(400), tags=["events"])
    def events(after: Annotated[int, Query(ge=0, le=INT64_MAX,
                                           description="the last id already seen")] = 0,
               limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
               kind: Annotated[str | None, Query(pattern=KIND_PATTERN)] = None,
               device: Annotated[str | None, Query(pattern=DEVICE_PATTERN)] = None,
               ) -> EventPage:
        """The event journal (rejections, gaps, equivocation, skew, ...), oldest first."""
        with ctx.pool.reader() as r:
            found = r.events(after, limit, kind, device)
        return EventPage(events=[EventOut(id=e.id, time_ms=e.time_ms, kind=e.kind,
                                          device=e.dev, height=e.height, reason=e.reason)
                                 for e in found],
                         next=found[-1].id if found else after)

    metrics = ctx.metrics
    if metrics is None:
        return

    @app.get("/metrics", response_class=Response, tags=["metrics"],
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text exposition format"},
                        503: {"model": ErrorBody, "description": "the store failed"}})
    def prometheus() -> Response:
        """Prometheus metrics (edgeledger_*): ingest counters and latency, log, devices."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

