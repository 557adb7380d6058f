"""What the endpoints answer, built from a StoreReader: response models and proofs.

No FastAPI here but the response classes: each function takes a reader and plain
values, and raises ApiError for what the caller asked that is not there.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from edgeledger.aggregator.api import senml
from edgeledger.aggregator.api.app import ApiError, not_found
from edgeledger.aggregator.api.models import (
    BlockHeaderOut,
    BlockOut,
    CheckpointOut,
    DeviceKeyOut,
    DeviceOut,
    DeviceStatusOut,
    InclusionOut,
    ReadingOut,
)
from edgeledger.aggregator.api.readings import (
    Cursor,
    Found,
    Query,
    block_readings,
    decode_reading,
    page,
)
from edgeledger.aggregator.service import DeviceStatus
from edgeledger.aggregator.store.reader import Device, DeviceKey, StoreReader
from edgeledger.core import b64, merkle
from edgeledger.core.block import Block, key_id
from edgeledger.core.bundle import ProofBundle, build_bundle
from edgeledger.core.checkpoint import Checkpoint
from edgeledger.core.reading import Reading

SKIPPED_HEADER = "EdgeLedger-SenML-Skipped"
"""How many readings of a SenML page have no resolved SenML form (senml.py)."""


def not_provable(reason: str) -> ApiError:
    """409: the reading exists but no proof of it can be served now."""
    return ApiError(409, "not-yet-provable", None, reason)


def parse_checkpoint(note: str) -> Checkpoint:
    """The checkpoint of a stored note (a DecodeError is a store fault: 503)."""
    return Checkpoint.parse(note[:note.rfind("\n\n") + 1])


def latest(r: StoreReader) -> tuple[Checkpoint, str] | None:
    """The latest checkpoint and its note, if one was signed."""
    note = r.last_checkpoint()
    return None if note is None else (parse_checkpoint(note), note)


def checkpoint_out(cp: Checkpoint, note: str) -> CheckpointOut:
    """A checkpoint as /v1/checkpoint shows it."""
    return CheckpointOut(note=note, origin=cp.origin, size=cp.size, root=b64.encode(cp.root),
                         height=cp.height, prev=b64.encode(cp.prev), time=cp.time,
                         extra=list(cp.extra))


def device_out(d: Device, status: DeviceStatus | None,
               keys: list[DeviceKey] | None = None) -> DeviceOut:
    """A device record, with its in-memory state if it was heard from, and its keys."""
    state = None if status is None else DeviceStatusOut(
        last_seen_ms=status.last_seen_ms, online=status.online, tip=status.tip,
        backlog=status.backlog, version=status.version)
    return DeviceOut(id=d.dev, public_key=b64.encode(d.public_key),
                     kid=key_id(d.public_key).hex(), enrolled_ms=d.enrolled_ms,
                     revoked=d.revoked_ms is not None, revoked_ms=d.revoked_ms,
                     flagged=d.flagged_ms is not None, flagged_ms=d.flagged_ms,
                     next_height=d.next_height, tip_hash=b64.encode(d.prev), status=state,
                     keys=None if keys is None else [
                         DeviceKeyOut(public_key=b64.encode(k.public_key),
                                      kid=key_id(k.public_key).hex(),
                                      from_height=k.from_height, enrolled_ms=k.enrolled_ms)
                         for k in keys])


def key_at(r: StoreReader, dev: str, height: int) -> bytes | None:
    """The public key that signs `dev`'s block `height`: the last key enrolled from a
    height at or below it."""
    found = [k.public_key for k in r.keys(dev) if k.from_height <= height]
    return found[-1] if found else None


def reading_out(f: Found) -> ReadingOut:
    """One found reading, with where it is."""
    return _reading(f.block.dev, f.block.height, f.block.log_index, f.index, f.reading)


def _reading(dev: str, height: int, log_index: int, index: int, r: Reading) -> ReadingOut:
    return ReadingOut(device=dev, height=height, index=index, log_index=log_index, n=r.n,
                      t=r.t, q=r.q, v=r.v, u=r.u, a=None if r.a is None else b64.encode(r.a),
                      raw=b64.encode(r.raw))


def _find_block(r: StoreReader, dev: str, height: int, device_param: str) -> tuple[bytes, int]:
    """(hash, log index) of block dev/height, or a 404 naming the device or the height."""
    found = r.block(dev, height)
    if found is not None:
        return found
    record = r.device(dev)
    if record is None:
        raise not_found(device_param, f"device {dev} is not enrolled")
    raise not_found("height", f"device {dev} has no accepted block {height} (its next "
                              f"height is {record.next_height})")


def block_out(r: StoreReader, dev: str, height: int) -> BlockOut:
    """Block dev/height with its readings and its audit path to the latest checkpoint."""
    cp = latest(r)  # first: whatever it covers is already stored
    block_hash, log_index = _find_block(r, dev, height, "id")
    block = Block.parse(r.entry(log_index), f"store: log entry {log_index}")
    h = block.header
    readings = [_reading(dev, height, log_index, i, decode_reading(raw, log_index, i))
                for i, raw in enumerate(block_readings(r, log_index))]
    inclusion = None
    if cp is not None and log_index < cp[0].size:
        path = merkle.inclusion_proof(log_index, cp[0].size, r.read_hashes)
        inclusion = InclusionOut(checkpoint=cp[1], height=cp[0].height, size=cp[0].size,
                                 root=b64.encode(cp[0].root),
                                 log_path=[b64.encode(p) for p in path])
    header = BlockHeaderOut(v=h.v, dev=h.dev, h=h.h, prev=b64.encode(h.prev),
                            root=b64.encode(h.root), cnt=h.cnt, t0=h.t0, t1=h.t1, ts=h.ts)
    key = key_at(r, dev, height)
    return BlockOut(device=dev, height=height, hash=b64.encode(block_hash),
                    log_index=log_index, block=b64.encode(block.cose),
                    public_key=b64.encode(key or b""), header=header,
                    readings=readings, inclusion=inclusion)


def proof_bundle(r: StoreReader, dev: str, height: int, index: int) -> ProofBundle:
    """The DESIGN.md 2.4 bundle of reading `index` of block dev/height, against the
    latest checkpoint: O(log n) stored hashes for the log path, one block's readings."""
    cp = latest(r)
    _, log_index = _find_block(r, dev, height, "device")
    if cp is None or log_index >= cp[0].size:
        covered = "no checkpoint yet" if cp is None else f"it covers {cp[0].size} entries"
        raise not_provable(f"block {dev}/{height} is log entry {log_index}; the latest "
                           f"checkpoint does not cover it yet ({covered}): retry after the "
                           "next checkpoint")
    key = key_at(r, dev, height)
    block = Block.parse(r.entry(log_index), f"store: log entry {log_index}")
    if key is None or block.kid != key_id(key):
        held = "none" if key is None else key_id(key).hex()
        raise not_provable(f"block {dev}/{height} is signed by key {block.kid.hex()}, and the "
                           f"key history gives {held} for that height (a store migrated "
                           "from before key histories knows only the current key)")
    raws = block_readings(r, log_index)
    if index >= len(raws):
        held = ("the store keeps no readings for it" if not raws
                else f"it has {len(raws)} readings")
        raise not_found("index", f"block {dev}/{height} has no reading {index} ({held})")
    log_path = merkle.inclusion_proof(log_index, cp[0].size, r.read_hashes)
    return build_bundle(raws, index, block, key, log_index, log_path, cp[1])


def readings_page(r: StoreReader, query: Query, cursor: Cursor | None,
                  limit: int) -> tuple[list[Found], Cursor | None]:
    """One page of readings (readings.py)."""
    return page(r, query, cursor, limit)


def wants_senml(fmt: str | None, accept: str) -> bool:
    """`format` decides; without it, an Accept header that names SenML JSON does."""
    if fmt is not None:
        return fmt == "senml"
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media.lower() == senml.MEDIA_TYPE:
            return _quality(params) > 0
    return False


def _quality(params: list[str]) -> float:
    """The q of a media range's parameters (RFC 9110 12.4.2); 1 when absent or unreadable."""
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value.strip())
            except ValueError:
                return 1.0
    return 1.0


def senml_response(request: Request, found: list[Found], nxt: Cursor | None) -> JSONResponse:
    """A page as a resolved SenML pack; the next page's URL in `Link: <...>; rel="next"`."""
    export = senml.to_senml((f.block.dev, f.reading) for f in found)
    headers = {SKIPPED_HEADER: str(export.skipped)}
    if nxt is not None:
        url = request.url.include_query_params(cursor=nxt.text())
        headers["Link"] = f'<{url}>; rel="next"'
    return JSONResponse(export.records, media_type=senml.MEDIA_TYPE, headers=headers)

