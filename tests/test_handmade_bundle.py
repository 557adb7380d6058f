"""A proof bundle made by hand from DESIGN.md alone, checked by `edgeledger verify`.

Nothing here imports edgeledger: readings, the COSE_Sign1 block, the RFC 6962 tree and
paths, the C2SP signed note and the bundle are written from the specifications with
cbor2, PyNaCl and the standard library. If the program and this file disagree about
a format, one of them does not follow DESIGN.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cbor2
import nacl.signing

DEVICE = "greenhouse-7"
ORIGIN = "edgeledger.example/agg-1"
T = 1_700_000_000_000


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def dcbor(obj: object) -> bytes:
    """RFC 8949 core deterministic encoding (DESIGN.md 2)."""
    return cbor2.dumps(obj, canonical=True)


# --- RFC 6962 section 2.1, transcribed --------------------------------------------------


def mth(leaves: list[bytes]) -> bytes:
    """MTH(D[n]): the Merkle Tree Hash of a list of leaf data."""
    n = len(leaves)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return sha256(b"\x00" + leaves[0])
    k = 1 << ((n - 1).bit_length() - 1)  # the largest power of two smaller than n
    return sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def audit_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the audit path of leaf m, bottom-up."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*audit_path(m, leaves[:k]), mth(leaves[k:])]
    return [*audit_path(m - k, leaves[k:]), mth(leaves[:k])]


# --- DESIGN.md 2.2: a COSE_Sign1 micro-block ------------------------------------------------


def make_block(key: nacl.signing.SigningKey, dev: str, h: int, prev: bytes,
               readings: list[bytes], times: list[int], ts: int) -> bytes:
    public = bytes(key.verify_key)
    header = {"v": 1, "dev": dev, "h": h, "prev": prev, "root": mth(readings),
              "cnt": len(readings), "t0": min(times, default=ts), "t1": max(times, default=ts),
              "ts": ts}
    protected = dcbor({1: -8, 4: sha256(public)[:8]})
    payload = dcbor(header)
    signature = key.sign(dcbor(["Signature1", protected, b"", payload])).signature
    return dcbor(cbor2.CBORTag(18, [protected, {}, payload, signature]))


# --- DESIGN.md 2.3 and c2sp.org/signed-note -------------------------------------------------


def note_key_hash(name: str, public: bytes) -> bytes:
    return sha256(name.encode() + b"\n\x01" + public)[:4]


def verifier_key(name: str, key: nacl.signing.SigningKey) -> str:
    public = bytes(key.verify_key)
    encoded = b64(b"\x01" + public)
    return f"{name}+{note_key_hash(name, public).hex()}+{encoded}"


def sign_note(text: str, name: str, key: nacl.signing.SigningKey) -> str:
    signature = key.sign(text.encode()).signature
    blob = note_key_hash(name, bytes(key.verify_key)) + signature
    return f"{text}\n\u2014 {name} {b64(blob)}\n"


def checkpoint_text(size: int, root: bytes, height: int, prev: bytes, time: int) -> str:
    return f"{ORIGIN}\n{size}\n{b64(root)}\nheight {height}\nprev {b64(prev)}\ntime {time}\n"


# --- the bundle ---------------------------------------------------------------------------


def key_from(label: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(sha256(label.encode()))


def handmade() -> dict[str, Any]:
    """A bundle for reading 2 of block 1 of DEVICE, entry 3 of a log of 6 blocks."""
    device, other, log = key_from("device"), key_from("other"), key_from("log")
    specs = [("bme280-1/temperature", 10, 1, 21.25, "Cel"), ("bme280-1/humidity", 11, 2, 48,
                                                              "%RH"),
             ("gps-1/fix", 3, 9, {"lat": 52.52, "lon": 13.405}, None),
             ("door-3/open", 12, 4, True, None), ("meter-1/status", 20, 5, "ok", None)]
    readings, times = [], []
    for n, dt, q, v, u in specs:
        reading: dict[str, Any] = {"n": n, "t": T + dt, "q": q, "v": v}
        if u:
            reading["u"] = u
        readings.append(dcbor(reading))
        times.append(T + dt)
    b0 = make_block(device, DEVICE, 0, bytes(32), [], [], T - 5)
    b1 = make_block(device, DEVICE, 1, sha256(cbor2.loads(b0).value[2]), readings, times, T + 30)
    others, prev = [], bytes(32)
    for h in range(4):
        blk = make_block(other, "coldroom-2", h, prev, [], [], T + h)
        prev = sha256(cbor2.loads(blk).value[2])
        others.append(blk)
    leaves = [others[0], b0, others[1], b1, others[2], others[3]]
    cp_text = checkpoint_text(len(leaves), mth(leaves), 2, sha256(b"checkpoint 1"), T + 99)
    return {
        "version": 1,
        "reading": b64(readings[2]), "reading_index": 2,
        "reading_path": [b64(h) for h in audit_path(2, readings)],
        "block": b64(b1), "device": DEVICE, "device_key": b64(bytes(device.verify_key)),
        "log_index": 3, "log_path": [b64(h) for h in audit_path(3, leaves)],
        "checkpoint": sign_note(cp_text, ORIGIN, log),
        "_vkey": verifier_key(ORIGIN, log),
        "_readings": readings,
    }


def program() -> Path:
    path = Path(sys.executable).parent / "edgeledger"
    assert path.exists(), f"{path} is missing: is the package installed in this venv?"
    return path


def run_all(tmp_path: Path, bundles: dict[str, dict[str, Any]],
            vkey: str) -> dict[str, tuple[int, str]]:
    """Run `edgeledger verify` on each bundle (in parallel); return (exit code, stdout)."""
    key_file = tmp_path / "log.vkey"
    key_file.write_text(vkey + "\n")
    procs = {}
    for name, bundle in bundles.items():
        path = tmp_path / f"{name.replace(' ', '_')}.json"
        path.write_text(json.dumps({k: v for k, v in bundle.items() if not k.startswith("_")}))
        procs[name] = subprocess.Popen([str(program()), "verify", str(path), "--log-key",
                                        str(key_file)], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
    out = {}
    for name, proc in procs.items():
        stdout, _ = proc.communicate(timeout=60)
        out[name] = (proc.returncode, stdout)
    return out


def test_handmade_bundle_verifies(tmp_path: Path) -> None:
    bundle = handmade()
    (code, stdout), = run_all(tmp_path, {"good": bundle}, bundle["_vkey"]).values()
    assert code == 0, stdout
    assert len(stdout.splitlines()) == 1, stdout
    assert DEVICE in stdout


def _flip(text: str, byte: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[byte] ^= 0x01
    return b64(bytes(raw))


def tampered(bundle: dict[str, Any]) -> dict[str, tuple[dict[str, Any], tuple[str, ...]]]:
    """Copies of `bundle`, each with one thing changed, and the checks that may catch it."""
    cp = bundle["checkpoint"]
    cp_text = cp.split("\n\n")[0] + "\n"
    other_log = key_from("not the log")
    zero = b64(bytes(32))
    cases: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
        "checkpoint size": ({"checkpoint": cp.replace("\n6\n", "\n7\n", 1)},
                            ("checkpoint signature",)),
        "checkpoint signed by another key": ({"checkpoint": sign_note(cp_text, ORIGIN, other_log)},
                                             ("checkpoint signature",)),
        "checkpoint signature": ({"checkpoint": cp[:-10] + ("A" if cp[-10] != "A" else "B")
                                  + cp[-9:]}, ("checkpoint signature",)),
        "block signature": ({"block": _flip(bundle["block"], -3)}, ("block signature",)),
        "block payload": ({"block": _flip(bundle["block"], 60)}, ("block signature", "kid")),
        "device key": ({"device_key": b64(bytes(key_from("stranger").verify_key))},
                       ("kid", "block signature")),
        "device": ({"device": "greenhouse-8"}, ("device",)),
        "log index": ({"log_index": 2}, ("log inclusion",)),
        "log path": ({"log_path": [zero, *bundle["log_path"][1:]]}, ("log inclusion",)),
        "log path short": ({"log_path": bundle["log_path"][:-1]}, ("log inclusion",)),
        "reading": ({"reading": b64(bundle["_readings"][1])}, ("reading path",)),
        "reading index": ({"reading_index": 1}, ("reading path",)),
        "reading path": ({"reading_path": [zero, *bundle["reading_path"][1:]]},
                         ("reading path",)),
    }
    return {name: ({**bundle, **change}, checks) for name, (change, checks) in cases.items()}


def test_tampered_handmade_bundles_fail_naming_the_check(tmp_path: Path) -> None:
    bundle = handmade()
    cases = tampered(bundle)
    results = run_all(tmp_path, {name: b for name, (b, _) in cases.items()}, bundle["_vkey"])
    wrong = []
    for name, (code, stdout) in results.items():
        checks = cases[name][1]
        if code != 1 or not stdout.strip() or not any(c in stdout for c in checks):
            wrong.append(f"{name}: exit {code}, wanted {' or '.join(checks)}, got {stdout!r}")
    assert not wrong, "\n".join(wrong)


def test_wrong_log_key(tmp_path: Path) -> None:
    bundle = handmade()
    (code, stdout), = run_all(tmp_path, {"b": bundle},
                              verifier_key(ORIGIN, key_from("not the log"))).values()
    assert code == 1 and "checkpoint signature" in stdout, stdout


def test_paths_are_bottom_up() -> None:
    """The transcription itself: a path folds to the root (RFC 9162 2.1.3.2)."""
    leaves = [bytes([i]) for i in range(6)]
    for m in range(6):
        fn, sn, r = m, 5, sha256(b"\x00" + leaves[m])
        for p in audit_path(m, leaves):
            if fn & 1 or fn == sn:
                r = sha256(b"\x01" + p + r)
                while not fn & 1 and fn:
                    fn, sn = fn >> 1, sn >> 1
            else:
                r = sha256(b"\x01" + r + p)
            fn, sn = fn >> 1, sn >> 1
        assert r == mth(leaves) and sn == 0
