"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys.

The key text formats are the ones Go's golang.org/x/mod/sumdb/note reads, so the
same files work with Go tools:

    verifier: <name>+<hex key hash>+<base64(0x01 || public key)>
    signer:   PRIVATE+KEY+<name>+<hex key hash>+<base64(0x01 || seed)>

key hash = first 4 bytes (big-endian) of SHA-256(name || 0x0A || 0x01 || public key).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.signing

from edgeledger.core import b64
from edgeledger.core.errors import DecodeError, VerificationError

ALG_ED25519 = 0x01
SIG_PREFIX = "\u2014 "
MAX_NOTE = 64 * 1024
MAX_SIGNATURES = 100


def key_hash(name: str, public_key: bytes) -> bytes:
    """The 4-byte key hash that binds a signature line to a key and its name."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def valid_name(name: str) -> bool:
    """A key name: non-empty UTF-8 with no Unicode spaces and no '+' (C2SP signed-note).

    The same rule as Go's note.isValidName, so that a witness whose name Go allows
    never makes us refuse a note Go opens.
    """
    return (bool(name) and "+" not in name and _utf8(name)
            and not any(c.isspace() or c in _GO_SPACES for c in name))


_GO_SPACES = "\x85\xa0"  # unicode.IsSpace in Go; Python's isspace also covers these


def _utf8(text: str) -> bool:
    """True unless `text` holds a lone surrogate (which has no UTF-8 form)."""
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@dataclass(frozen=True)
class Verifier:
    """A public key with its name, as used to check note signatures."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise DecodeError(f"key name {self.name!r}: must be non-empty, without spaces or '+'")
        if len(self.public_key) != 32:
            raise DecodeError(f"key {self.name}: an Ed25519 public key is 32 bytes, "
                              f"not {len(self.public_key)}")

    @property
    def hash(self) -> bytes:
        """The key hash of this name and key."""
        return key_hash(self.name, self.public_key)

    def text(self) -> str:
        """The verifier key in note format."""
        return _format_key(self.name, self.hash, self.public_key)

    @classmethod
    def parse(cls, text: str) -> Verifier:
        """Parse a verifier key; DecodeError says which part is wrong."""
        name, hash_hex, key = _parse_key(text, "", "verifier key")
        verifier = cls(name, key)
        if verifier.hash.hex() != hash_hex:
            raise DecodeError(f"verifier key: key hash {hash_hex} does not match name {name!r} "
                              f"and key (expected {verifier.hash.hex()})")
        return verifier


@dataclass(frozen=True)
class Signer:
    """A private Ed25519 key (32-byte seed) with its name."""

    name: str
    seed: bytes = field(repr=False)
    _key: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise DecodeError(f"key name {self.name!r}: must be non-empty, without spaces or '+'")
        if len(self.seed) != 32:
            raise DecodeError(f"key {self.name}: an Ed25519 seed is 32 bytes, not {len(self.seed)}")
        object.__setattr__(self, "_key", nacl.signing.SigningKey(self.seed))

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A new random key named `name`."""
        return cls(name, bytes(nacl.signing.SigningKey.generate()))

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        return bytes(self._key.verify_key)

    def verifier(self) -> Verifier:
        """The verifier that checks this signer's signatures."""
        return Verifier(self.name, self.public_key)

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature over `message`."""
        return self._key.sign(message).signature

    def text(self) -> str:
        """The signer key in Go's note format (a secret: store it with mode 0600)."""
        return _SIGNER_PREFIX + _format_key(self.name, self.verifier().hash, self.seed)

    @classmethod
    def parse(cls, text: str) -> Signer:
        """Parse a signer key; DecodeError says which part is wrong."""
        name, hash_hex, key = _parse_key(text, _SIGNER_PREFIX, "signer key")
        signer = cls(name, key)
        if signer.verifier().hash.hex() != hash_hex:
            raise DecodeError(f"signer key: key hash {hash_hex} does not match the key")
        return signer


def sign_note(text: str, signer: Signer) -> str:
    """Sign `text` (which must end in a newline) and return the signed note."""
    check_text(text)
    signature = signer.sign(text.encode())
    line = b64.encode(signer.verifier().hash + signature)
    return f"{text}\n{SIG_PREFIX}{signer.name} {line}\n"


def open_note(note: str, verifier: Verifier, check: str = "note signature") -> str:
    """Return the text of `note` once a signature by `verifier` checks out.

    Signatures by other keys are ignored (witnesses may add theirs); a signature
    that claims to be by `verifier` but does not verify is an error.
    """
    text, lines = split_note(note)
    # Like Go's note.Open, only the first signature line for a key counts.
    blob = next((b for name, b in lines if name == verifier.name and b[:4] == verifier.hash),
                None)
    if blob is None:
        raise VerificationError(check, f"no signature by key {verifier.name}+{verifier.hash.hex()}")
    try:
        nacl.signing.VerifyKey(verifier.public_key).verify(text.encode(), blob[4:])
    except (nacl.exceptions.BadSignatureError, ValueError) as exc:
        raise VerificationError(check, f"signature by {verifier.name} does not verify") from exc
    return text


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """Split a signed note into its text and (name, key hash || signature) pairs."""
    if not isinstance(note, str):
        raise DecodeError(f"signed note: expected text, got {type(note).__name__}")
    try:
        size = len(note.encode())
    except UnicodeEncodeError as exc:
        raise DecodeError("signed note: not valid UTF-8 (holds a lone surrogate)") from exc
    if size > MAX_NOTE:
        raise DecodeError(f"signed note: longer than {MAX_NOTE} bytes")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise DecodeError("signed note: no blank line before the signatures")
    text, tail = note[:cut + 1], note[cut + 2:]
    check_text(text)
    if not tail.endswith("\n"):
        raise DecodeError("signed note: the last signature line does not end in a newline")
    lines = tail[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise DecodeError(f"signed note: more than {MAX_SIGNATURES} signatures")
    return text, [_signature_line(line, i) for i, line in enumerate(lines)]


def _signature_line(line: str, i: int) -> tuple[str, bytes]:
    if not line.startswith(SIG_PREFIX):
        raise DecodeError(f"signed note: signature line {i + 1} does not start with an em dash")
    name, space, blob = line[len(SIG_PREFIX):].partition(" ")
    if not space or not valid_name(name):
        raise DecodeError(f"signed note: signature line {i + 1} has no valid key name")
    raw = b64.decode(blob, f"signed note: signature line {i + 1}", canonical=False)
    if len(raw) < 5:
        raise DecodeError(f"signed note: signature line {i + 1} is too short")
    return name, raw


def check_text(text: str) -> None:
    """Check the C2SP note text rules as Go applies them: UTF-8, ending in a newline,
    no control characters but newline."""
    if not isinstance(text, str):
        raise DecodeError(f"note text: expected text, got {type(text).__name__}")
    if not text.endswith("\n"):
        raise DecodeError("note text: must end with a newline")
    if not _utf8(text):
        raise DecodeError("note text: not valid UTF-8 (holds a lone surrogate)")
    if any(c < " " and c != "\n" for c in text):
        raise DecodeError("note text: holds a control character (below U+0020, not newline)")


_SIGNER_PREFIX = "PRIVATE+KEY+"


def _format_key(name: str, key_hash: bytes, key: bytes) -> str:
    return f"{name}+{key_hash.hex()}+{b64.encode(bytes([ALG_ED25519]) + key)}"


def _parse_key(text: str, prefix: str, what: str) -> tuple[str, str, bytes]:
    """Split [prefix]<name>+<hash>+<base64(0x01 || key)> into name, hash and 32-byte key."""
    if not isinstance(text, str):
        raise DecodeError(f"{what}: expected text, got {type(text).__name__}")
    text = text.strip()
    if not text.startswith(prefix):
        raise DecodeError(f"{what}: expected {prefix}<name>+<hash>+<key>")
    name, hash_hex, key = _split_key(text[len(prefix):], what)
    raw = b64.decode(key, what)
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise DecodeError(f"{what}: not an Ed25519 key (want 0x01 and 32 bytes)")
    return name, hash_hex, raw[1:]


def _split_key(text: str, what: str) -> list[str]:
    """Split <name>+<hash>+<key> at the first two '+' (base64 may hold more)."""
    fields = text.split("+", 2)
    if len(fields) != 3 or not valid_name(fields[0]):
        raise DecodeError(f"{what}: expected <name>+<hex hash>+<base64 key>")
    if len(fields[1]) != 8 or any(c not in "0123456789abcdefABCDEF" for c in fields[1]):
        raise DecodeError(f"{what}: key hash {fields[1]!r} is not 8 hex digits")
    fields[1] = fields[1].lower()
    return fields
