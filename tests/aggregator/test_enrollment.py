"""Enrollment decisions and rotation records, without a store."""

from __future__ import annotations

import pytest

from edgeledger.aggregator.enrollment import (
    MAX_ROTATION,
    ROTATION_CONTEXT,
    Action,
    DeviceState,
    EnrollmentError,
    Rotation,
    decide_enroll,
    decide_revoke,
    decide_rotation,
    make_rotation,
    parse_public_key,
    parse_rotation,
    rotation_topic,
)
from edgeledger.core import b64, cbor
from edgeledger.core.errors import DecodeError, VerificationError
from edgeledger.core.note import Signer

OLD = Signer.generate("gw-1")
NEW = Signer.generate("gw-1")
EVIL = Signer.generate("gw-1")
ENROLLED = DeviceState(OLD.public_key, enrolled_ms=1000, revoked_ms=None)


def test_enroll_and_revoke_decisions() -> None:
    key = OLD.public_key
    assert decide_enroll("gw-1", key, None) is Action.ENROLL
    assert decide_enroll("gw-1", key, ENROLLED) is Action.UNCHANGED
    with pytest.raises(EnrollmentError, match="only by a rotation record"):
        decide_enroll("gw-1", NEW.public_key, ENROLLED)
    revoked = DeviceState(key, 1000, 2000)
    with pytest.raises(EnrollmentError, match="revoked at 2000"):
        decide_enroll("gw-1", key, revoked)
    with pytest.raises(EnrollmentError, match="not a device id"):
        decide_enroll("GW 1", key, None)
    assert decide_revoke("gw-1", ENROLLED) is Action.REVOKE
    assert decide_revoke("gw-1", revoked) is Action.UNCHANGED
    with pytest.raises(EnrollmentError, match="not enrolled"):
        decide_revoke("gw-1", None)


def test_public_keys_in_three_spellings() -> None:
    raw = OLD.public_key
    assert parse_public_key(b64.encode(raw), "k") == (raw, None)
    assert parse_public_key(OLD.verifier().text() + "\n", "k") == (raw, "gw-1")
    assert parse_public_key(OLD.text(), "k") == (raw, "gw-1")
    for bad in ("", "AAAA", b64.encode(bytes(31)) + "AAAA", "gw-1+00000000+AAAA"):
        with pytest.raises(DecodeError):
            parse_public_key(bad, "k")


def test_a_valid_rotation_round_trips_and_applies_once() -> None:
    rotation = make_rotation(OLD, "gw-1", NEW.public_key, 5000)
    again = parse_rotation(rotation.encode())
    assert again == rotation
    assert decide_rotation(again, ENROLLED) is Action.ROTATE
    after = DeviceState(NEW.public_key, 6000, None)
    assert decide_rotation(again, after) is Action.UNCHANGED


def test_the_signature_covers_a_domain_separated_body() -> None:
    rotation = make_rotation(OLD, "gw-1", NEW.public_key, 5000)
    body = cbor.encode({"dev": "gw-1", "old": OLD.public_key, "new": NEW.public_key,
                        "ts": 5000})
    assert rotation.signed_bytes() == ROTATION_CONTEXT + body
    # A signature over the bare body (no context), as another format might make, fails.
    bare = Rotation("gw-1", OLD.public_key, NEW.public_key, 5000, OLD.sign(body))
    with pytest.raises(VerificationError, match="rotation signature"):
        decide_rotation(bare, ENROLLED)


@pytest.mark.parametrize("field", ["dev", "new", "ts", "sig"])
def test_any_changed_field_breaks_the_signature(field: str) -> None:
    good = make_rotation(OLD, "gw-1", NEW.public_key, 5000)
    changed = {"dev": {"dev": "gw-2"}, "new": {"new": EVIL.public_key},
               "ts": {"ts": 5001}, "sig": {"sig": bytes(64)}}[field]
    forged = Rotation(**{**vars(good), **changed})
    current = ENROLLED
    with pytest.raises(VerificationError, match="rotation signature"):
        decide_rotation(forged, current)


def test_forged_stale_and_misdirected_rotations_are_refused() -> None:
    by_evil = make_rotation(EVIL, "gw-1", NEW.public_key, 5000)
    with pytest.raises(VerificationError, match="rotation key"):
        decide_rotation(by_evil, ENROLLED)
    claims_old = Rotation("gw-1", OLD.public_key, NEW.public_key, 5000, by_evil.sig)
    with pytest.raises(VerificationError, match="rotation signature"):
        decide_rotation(claims_old, ENROLLED)
    stale = make_rotation(OLD, "gw-1", NEW.public_key, 1000)
    with pytest.raises(VerificationError, match="stale"):
        decide_rotation(stale, ENROLLED)
    good = make_rotation(OLD, "gw-1", NEW.public_key, 5000)
    with pytest.raises(EnrollmentError, match="not enrolled"):
        decide_rotation(good, None)
    with pytest.raises(EnrollmentError, match="cannot reinstate"):
        decide_rotation(good, DeviceState(OLD.public_key, 1000, 2000))
    with pytest.raises(EnrollmentError, match="the new key is the old key"):
        make_rotation(OLD, "gw-1", OLD.public_key, 5000)


def test_malformed_records_raise_decode_error_only() -> None:
    good = make_rotation(OLD, "gw-1", NEW.public_key, 5000).encode()
    body = cbor.decode(good, "r")
    cases = [
        b"", b"\xff", good + b"\x00", good[:-1], bytes(MAX_ROTATION + 1),
        cbor.encode({**body, "extra": 1}),
        cbor.encode({k: v for k, v in body.items() if k != "ts"}),
        cbor.encode({**body, "ts": -1}),
        cbor.encode({**body, "old": bytes(31)}),
        cbor.encode({**body, "dev": "Not An Id"}),
        cbor.encode([body]),
    ]
    for data in cases:
        with pytest.raises(DecodeError):
            parse_rotation(data)


def test_the_rotation_topic_is_under_the_device() -> None:
    assert rotation_topic("edgeledger/v1", "gw-1") == "edgeledger/v1/dev/gw-1/rotate"


def test_base64_keys_with_any_number_of_plus_signs() -> None:
    for _ in range(200):
        raw = Signer.generate("gw-1").public_key
        assert parse_public_key(b64.encode(raw), "k") == (raw, None)
