"""Checkpoints (DESIGN.md 2.3): C2SP tlog-checkpoints with height, prev and time lines.

A checkpoint is the canonical block of the aggregator's chain. Its text is

    <origin>\\n<size>\\n<base64 root>\\nheight <n>\\nprev <base64 hash>\\ntime <ms>\\n

and `prev` is the SHA-256 of the previous checkpoint's note text (the text only,
not its signature lines, so that witnesses can add cosignatures without changing
the chain). Lines after `time` are kept and ignored, so the format can grow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from edgeledger.core import b64, merkle
from edgeledger.core.errors import DecodeError, VerificationError
from edgeledger.core.note import (
    Signer,
    Verifier,
    check_text,
    open_note,
    sign_note,
    valid_name,
)

ZERO_HASH = bytes(32)
MAX_INT = (1 << 63) - 1


@dataclass(frozen=True)
class Checkpoint:
    """One signed state of the log: its size and root, and its place in the chain."""

    origin: str
    size: int
    root: bytes
    height: int
    prev: bytes
    time: int
    extra: tuple[str, ...] = ()

    def text(self) -> str:
        """The note text that is signed."""
        lines = [self.origin, str(self.size), b64.encode(self.root), f"height {self.height}",
                 f"prev {b64.encode(self.prev)}", f"time {self.time}", *self.extra]
        return "\n".join(lines) + "\n"

    @property
    def hash(self) -> bytes:
        """SHA-256 of the note text: what the next checkpoint's `prev` line holds."""
        return hashlib.sha256(self.text().encode()).digest()

    def sign(self, signer: Signer) -> str:
        """The signed note for this checkpoint."""
        return sign_note(self.text(), signer)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Strictly parse checkpoint text; DecodeError names the line at fault."""
        lines = text.split("\n")
        if len(lines) < 7 or lines[-1] != "":
            raise DecodeError("checkpoint: expected at least 6 lines, each ending in a newline")
        origin = lines[0]
        if not valid_name(origin):
            raise DecodeError(f"checkpoint line 1: origin {origin!r} is not a valid name")
        cp = cls(origin=origin,
                 size=_number(lines[1], "checkpoint line 2 (size)"),
                 root=b64.decode(lines[2], "checkpoint line 3 (root)", 32),
                 height=_number(_keyword(lines[3], "height", 4), "checkpoint line 4 (height)"),
                 prev=b64.decode(_keyword(lines[4], "prev", 5), "checkpoint line 5 (prev)", 32),
                 time=_number(_keyword(lines[5], "time", 6), "checkpoint line 6 (time)"),
                 extra=tuple(lines[6:-1]))
        if cp.height == 0 and cp.prev != ZERO_HASH:
            raise DecodeError("checkpoint line 5 (prev): must be 32 zero bytes at height 0")
        try:
            check_text(text)
        except DecodeError as exc:
            raise DecodeError(f"checkpoint: {exc}") from exc
        return cp


def open_checkpoint(note: str, verifier: Verifier) -> Checkpoint:
    """Verify the note's signature by `verifier`, then parse its text."""
    text = open_note(note, verifier, check="checkpoint signature")
    cp = Checkpoint.parse(text)
    if cp.origin != verifier.name:
        raise VerificationError("checkpoint signature",
                                f"checkpoint origin {cp.origin!r} is not the key's name "
                                f"{verifier.name!r}")
    return cp


def check_extends(old: Checkpoint, new: Checkpoint, proof: Sequence[bytes],
                  check: str = "checkpoint chain") -> None:
    """Check that `new` is a later link of the chain `old` is on.

    Same origin; height and time do not go back; the tree of `new` extends the tree
    of `old` (RFC 9162 consistency proof); at the next height, `prev` is `old`'s hash;
    at the same height, the two are the same checkpoint.
    """
    if new.origin != old.origin:
        raise VerificationError(check, f"origin {new.origin!r} is not {old.origin!r}")
    if new.height < old.height:
        raise VerificationError(check, f"height went back from {old.height} to {new.height}")
    if new.height == old.height:
        if new != old:
            raise VerificationError(check, f"two different checkpoints at height {new.height}")
        return
    if new.time < old.time:
        raise VerificationError(check, f"time went back from {old.time} to {new.time} "
                                       f"(heights {old.height} -> {new.height})")
    if new.height == old.height + 1 and new.prev != old.hash:
        raise VerificationError(check, f"checkpoint {new.height} does not link to "
                                       f"checkpoint {old.height} (prev mismatch)")
    merkle.verify_consistency(old.size, new.size, old.root, new.root, proof, check=check)


def _keyword(line: str, keyword: str, number: int) -> str:
    prefix = keyword + " "
    if not line.startswith(prefix):
        raise DecodeError(f"checkpoint line {number}: expected '{keyword} <value>', "
                          f"got {line[:40]!r}")
    return line[len(prefix):]


def _number(text: str, what: str) -> int:
    """A non-negative decimal in canonical form (no sign, no leading zeros)."""
    if not text.isascii() or not text.isdigit() or str(int(text)) != text:
        raise DecodeError(f"{what}: {text[:40]!r} is not a canonical decimal number")
    value = int(text)
    if value > MAX_INT:
        raise DecodeError(f"{what}: {value} is too large")
    return value
