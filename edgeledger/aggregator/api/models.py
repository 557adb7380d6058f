"""The HTTP API's response bodies as pydantic models: they are its OpenAPI schema.

Bytes are standard base64 (as in proof bundles, DESIGN.md 2.4), times are Unix
milliseconds (as in readings and checkpoints), heights and indexes count from 0.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
UINT64_MAX = (1 << 64) - 1

Base64 = str
Value = bool | int | float | str | dict[str, int | float]


class ErrorBody(BaseModel):
    """Every 4xx and 503 answer: what kind of failure, which parameter, and why."""

    error: str = Field(description="bad-parameter, not-found, not-yet-provable, "
                                   "method-not-allowed or unavailable",
                       examples=["bad-parameter"])
    parameter: str | None = Field(description="the query or path parameter at fault, "
                                               "if one is", examples=["height"])
    reason: str = Field(description="what is wrong, for a person",
                        examples=["must be at most 9223372036854775807"])


class LogInfo(BaseModel):
    """DESIGN.md 5 (MUST): which log this is, the key that checks its checkpoints, and
    the size and height of its latest checkpoint."""

    origin: str = Field(examples=["edgeledger.example/agg-1"])
    verifier_key: str = Field(description="the log's note verifier key "
                                          "(<name>+<hex key hash>+<base64 key>)")
    size: int = Field(description="entries covered by the latest checkpoint (0 before one)")
    height: int | None = Field(description="the latest checkpoint's height; null before "
                                           "the first one is signed")


class CheckpointOut(BaseModel):
    """A signed checkpoint (DESIGN.md 2.3): the note as signed, and its parsed fields."""

    note: str = Field(description="the signed note text, signature lines included")
    origin: str
    size: int
    root: Base64
    height: int
    prev: Base64 = Field(description="SHA-256 of the previous checkpoint's note text")
    time: int = Field(description="Unix ms")
    extra: list[str] = Field(description="lines after `time`, kept and ignored")


class ConsistencyOut(BaseModel):
    """An RFC 9162 consistency proof between two tree sizes, bottom-up."""

    model_config = ConfigDict(populate_by_name=True)

    from_size: int = Field(alias="from")
    to: int
    proof: list[Base64]


class DeviceStatusOut(BaseModel):
    """What the device last said on its `state` topic, kept in memory by the aggregator."""

    last_seen_ms: int = Field(description="when the aggregator last heard from it (Unix ms)")
    online: bool | None
    tip: int | None = Field(description="its newest sealed block height")
    backlog: int | None = Field(description="blocks it holds that the log has not acked")
    version: str | None


class DeviceKeyOut(BaseModel):
    """A key the device has had: it signs the device's blocks from `from_height` on."""

    public_key: Base64
    kid: str = Field(description="hex COSE kid")
    from_height: int
    enrolled_ms: int


class DeviceOut(BaseModel):
    """One enrolled (or revoked) device."""

    id: str
    public_key: Base64 = Field(description="the enrolled Ed25519 key (the current one)")
    kid: str = Field(description="hex COSE kid: the first 8 bytes of SHA-256(public key)")
    enrolled_ms: int
    revoked: bool
    revoked_ms: int | None
    flagged: bool = Field(description="equivocation evidence is held against it")
    flagged_ms: int | None
    next_height: int = Field(description="the height the log expects next from it")
    tip_hash: Base64 = Field(description="block hash of block next_height - 1 "
                                         "(32 zero bytes before its first block)")
    status: DeviceStatusOut | None = Field(description="null when it was not heard from "
                                                       "since the aggregator started")
    keys: list[DeviceKeyOut] | None = Field(
        default=None, description="every key it has had, oldest first (key rotations); "
                                  "only on /v1/devices/{id}, null in lists")


class DevicePage(BaseModel):
    """A page of devices by id; pass `next` as `after` for the next page."""

    devices: list[DeviceOut]
    next: str | None


class ReadingOut(BaseModel):
    """One reading (DESIGN.md 2.1) and where it is: prove it with /v1/proof."""

    device: str
    height: int = Field(description="its block's height")
    index: int = Field(description="its position in the block (the proof's `index`)")
    log_index: int = Field(description="its block's log index")
    n: str
    t: int = Field(description="Unix ms, gateway clock")
    q: int
    v: Value
    u: str | None
    a: Base64 | None = Field(description="sensor-side attestation, if any")
    raw: Base64 = Field(description="the reading's deterministic CBOR bytes: its Merkle leaf "
                                    "(what a verifier hashes, rather than re-encoding n..a)")


class ReadingPage(BaseModel):
    """A page of readings; pass `next` as `cursor` (with the same filters) to go on."""

    readings: list[ReadingOut]
    next: str | None = Field(description="null when there is nothing more")


class SenmlRecord(BaseModel):
    """A resolved SenML record (RFC 8428): see edgeledger/aggregator/api/senml.py."""

    n: str
    t: float
    u: str | None = None
    v: float | None = None
    vb: bool | None = None
    vs: str | None = None


class BlockHeaderOut(BaseModel):
    """The signed block header (DESIGN.md 2.2)."""

    v: int
    dev: str
    h: int
    prev: Base64
    root: Base64
    cnt: int
    t0: int
    t1: int
    ts: int


class InclusionOut(BaseModel):
    """The block's RFC 9162 audit path to the root of the latest checkpoint."""

    checkpoint: str = Field(description="the signed checkpoint note")
    height: int
    size: int
    root: Base64
    log_path: list[Base64]


class BlockOut(BaseModel):
    """An accepted block, its readings, and its inclusion in the log."""

    device: str
    height: int
    hash: Base64 = Field(description="SHA-256 of the payload")
    log_index: int
    block: Base64 = Field(description="the COSE_Sign1 bytes")
    public_key: Base64 = Field(description="the device key that signs this height (from "
                                           "the key history: rotations change it)")
    header: BlockHeaderOut
    readings: list[ReadingOut] = Field(description="empty if the store keeps none for it")
    inclusion: InclusionOut | None = Field(description="null until a checkpoint covers it")


class ProofBundleOut(BaseModel):
    """The proof bundle of DESIGN.md 2.4, for `edgeledger verify BUNDLE --log-key VKEY`."""

    version: int
    reading: Base64
    reading_index: int
    reading_path: list[Base64]
    block: Base64
    device: str
    device_key: Base64
    log_index: int
    log_path: list[Base64]
    checkpoint: str


class EventOut(BaseModel):
    """One journal entry: a rejection, gap, duplicate, equivocation, skew, enrolment..."""

    id: int
    time_ms: int
    kind: str
    device: str | None
    height: int | None
    reason: str


class EventPage(BaseModel):
    """Events oldest first; pass `next` as `after` to go on (it is the last id seen)."""

    events: list[EventOut]
    next: int
