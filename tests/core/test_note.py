"""C2SP signed notes and Go sumdb/note key formats, checked against Go's own vectors."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeledger.core.errors import DecodeError, VerificationError
from edgeledger.core.note import (
    MAX_NOTE,
    MAX_SIGNATURES,
    Signer,
    Verifier,
    key_hash,
    open_note,
    sign_note,
    split_note,
    valid_name,
)

# golang.org/x/mod/sumdb/note: doc.go example and note_test.go
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = ("If you think cryptography is the answer to your problem,\n"
           "then you don't know what your problem is.\n")
GO_SIG = ("x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6Ryy"
          "BwJnAM=")
GO_NOTE = GO_TEXT + "\n\u2014 PeterNeumann " + GO_SIG + "\n"
# transparency-dev/formats note tests: a key whose base64 holds a '+'
PLUS_VKEY = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"


# --- keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "name"), [(PETER_VKEY, "PeterNeumann"),
                                            (ENOCH_VKEY, "EnochRoot"), (PLUS_VKEY, "TEST")])
def test_go_verifier_keys_parse_and_format_back(text: str, name: str) -> None:
    v = Verifier.parse(text)
    assert v.name == name
    assert v.text() == text
    assert v.hash.hex() == text.split("+")[1]
    assert v.public_key == base64.b64decode(text.split("+", 2)[2])[1:]
    assert Verifier.parse(f"  {text}\n") == v  # a key file with a newline


def test_go_signer_key_parses_and_formats_back() -> None:
    s = Signer.parse(PETER_SKEY)
    assert "+" in PETER_SKEY.split("+", 4)[4]  # the base64 itself holds a '+'
    assert s.name == "PeterNeumann"
    assert s.text() == PETER_SKEY
    assert s.verifier() == Verifier.parse(PETER_VKEY)
    assert s.verifier().text() == PETER_VKEY


def test_key_hash_is_the_c2sp_formula() -> None:
    v = Verifier.parse(PETER_VKEY)
    expected = hashlib.sha256(b"PeterNeumann\n\x01" + v.public_key).digest()[:4]
    assert key_hash("PeterNeumann", v.public_key) == expected == bytes.fromhex("c74f20a3")


def test_go_sign_is_reproduced_byte_for_byte() -> None:
    assert sign_note(GO_TEXT, Signer.parse(PETER_SKEY)) == GO_NOTE


def test_go_note_opens() -> None:
    assert open_note(GO_NOTE, Verifier.parse(PETER_VKEY)) == GO_TEXT


def _manglings(key: str) -> list[str]:
    """Go's TestNewVerifier/TestNewSigner manglings: every proper substring, every byte + 1."""
    out = {key[i:j] for i in range(len(key) + 1) for j in range(i + 1, len(key) + 1)
           if (i, j) != (0, len(key))}
    out |= {key[:i] + chr(ord(key[i]) + 1) + key[i + 1:] for i in range(len(key))}
    return sorted(out - {key})


def test_go_verifier_manglings_rejected() -> None:
    for bad in _manglings(PETER_VKEY):
        with pytest.raises(DecodeError, match=r"verifier key|key name|key "):
            Verifier.parse(bad)


def test_go_signer_manglings_rejected() -> None:
    for bad in _manglings(PETER_SKEY):
        with pytest.raises(DecodeError):
            Signer.parse(bad)


PETER_B64 = PETER_VKEY.split("+", 2)[2]
KEY32 = base64.b64decode(PETER_B64)[1:]
BAD_VERIFIERS = [
    ("no parts", "PeterNeumann", "expected <name>+<hex hash>+<base64 key>"),
    ("two parts", "PeterNeumann+c74f20a3", "expected <name>+<hex hash>+<base64 key>"),
    ("empty name", "+c74f20a3+" + PETER_B64, "expected <name>"),
    ("name with space", "Peter Neumann+c74f20a3+" + PETER_B64, "expected <name>"),
    ("short hash", "PeterNeumann+c74f20a+" + PETER_B64, "not 8 hex digits"),
    ("non-hex hash", "PeterNeumann+c74f20ag+" + PETER_B64, "not 8 hex digits"),
    ("wrong hash", "PeterNeumann+c74f20a4+" + PETER_B64, "does not match name"),
    ("other name, same key", "PeterNeuman+c74f20a3+" + PETER_B64, "does not match name"),
    ("not base64", "PeterNeumann+c74f20a3+ARpc2QcU!", "not valid base64"),
    ("base64 without padding", "PeterNeumann+c74f20a3+" + PETER_B64.rstrip("=") + "A",
     "verifier key"),
    ("excess padding", "PeterNeumann+c74f20a3+" + PETER_B64 + "=", "base64"),
    ("newline in base64", "PeterNeumann+c74f20a3+" + PETER_B64[:20] + "\n" + PETER_B64[20:],
     "not valid base64"),
    ("alg 0x02", "PeterNeumann+c74f20a3+" + base64.b64encode(b"\x02" + KEY32).decode(),
     "not an Ed25519 key"),
    ("31-byte key", "PeterNeumann+c74f20a3+" + base64.b64encode(b"\x01" + KEY32[:31]).decode(),
     "not an Ed25519 key"),
    ("33-byte key", "PeterNeumann+c74f20a3+" + base64.b64encode(b"\x01" + KEY32 + b"\0").decode(),
     "not an Ed25519 key"),
    ("signer given as verifier", PETER_SKEY, "verifier key"),
]


@pytest.mark.parametrize(("text", "needle"), [(t, n) for _, t, n in BAD_VERIFIERS],
                         ids=[i for i, _, _ in BAD_VERIFIERS])
def test_verifier_rejections_say_which_part(text: str, needle: str) -> None:
    with pytest.raises(DecodeError, match="verifier key") as err:
        Verifier.parse(text)
    assert needle in str(err.value)


@pytest.mark.parametrize(("text", "needle"), [
    ("PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz", "PRIVATE+KEY+"),
    ("private+key+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
     "PRIVATE+KEY+"),
    ("PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
     "does not match the key"),
    ("PRIVATE+KEY+PeterNeumann+c74f20a3+AoEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
     "not an Ed25519 key"),
    ("PRIVATE+KEY+PeterNeumann+c74f20a3", "expected <name>"),
    ("PRIVATE+KEY+" + PETER_VKEY, "not an Ed25519 key|does not match"),
])
def test_signer_rejections_say_which_part(text: str, needle: str) -> None:
    with pytest.raises(DecodeError, match="signer key") as err:
        Signer.parse(text)
    assert any(n in str(err.value) for n in needle.split("|"))


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\tb", "tab\u0085", "nb\u00a0sp",
                                  "x\n", "\ud800"])
def test_invalid_key_names(name: str) -> None:
    assert not valid_name(name)
    with pytest.raises(DecodeError, match="key name"):
        Verifier(name, bytes(32))
    with pytest.raises(DecodeError, match="key name"):
        Signer(name, bytes(32))


@pytest.mark.parametrize("name", ["a", "PeterNeumann", "edgeledger.example/agg-1", "é", "日本"])
def test_valid_key_names(name: str) -> None:
    assert valid_name(name)
    assert Verifier.parse(Signer(name, bytes(32)).verifier().text()).name == name


def test_key_sizes() -> None:
    with pytest.raises(DecodeError, match="public key is 32 bytes, not 31"):
        Verifier("a", bytes(31))
    with pytest.raises(DecodeError, match="seed is 32 bytes, not 33"):
        Signer("a", bytes(33))


# --- notes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def peter() -> Signer:
    return Signer.parse(PETER_SKEY)


def test_signatures_by_other_keys_are_ignored(peter: Signer,
                                              make_signer: Callable[[str, int], Signer]) -> None:
    witness = make_signer("witness.example", 31)
    cosigned = GO_NOTE + sign_note(GO_TEXT, witness).split("\n\n")[-1]
    assert cosigned.count("\u2014 ") == 2
    assert open_note(cosigned, peter.verifier()) == GO_TEXT
    assert open_note(cosigned, witness.verifier()) == GO_TEXT
    # the witness's line first
    witness_first = GO_TEXT + "\n" + cosigned.split("\n\n")[1].split("\n")[1] + "\n" \
        + GO_NOTE.split("\n\n")[1]
    assert open_note(witness_first, peter.verifier()) == GO_TEXT
    # an unknown key's garbage signature is ignored too
    junk = GO_NOTE + "\u2014 someone " + base64.b64encode(b"\x00" * 68).decode() + "\n"
    assert open_note(junk, peter.verifier()) == GO_TEXT
    with pytest.raises(VerificationError, match=re.escape("no signature by key witness.example")):
        open_note(GO_NOTE, witness.verifier())


def test_bad_signature_by_the_right_key_is_rejected(peter: Signer) -> None:
    blob = bytearray(base64.b64decode(GO_SIG))
    blob[10] ^= 0x40
    bad = GO_TEXT + "\n\u2014 PeterNeumann " + base64.b64encode(blob).decode() + "\n"
    with pytest.raises(VerificationError) as err:
        open_note(bad, peter.verifier())
    assert err.value.check == "note signature"
    assert "signature by PeterNeumann does not verify" in str(err.value)
    # the check is named as asked
    with pytest.raises(VerificationError) as err:
        open_note(bad, peter.verifier(), check="log key")
    assert err.value.check == "log key"
    # like Go's note.Open, only the first line for a key counts: a later bad copy is ignored,
    # an earlier one is not
    assert open_note(GO_NOTE + bad.split("\n\n")[1], peter.verifier()) == GO_TEXT
    with pytest.raises(VerificationError, match="does not verify"):
        open_note(bad + GO_NOTE.split("\n\n")[1], peter.verifier())
    # a signature that is too short for Ed25519
    short = GO_TEXT + "\n\u2014 PeterNeumann " + base64.b64encode(blob[:20]).decode() + "\n"
    with pytest.raises(VerificationError, match="does not verify"):
        open_note(short, peter.verifier())


def test_changed_text_fails_the_signature(peter: Signer) -> None:
    with pytest.raises(VerificationError, match="does not verify"):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), peter.verifier())


def test_same_name_other_key_is_not_the_key(peter: Signer,
                                            make_signer: Callable[[str, int], Signer]) -> None:
    impostor = make_signer("PeterNeumann", 32)
    forged = sign_note(GO_TEXT, impostor)
    with pytest.raises(VerificationError,
                       match=re.escape("no signature by key PeterNeumann+c74f20a3")):
        open_note(forged, peter.verifier())
    # the right key hash under another name is not the key either
    renamed = GO_NOTE.replace("\u2014 PeterNeumann ", "\u2014 PeterNeumann2 ")
    with pytest.raises(VerificationError, match="no signature by key"):
        open_note(renamed, peter.verifier())


SIG_LINE = "\u2014 PeterNeumann " + GO_SIG + "\n"
BAD_NOTES = [
    ("no blank line", GO_TEXT + SIG_LINE, "no blank line before the signatures"),
    ("no signatures", GO_TEXT + "\n", "does not end in a newline"),
    ("no final newline", GO_NOTE[:-1], "does not end in a newline"),
    ("CRLF", GO_NOTE.replace("\n", "\r\n"), "blank line|control character"),
    ("hyphen not em dash", GO_TEXT + "\n- PeterNeumann " + GO_SIG + "\n",
     "signature line 1 does not start with an em dash"),
    ("blank line at the end", GO_NOTE + "\n", "does not end in a newline"),
    ("no space after name", GO_TEXT + "\n\u2014 PeterNeumann\n", "line 1 has no valid key name"),
    ("empty name", GO_TEXT + "\n\u2014  " + GO_SIG + "\n", "line 1 has no valid key name"),
    ("name with +", GO_TEXT + "\n\u2014 Peter+Neumann " + GO_SIG + "\n", "no valid key name"),
    ("not base64", GO_TEXT + "\n\u2014 PeterNeumann x08go!\n", "line 1: not valid base64"),
    ("two spaces", GO_TEXT + "\n\u2014 PeterNeumann  " + GO_SIG + "\n", "not valid base64"),
    ("trailing space", GO_NOTE[:-1] + " \n", "not valid base64"),
    ("4-byte blob", GO_TEXT + "\n\u2014 PeterNeumann AAAAAA==\n", "line 1 is too short"),
    ("control char in text", "a\x00b\n\n" + SIG_LINE, "note text: holds a control character"),
    ("tab in text", "a\tb\n\n" + SIG_LINE, "control character"),
    ("too many signatures", GO_TEXT + "\n" + SIG_LINE * (MAX_SIGNATURES + 1),
     f"more than {MAX_SIGNATURES} signatures"),
    ("oversize", "x" * MAX_NOTE + "\n\n" + SIG_LINE, f"longer than {MAX_NOTE} bytes"),
    ("oversize in UTF-8 bytes", "é" * (MAX_NOTE // 2) + "\n\n" + SIG_LINE, "longer than"),
    ("lone surrogate in text", "a\ud800b\n\n" + SIG_LINE, "note"),
    ("lone surrogate in name", GO_TEXT + "\n\u2014 Peter\udc80 " + GO_SIG + "\n", "note"),
]


@pytest.mark.parametrize(("note", "needle"), [(n, w) for _, n, w in BAD_NOTES],
                         ids=[i for i, _, _ in BAD_NOTES])
def test_malformed_notes(peter: Signer, note: str, needle: str) -> None:
    with pytest.raises(DecodeError) as err:
        split_note(note)
    assert any(n in str(err.value) for n in needle.split("|"))
    with pytest.raises(DecodeError):
        open_note(note, peter.verifier())


def test_split_note_returns_text_and_signature_blobs() -> None:
    text, sigs = split_note(GO_NOTE)
    assert text == GO_TEXT
    assert sigs == [("PeterNeumann", base64.b64decode(GO_SIG))]
    assert sigs[0][1][:4].hex() == "c74f20a3"


@pytest.mark.parametrize("text", ["", "no newline", "a\x01\n", "tab\there\n", "\ud800\n"])
def test_sign_note_refuses_bad_text(peter: Signer, text: str) -> None:
    with pytest.raises(DecodeError, match="note text"):
        sign_note(text, peter)


# --- properties ------------------------------------------------------------------------

names = st.text(st.characters(exclude_categories=("C", "Z"), exclude_characters="+"),
                min_size=1, max_size=20)
texts = st.lists(st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=30),
                 min_size=1, max_size=5).map(lambda lines: "\n".join(lines) + "\n")


@settings(max_examples=60, deadline=None)
@given(names, st.binary(min_size=32, max_size=32))
def test_key_texts_round_trip(name: str, seed: bytes) -> None:
    signer = Signer(name, seed)
    assert Signer.parse(signer.text()) == signer
    assert Verifier.parse(signer.verifier().text()) == signer.verifier()


@settings(max_examples=60, deadline=None)
@given(texts, names, st.binary(min_size=32, max_size=32))
def test_sign_open_round_trip(text: str, name: str, seed: bytes) -> None:
    signer = Signer(name, seed)
    note = sign_note(text, signer)
    assert open_note(note, signer.verifier()) == text
    assert split_note(note)[0] == text
    other = Signer(name + "x", seed)
    assert open_note(note + sign_note(text, other).rsplit("\n\n", 1)[1], other.verifier()) == text


def test_go_leniencies_are_matched(peter: Signer) -> None:
    """What Go's note package accepts, we accept too (found by the Go interop tests)."""
    upper = Verifier.parse("PeterNeumann+C74F20A3+" + PETER_B64)
    assert upper == peter.verifier()
    assert valid_name("w\u200bx") and valid_name("del\x7f")
    # unused low bits set in a signature's base64: another spelling of the same signature
    loose = GO_TEXT + "\n\u2014 PeterNeumann " + GO_SIG[:-2] + "N=\n"
    if loose != GO_NOTE:
        assert open_note(loose, peter.verifier()) == GO_TEXT
    text = "log.example/a\nDEL \x7f and NEL \u0085 are not below U+0020\n"
    assert open_note(sign_note(text, peter), peter.verifier()) == text
