"""Checkpoints (DESIGN.md 2.3): strict text parsing, signatures, and the chain rules."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeledger.core import merkle
from edgeledger.core.checkpoint import Checkpoint, check_extends, open_checkpoint
from edgeledger.core.errors import DecodeError, VerificationError
from edgeledger.core.note import Signer, sign_note

ORIGIN = "edgeledger.example/agg-1"
ROOT = hashlib.sha256(b"root").digest()
PREV = hashlib.sha256(b"prev").digest()
R64, P64 = base64.b64encode(ROOT).decode(), base64.b64encode(PREV).decode()
LINES = [ORIGIN, "7", R64, "height 4", f"prev {P64}", "time 1700000000099"]
World = Any  # conftest.World


def text_of(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def with_line(i: int, value: str) -> str:
    lines = list(LINES)
    lines[i] = value
    return text_of(lines)


def test_parse_and_text_round_trip() -> None:
    cp = Checkpoint.parse(text_of(LINES))
    assert cp == Checkpoint(ORIGIN, 7, ROOT, 4, PREV, 1_700_000_000_099)
    assert cp.text() == text_of(LINES)
    assert cp.hash == hashlib.sha256(text_of(LINES).encode()).digest()


def test_extra_lines_after_time_are_kept() -> None:
    text = text_of([*LINES, "witness example.org 17", "", "future-extension x"])
    cp = Checkpoint.parse(text)
    assert cp.extra == ("witness example.org 17", "", "future-extension x")
    assert cp.text() == text
    assert cp.hash != Checkpoint.parse(text_of(LINES)).hash  # they are part of the chain


def test_height_zero_links_to_zero() -> None:
    zero = base64.b64encode(bytes(32)).decode()
    text = text_of([ORIGIN, "0", base64.b64encode(merkle.EMPTY_ROOT).decode(), "height 0",
                    f"prev {zero}", "time 0"])
    cp = Checkpoint.parse(text)
    assert (cp.size, cp.height, cp.prev, cp.time) == (0, 0, bytes(32), 0)


NON_CANONICAL_B64 = R64[:-2] + chr(ord(R64[-2]) + 1) + "="  # padding bits not zero
BAD: list[tuple[str, str, str]] = [
    ("size 01", with_line(1, "01"), "line 2 (size): '01' is not a canonical decimal"),
    ("size +1", with_line(1, "+1"), "line 2 (size): '+1'"),
    ("size -1", with_line(1, "-1"), "line 2 (size): '-1'"),
    ("size empty", with_line(1, ""), "line 2 (size): ''"),
    ("size with space", with_line(1, " 7"), "line 2 (size)"),
    ("size trailing space", with_line(1, "7 "), "line 2 (size)"),
    ("size 1e3", with_line(1, "1e3"), "line 2 (size)"),
    ("size 7.0", with_line(1, "7.0"), "line 2 (size)"),
    ("size hex", with_line(1, "0x7"), "line 2 (size)"),
    ("size underscore", with_line(1, "1_000"), "line 2 (size)"),
    ("size Arabic-Indic digit", with_line(1, "\u0667"), "line 2 (size)"),
    ("size superscript", with_line(1, "\u00b2"), "line 2 (size)"),
    ("size 2**63", with_line(1, str(1 << 63)), "line 2 (size): 9223372036854775808 is too large"),
    ("root 31 bytes", with_line(2, base64.b64encode(ROOT[:31]).decode()),
     "line 3 (root): 31 bytes where 32"),
    ("root non-canonical base64", with_line(2, NON_CANONICAL_B64),
     "line 3 (root): base64 is not in canonical form"),
    ("root without padding", with_line(2, R64.rstrip("=")), "line 3 (root): not valid base64"),
    ("root URL-safe base64", with_line(2, base64.urlsafe_b64encode(b"\xfb" * 32).decode()),
     "line 3 (root): not valid base64"),
    ("root hex", with_line(2, ROOT.hex()), "line 3 (root)"),
    ("height 01", with_line(3, "height 01"), "line 4 (height): '01'"),
    ("height -1", with_line(3, "height -1"), "line 4 (height): '-1'"),
    ("height +1", with_line(3, "height +1"), "line 4 (height): '+1'"),
    ("height two spaces", with_line(3, "height  4"), "line 4 (height)"),
    ("height capitalised", with_line(3, "Height 4"), "line 4: expected 'height <value>'"),
    ("height no space", with_line(3, "height4"), "line 4: expected 'height <value>'"),
    ("prev 33 bytes", with_line(4, "prev " + base64.b64encode(PREV + b"\0").decode()),
     "line 5 (prev): 33 bytes"),
    ("prev missing value", with_line(4, "prev"), "line 5: expected 'prev <value>'"),
    ("prev non-canonical", with_line(4, "prev " + NON_CANONICAL_B64), "line 5 (prev): base64"),
    ("time 00", with_line(5, "time 00"), "line 6 (time): '00'"),
    ("time -5", with_line(5, "time -5"), "line 6 (time): '-5'"),
    ("time tab", with_line(5, "time\t5"), "line 6: expected 'time <value>'"),
    ("prev before height", text_of([*LINES[:3], LINES[4], LINES[3], LINES[5]]),
     "line 4: expected 'height <value>'"),
    ("time before prev", text_of([*LINES[:4], LINES[5], LINES[4]]),
     "line 5: expected 'prev <value>'"),
    ("root and size swapped", text_of([LINES[0], LINES[2], LINES[1], *LINES[3:]]),
     "line 2 (size)"),
    ("no time line", text_of(LINES[:5]), "expected at least 6 lines"),
    ("no height line", text_of([*LINES[:3], *LINES[4:]]), "expected at least 6 lines"),
    ("no height line, one extra", text_of([*LINES[:3], *LINES[4:], "x"]),
     "line 4: expected 'height <value>'"),
    ("only origin", text_of(LINES[:1]), "expected at least 6 lines"),
    ("empty", "", "expected at least 6 lines"),
    ("no final newline", text_of(LINES)[:-1], "each ending in a newline"),
    ("extra line without newline", text_of(LINES) + "x", "each ending in a newline"),
    ("origin with space", with_line(0, "agg 1"), "line 1: origin 'agg 1' is not a valid name"),
    ("origin with +", with_line(0, "agg+1"), "line 1: origin"),
    ("origin empty", with_line(0, ""), "line 1: origin"),
    ("CRLF", text_of(LINES).replace("\n", "\r\n"), "line 1: origin"),
    ("height 0 with prev not zero", text_of([*LINES[:3], "height 0", *LINES[4:]]),
     "line 5 (prev)"),
]


@pytest.mark.parametrize(("text", "needle"), [(t, n) for _, t, n in BAD],
                         ids=[i for i, _, _ in BAD])
def test_parse_rejections_name_the_line(text: str, needle: str) -> None:
    with pytest.raises(DecodeError) as err:
        Checkpoint.parse(text)
    assert str(err.value).startswith("checkpoint")
    assert needle in str(err.value)


# --- signatures ------------------------------------------------------------------------


def test_open_checkpoint(world: World) -> None:
    cp = open_checkpoint(world.note, world.log.verifier())
    assert cp == world.checkpoint
    assert world.note.startswith(cp.text() + "\n\u2014 " + ORIGIN + " ")


def test_open_checkpoint_with_the_wrong_key(world: World,
                                            make_signer: Callable[[str, int], Signer]) -> None:
    for key in (make_signer(ORIGIN, 40).verifier(), make_signer("other.example", 41).verifier(),
                world.device.verifier()):
        with pytest.raises(VerificationError) as err:
            open_checkpoint(world.note, key)
        assert err.value.check == "checkpoint signature"
        assert "no signature by key" in err.value.detail


def test_open_checkpoint_origin_must_be_the_key_name(
        make_signer: Callable[[str, int], Signer]) -> None:
    signer = make_signer("other.example", 42)
    note = sign_note(text_of(LINES), signer)
    with pytest.raises(VerificationError) as err:
        open_checkpoint(note, signer.verifier())
    assert err.value.check == "checkpoint signature"
    assert f"origin {ORIGIN!r} is not the key's name 'other.example'" in err.value.detail


def test_open_checkpoint_signed_garbage(make_signer: Callable[[str, int], Signer]) -> None:
    signer = make_signer(ORIGIN, 43)
    note = sign_note(with_line(1, "07"), signer)
    with pytest.raises(DecodeError, match=r"line 2 \(size\)"):
        open_checkpoint(note, signer.verifier())


def test_changed_line_breaks_the_signature(world: World) -> None:
    for i, line in enumerate(world.checkpoint.text().split("\n")[:6]):
        changed = world.note.replace(line + "\n", line + "0\n" if i else line + "x\n", 1)
        assert changed != world.note
        with pytest.raises(VerificationError) as err:
            open_checkpoint(changed, world.log.verifier())
        assert err.value.check == "checkpoint signature"


# --- the chain ---------------------------------------------------------------------------


def _tree(n: int, salt: bytes = b"") -> merkle.MemoryHashes:
    tree = merkle.MemoryHashes()
    for i in range(n):
        tree.append(merkle.leaf_hash(salt + i.to_bytes(4, "big")))
    return tree


TREE = _tree(20)
FORK = _tree(20, b"fork")


def chain() -> list[Checkpoint]:
    out, prev = [], bytes(32)
    for height, size in enumerate((3, 5, 5, 13)):
        cp = Checkpoint(ORIGIN, size, TREE.root(size), height, prev, 1000 + 10 * height)
        out.append(cp)
        prev = cp.hash
    return out


def proof(old: Checkpoint, new: Checkpoint) -> list[bytes]:
    if old.size > new.size:
        return []
    return merkle.consistency_proof(old.size, new.size, TREE.read_hashes)


CP = chain()


@pytest.mark.parametrize(("old", "new"), [
    (CP[0], CP[1]), (CP[1], CP[2]), (CP[2], CP[3]),  # next height, linked by prev
    (CP[0], CP[3]), (CP[0], CP[2]),  # later heights: consistency only
    (CP[1], CP[1]), (CP[3], CP[3]),  # the same checkpoint again
    (CP[1], replace(CP[2], time=CP[1].time)),  # time may stand still
])
def test_extends_accepts_the_chain(old: Checkpoint, new: Checkpoint) -> None:
    check_extends(old, new, proof(old, new))


BAD_LINKS: list[tuple[str, Checkpoint, Checkpoint, str]] = [
    ("prev not the old hash", CP[0], replace(CP[1], prev=bytes(32)),
     "checkpoint 1 does not link to checkpoint 0 (prev mismatch)"),
    ("prev of the one before", CP[1], replace(CP[2], prev=CP[0].hash),
     "checkpoint 2 does not link to checkpoint 1"),
    ("fork: another root at the same height", CP[1], replace(CP[1], root=FORK.root(5)),
     "two different checkpoints at height 1"),
    ("fork: another time at the same height", CP[1], replace(CP[1], time=CP[1].time + 1),
     "two different checkpoints at height 1"),
    ("fork: an extra line at the same height", CP[1], replace(CP[1], extra=("x",)),
     "two different checkpoints at height 1"),
    ("height goes back", CP[2], CP[1], "height went back from 2 to 1"),
    ("time goes back", CP[1], replace(CP[2], time=CP[1].time - 1),
     "time went back from 1010 to 1009 (heights 1 -> 2)"),
    ("tree shrinks", CP[1], replace(CP[2], size=4, root=TREE.root(4)),
     "tree shrank from size 5 to 4"),
    ("same size, other root", CP[1], replace(CP[2], root=FORK.root(5)),
     "two different roots for size 5"),
    ("inconsistent tree", CP[0], replace(CP[1], root=FORK.root(5)),
     "tree of size 5 does not extend the tree of size 3"),
    ("inconsistent tree, later height", CP[0], replace(CP[3], root=FORK.root(13)),
     "does not extend"),
    ("another origin", CP[0], replace(CP[1], origin="other.example"),
     "origin 'other.example' is not"),
]


@pytest.mark.parametrize(("old", "new", "needle"), [(o, n, w) for _, o, n, w in BAD_LINKS],
                         ids=[i for i, _, _, _ in BAD_LINKS])
def test_extends_rejections(old: Checkpoint, new: Checkpoint, needle: str) -> None:
    with pytest.raises(VerificationError) as err:
        check_extends(old, new, proof(old, new), check="checkpoint chain")
    assert err.value.check == "checkpoint chain"
    assert needle in err.value.detail


def test_extends_rejects_a_tampered_or_wrong_proof() -> None:
    good = proof(CP[0], CP[3])
    for bad in ([bytes([good[0][0] ^ 1]) + good[0][1:], *good[1:]], good[:-1],
                [*good, good[0]], [], proof(CP[1], CP[3])):
        with pytest.raises(VerificationError) as err:
            check_extends(CP[0], CP[3], bad, check="witness")
        assert err.value.check == "witness"


# --- properties ------------------------------------------------------------------------

_int = st.integers(0, (1 << 63) - 1)
_hash = st.binary(min_size=32, max_size=32)
checkpoints = st.builds(
    lambda origin, size, root, height, prev, time, extra: Checkpoint(
        origin, size, root, height, bytes(32) if height == 0 else prev, time, tuple(extra)),
    st.text(st.characters(exclude_categories=("C", "Z"), exclude_characters="+"),
            min_size=1, max_size=30),
    _int, _hash, _int, _hash, _int,
    st.lists(st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=20), max_size=3))


@settings(max_examples=100, deadline=None)
@given(checkpoints)
def test_checkpoint_text_round_trip(cp: Checkpoint) -> None:
    assert Checkpoint.parse(cp.text()) == cp
    assert Checkpoint.parse(cp.text()).text() == cp.text()


@settings(max_examples=30, deadline=None)
@given(checkpoints, st.binary(min_size=32, max_size=32))
def test_signed_checkpoint_round_trip(cp: Checkpoint, seed: bytes) -> None:
    signer = Signer(cp.origin, seed)
    assert open_checkpoint(cp.sign(signer), signer.verifier()) == cp
