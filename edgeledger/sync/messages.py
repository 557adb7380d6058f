"""The MQTT payloads of DESIGN.md 3 as typed values: deterministic CBOR out, strict in.

Every `decode` takes the payload bytes as they came off the wire and either returns
the value or raises DecodeError naming the message and the key at fault; nothing
else escapes (unknown or missing keys, wrong types, non-deterministic CBOR,
trailing bytes and oversized payloads are all DecodeError). `encode(decode(b)) == b`
for every payload accepted, so each value has exactly one encoding.

Which keys are optional
-----------------------
- Hello `{"tip", "acked"}`: both keys always present; each is a height or null
  (null: no block sealed / none acked yet). `acked <= tip`, and no `acked` without
  a `tip`.
- Ack `{"next", "status", "why"?, "log_index"?, "checkpoint"?}`. `next` and `status`
  are always present. The aggregator holds every block below `next` (a device's
  blocks enter the log in height order), so every ack is cumulative. For `ok` and
  `dup`, `next` is h + 1 where h is the height of the block answered, and
  `log_index` (present for these two only) is that block's index in the log:
  a device learns the index of every block it is told the log holds, which is what
  lets it work out which blocks a checkpoint covers. (So a `dup` answers with the
  duplicate's h + 1, not with the aggregator's expected height; that is said by
  `gap`.) The answer to a DROP record (device topic `drop`) is `ok` or `dup` with
  `next` = the record's h1 + 1 and no `log_index` (dropped heights have no entry);
  its `why` says so. For `gap` and `rejected`, `next` is the height the aggregator expects.
  `why` is present only when non-empty (required for `rejected`, which must say
  why). `checkpoint`, when present, is a signed checkpoint note the
  aggregator piggybacks; the device treats it like one from `<p>/checkpoint`.
  Omitting empty optional keys, rather than sending nulls, keeps one encoding per value.
- State `{"online", "tip", "backlog", "version"}`: all keys present; `tip` may be
  null (a device with no block yet), `version` is 1..64 characters.
- ConsistencyRequest `{"from", "to"}` and ConsistencyProof `{"from", "to", "proof"}`:
  all keys present, `from <= to`, at most 64 hashes of 32 bytes.

The consistency proof travels over MQTT
---------------------------------------
DESIGN.md 3 lets the device get the proof between its last kept checkpoint and a
new one "from the aggregator (a topic or an HTTP call)". We use two topics:
the device publishes ConsistencyRequest on `<p>/dev/<id>/cons` and the aggregator
answers ConsistencyProof on `<p>/dev/<id>/proof` (QoS 1, not retained). Reasons:
the device then needs one connection, one set of credentials and one ACL (its own
`<p>/dev/<id>/#`), no HTTP client and no route to the API; an offline-first gateway
that reaches the broker can check checkpoints with nothing else reachable; and the
state machine stays one stream of events. The proof is self-checking (it is
verified against the two signed roots), so the channel adds no trust. The HTTP
route `/v1/consistency?from=&to=` stays available to auditors.

The checkpoint topic's payload is the note text itself (UTF-8), not CBOR, so that
any subscriber can read it; `decode_checkpoint_payload` caps and decodes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from edgeledger.core import cbor
from edgeledger.core.errors import DecodeError
from edgeledger.core.merkle import HASH_SIZE, MAX_PROOF_HASHES
from edgeledger.core.note import MAX_NOTE

STATUSES = ("ok", "dup", "gap", "rejected")
MAX_WHY = 1024
"""Longest `why` text, in characters."""
MAX_VERSION = 64
MAX_HELLO = 64
MAX_STATE = 256
MAX_ACK = MAX_NOTE + 4 * MAX_WHY + 64
MAX_CONS = 64
MAX_PROOF = MAX_PROOF_HASHES * (HASH_SIZE + 2) + 64


def _height_or_null(value: object) -> bool:
    return value is None or cbor.is_uint(value)


def _open(data: bytes, what: str, cap: int, required: frozenset[str],
          optional: frozenset[str] = frozenset()) -> Mapping[str, Any]:
    return cbor.expect_map(cbor.decode(data, what, cap), required, optional, what)


@dataclass(frozen=True)
class Hello:
    """Device -> aggregator on every connect: its newest sealed and newest acked height."""

    tip: int | None
    acked: int | None
    WHAT: ClassVar[str] = "hello message"

    def encode(self) -> bytes:
        """Deterministic CBOR `{"tip": h|null, "acked": h|null}`."""
        return cbor.encode({"tip": self.tip, "acked": self.acked})

    @classmethod
    def decode(cls, data: bytes) -> Hello:
        """Strictly decode a hello payload."""
        what = cls.WHAT
        m = _open(data, what, MAX_HELLO, frozenset({"tip", "acked"}))
        for key in ("tip", "acked"):
            cbor.field(m, key, _height_or_null, "a height (unsigned integer) or null", what)
        tip, acked = m["tip"], m["acked"]
        if acked is not None and (tip is None or acked > tip):
            raise DecodeError(f"{what}: key 'acked' {acked} is beyond key 'tip' {tip}")
        return cls(tip, acked)


@dataclass(frozen=True)
class Ack:
    """Aggregator -> device: the answer to one sync message (see the module doc)."""

    next: int
    status: str
    why: str = ""
    log_index: int | None = None
    checkpoint: str | None = None
    WHAT: ClassVar[str] = "ack message"

    def __post_init__(self) -> None:
        # Refuse to build what decode would refuse, so a bad Ack fails at its author.
        self.check(self.WHAT)

    def check(self, what: str) -> None:
        """The rules that tie the fields together."""
        if not cbor.is_uint(self.next):
            raise DecodeError(f"{what}: key 'next' must be an unsigned integer, got {self.next!r}")
        if self.status not in STATUSES:
            raise DecodeError(f"{what}: key 'status' must be one of {', '.join(STATUSES)}, "
                              f"got {str(self.status)[:40]!r}")
        indexed = self.status in ("ok", "dup")
        if not indexed and self.log_index is not None:
            raise DecodeError(f"{what}: key 'log_index' is only for ok and dup, "
                              f"status is {self.status!r}")
        if indexed and self.log_index is None and not self.why:
            raise DecodeError(f"{what}: key 'log_index' must be present for {self.status} "
                              "(only the answer to a DROP record omits it, and says why)")
        if self.log_index is not None and not cbor.is_uint(self.log_index):
            raise DecodeError(f"{what}: key 'log_index' must be an unsigned integer")
        if self.status == "ok" and self.next == 0:
            raise DecodeError(f"{what}: an ok ack has next >= 1 (next - 1 was appended)")
        if not isinstance(self.why, str) or len(self.why) > MAX_WHY:
            raise DecodeError(f"{what}: key 'why' must be text of at most {MAX_WHY} characters")
        if self.status == "rejected" and not self.why:
            raise DecodeError(f"{what}: a rejected ack must say why")
        if self.checkpoint is not None and not (isinstance(self.checkpoint, str)
                                                and 0 < len(self.checkpoint) <= MAX_NOTE):
            raise DecodeError(f"{what}: key 'checkpoint' must be note text of 1..{MAX_NOTE} "
                              "characters")

    def encode(self) -> bytes:
        """Deterministic CBOR; empty optional keys are left out."""
        m: dict[str, object] = {"next": self.next, "status": self.status}
        if self.why:
            m["why"] = self.why
        if self.log_index is not None:
            m["log_index"] = self.log_index
        if self.checkpoint is not None:
            m["checkpoint"] = self.checkpoint
        return cbor.encode(m)

    @classmethod
    def decode(cls, data: bytes) -> Ack:
        """Strictly decode an ack payload."""
        what = cls.WHAT
        m = _open(data, what, MAX_ACK, frozenset({"next", "status"}),
                  frozenset({"why", "log_index", "checkpoint"}))
        cbor.field(m, "next", cbor.is_uint, "an unsigned integer (a height)", what)
        cbor.field(m, "status", lambda x: x in STATUSES, f"one of {', '.join(STATUSES)}", what)
        if "why" in m:
            cbor.field(m, "why", lambda x: isinstance(x, str) and 0 < len(x) <= MAX_WHY,
                       f"text of 1..{MAX_WHY} characters (left out when empty)", what)
        if "log_index" in m:
            cbor.field(m, "log_index", cbor.is_uint, "an unsigned integer", what)
        if "checkpoint" in m:
            cbor.field(m, "checkpoint", lambda x: isinstance(x, str) and len(x) > 0,
                       "checkpoint note text", what)
        return cls(m["next"], m["status"], m.get("why", ""), m.get("log_index"),
                   m.get("checkpoint"))


@dataclass(frozen=True)
class State:
    """The device's retained status, also its last will (with online false)."""

    online: bool
    tip: int | None
    backlog: int
    version: str
    WHAT: ClassVar[str] = "state message"

    def encode(self) -> bytes:
        """Deterministic CBOR `{"online", "tip", "backlog", "version"}`."""
        return cbor.encode({"online": self.online, "tip": self.tip, "backlog": self.backlog,
                            "version": self.version})

    @classmethod
    def decode(cls, data: bytes) -> State:
        """Strictly decode a state payload."""
        what = cls.WHAT
        m = _open(data, what, MAX_STATE, frozenset({"online", "tip", "backlog", "version"}))
        cbor.field(m, "online", lambda x: isinstance(x, bool), "true or false", what)
        cbor.field(m, "tip", _height_or_null, "a height or null", what)
        cbor.field(m, "backlog", cbor.is_uint, "an unsigned integer", what)
        cbor.field(m, "version", lambda x: isinstance(x, str) and 0 < len(x) <= MAX_VERSION,
                   f"text of 1..{MAX_VERSION} characters", what)
        if m["tip"] is None and m["backlog"] != 0:
            raise DecodeError(f"{what}: key 'backlog' is {m['backlog']} with no tip")
        return cls(m["online"], m["tip"], m["backlog"], m["version"])


def _sizes(m: Mapping[str, Any], what: str) -> tuple[int, int]:
    cbor.field(m, "from", cbor.is_uint, "a tree size (unsigned integer)", what)
    cbor.field(m, "to", cbor.is_uint, "a tree size (unsigned integer)", what)
    if m["from"] > m["to"]:
        raise DecodeError(f"{what}: key 'from' {m['from']} is larger than key 'to' {m['to']}")
    return m["from"], m["to"]


@dataclass(frozen=True)
class ConsistencyRequest:
    """Device -> aggregator on `cons`: prove that tree `to` extends tree `from`."""

    old_size: int
    new_size: int
    WHAT: ClassVar[str] = "consistency request"

    def encode(self) -> bytes:
        """Deterministic CBOR `{"from": size, "to": size}`."""
        return cbor.encode({"from": self.old_size, "to": self.new_size})

    @classmethod
    def decode(cls, data: bytes) -> ConsistencyRequest:
        """Strictly decode a consistency request."""
        m = _open(data, cls.WHAT, MAX_CONS, frozenset({"from", "to"}))
        return cls(*_sizes(m, cls.WHAT))


@dataclass(frozen=True)
class ConsistencyProof:
    """Aggregator -> device on `proof`: the RFC 9162 consistency proof `from` -> `to`."""

    old_size: int
    new_size: int
    proof: tuple[bytes, ...]
    WHAT: ClassVar[str] = "consistency proof"

    def encode(self) -> bytes:
        """Deterministic CBOR `{"from", "to", "proof": [32-byte hashes]}`."""
        return cbor.encode({"from": self.old_size, "to": self.new_size, "proof": list(self.proof)})

    @classmethod
    def decode(cls, data: bytes) -> ConsistencyProof:
        """Strictly decode a consistency proof message (its hashes are checked by the caller)."""
        what = cls.WHAT
        m = _open(data, what, MAX_PROOF, frozenset({"from", "to", "proof"}))
        old, new = _sizes(m, what)
        cbor.field(m, "proof", lambda x: isinstance(x, list) and len(x) <= MAX_PROOF_HASHES
                   and all(cbor.is_hash(h) for h in x),
                   f"a list of at most {MAX_PROOF_HASHES} 32-byte hashes", what)
        return cls(old, new, tuple(m["proof"]))


def decode_checkpoint_payload(data: bytes) -> str:
    """The note text published on `<p>/checkpoint`: UTF-8, at most MAX_NOTE bytes."""
    what = "checkpoint message"
    if not isinstance(data, (bytes, bytearray)):
        raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
    if not 0 < len(data) <= MAX_NOTE:
        raise DecodeError(f"{what}: {len(data)} bytes; a note is 1..{MAX_NOTE} bytes")
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
