"""The pycose side of the interop tests. Runs inside the pycose env (cbor2 5).

Started by test_pycose.py as `ENV/bin/python pycose_peer.py --serve`: one JSON
request per line on stdin, one JSON answer per line on stdout, bytes as hex.
Without --serve it answers a single request read from stdin, for use by hand:

    echo '{"cmd": "info"}' | .venv/envs/pycose/bin/python tests/interop/pycose_peer.py

Commands:
  info     versions of cbor2 and pycose and where edgeledger is imported from
  verify   {"blocks": [{"cose", "key"}]}: pycose decodes each block and checks its
           signature with an OKP Ed25519 key built from the device public key
  sign     {"blocks": [{"seed", "header": {...}, "order": ["alg", "kid"]}]}: pycose
           signs our BlockHeader(...).encode() as a tagged COSE_Sign1; before
           answering it checks that pycose accepts its own block and rejects the
           block with one payload byte or one signature byte flipped
  vectors  {"theirs": {name: hex}}: cbor2_vectors made here under cbor2 5, and each of
           the main env's vectors decoded and encoded again here
  reencode {"items": [[name, hex]]}: decode and encode again, as above
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

import cbor2
import cbor2_vectors
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys.curves import Ed25519
from pycose.keys.okp import OKPKey
from pycose.messages import Sign1Message

import edgeledger
from edgeledger.core.block import BlockHeader
from edgeledger.core.errors import EdgeLedgerError


def info(_: dict[str, Any]) -> dict[str, Any]:
    """What this env really runs."""
    return {"cbor2": importlib.metadata.version("cbor2"),
            "cbor2_c_extension": type(cbor2.dumps).__name__ == "builtin_function_or_method",
            "pycose": importlib.metadata.version("pycose"),
            "edgeledger": edgeledger.__file__, "python": sys.executable}


def pycose_verify(cose: bytes, public_key: bytes) -> dict[str, Any]:
    """Decode and verify one block with pycose; `ok` is True only for a good signature."""
    try:
        msg = Sign1Message.decode(cose)
        msg.key = OKPKey(crv=Ed25519, x=public_key)
        ok = msg.verify_signature()
    # pycose signals malformed input with many exception types; each one is a rejection.
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    alg = msg.get_attr(Algorithm)
    kid = msg.phdr.get(KID)
    return {"ok": ok is True, "error": None, "phdr": msg.phdr_encoded.hex(),
            "alg": getattr(alg, "identifier", None), "kid": kid.hex() if kid else None,
            "uhdr": len(msg.uhdr), "payload": msg.payload.hex()}


def verify(req: dict[str, Any]) -> dict[str, Any]:
    """pycose's verdict on each block."""
    return {"results": [pycose_verify(bytes.fromhex(b["cose"]), bytes.fromhex(b["key"]))
                        for b in req["blocks"]]}


def flip(cose: bytes, part: int, offset: int = -1) -> bytes:
    """`cose` with the low bit of one byte of part 2 (payload) or 3 (signature) flipped."""
    parts = list(cbor2.loads(cose).value)
    data = bytearray(parts[part])
    data[offset] ^= 1
    parts[part] = bytes(data)
    return cbor2.dumps(cbor2.CBORTag(18, parts))


def sign_one(seed: bytes, fields: dict[str, Any], order: list[str]) -> dict[str, Any]:
    """Sign one block header with pycose, then check pycose's verdicts on it."""
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = hashlib.sha256(public).digest()[:8]
    header = BlockHeader(fields["dev"], fields["h"], bytes.fromhex(fields["prev"]),
                         bytes.fromhex(fields["root"]), fields["cnt"], fields["t0"],
                         fields["t1"], fields["ts"])
    values = {"alg": (Algorithm, EdDSA), "kid": (KID, kid)}
    msg = Sign1Message(phdr=dict(values[name] for name in order), payload=header.encode())
    msg.key = OKPKey(crv=Ed25519, x=public, d=seed)
    cose = msg.encode()
    own = pycose_verify(cose, public)
    if not own["ok"]:
        raise AssertionError(f"pycose rejects its own block: {own}")
    for part, what in ((2, "payload"), (3, "signature")):
        for offset in (0, -1):
            if pycose_verify(flip(cose, part, offset), public)["ok"]:
                raise AssertionError(f"pycose accepts its block with {what} byte {offset} flipped")
    return {"cose": cose.hex(), "phdr": msg.phdr_encoded.hex(), "key": public.hex(),
            "payload": header.encode().hex()}


def sign(req: dict[str, Any]) -> dict[str, Any]:
    """Blocks signed by pycose."""
    return {"results": [sign_one(bytes.fromhex(b["seed"]), b["header"],
                                 b.get("order", ["alg", "kid"])) for b in req["blocks"]]}


def _reencode(name: str, hex_data: str) -> str:
    try:
        return cbor2_vectors.reencode(name, bytes.fromhex(hex_data)).hex()
    except EdgeLedgerError as exc:
        return f"ERROR {type(exc).__name__}: {exc}"


def vectors(req: dict[str, Any]) -> dict[str, Any]:
    """The vectors made here, and the main env's vectors decoded and encoded here."""
    return {"own": cbor2_vectors.vectors(),
            "reencoded": {name: _reencode(name, data) for name, data in req["theirs"].items()}}


def reencode(req: dict[str, Any]) -> dict[str, Any]:
    """Decode each item strictly and encode it again."""
    return {"results": [_reencode(name, data) for name, data in req["items"]]}


COMMANDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "info": info, "verify": verify, "sign": sign, "vectors": vectors, "reencode": reencode}


def answer(line: str) -> str:
    """One JSON answer to one JSON request; a failure becomes {"error": traceback}."""
    try:
        req = json.loads(line)
        return json.dumps(COMMANDS[req["cmd"]](req))
    # The test prints whatever went wrong here; the peer itself keeps serving.
    except Exception:  # noqa: BLE001
        return json.dumps({"error": traceback.format_exc()})


def main() -> None:
    """Serve requests line by line (--serve) or answer the one request on stdin."""
    if sys.argv[1:] == ["--serve"]:
        for line in sys.stdin:
            print(answer(line), flush=True)
    else:
        print(answer(sys.stdin.read()))


if __name__ == "__main__":
    main()
