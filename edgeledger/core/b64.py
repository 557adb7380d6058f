"""Standard base64 (RFC 4648 section 4), decoded strictly for signed data."""

from __future__ import annotations

import base64
import binascii

from edgeledger.core.errors import DecodeError


def encode(raw: bytes) -> str:
    """Standard base64 with padding."""
    return base64.b64encode(raw).decode()


def decode(text: str, what: str, size: int | None = None, canonical: bool = True) -> bytes:
    """Decode canonical standard base64; DecodeError names `what` and the fault.

    Canonical means the text is exactly what `encode` gives for the bytes, so one
    value has one spelling (`canonical=False` allows unused low bits set, as Go's
    decoder does, where a second spelling is harmless). With `size`, the decoded
    length must be exactly that.
    """
    if not isinstance(text, str):
        raise DecodeError(f"{what}: expected base64 text, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"{what}: not valid base64") from exc
    if canonical and encode(raw) != text:
        raise DecodeError(f"{what}: base64 is not in canonical form")
    if size is not None and len(raw) != size:
        raise DecodeError(f"{what}: {len(raw)} bytes where {size} are expected")
    return raw
