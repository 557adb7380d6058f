"""Interop with Go's golang.org/x/mod/sumdb/note and sumdb/tlog (DESIGN.md 2.3).

Standard verifiers must accept what the aggregator serves. These tests hand our
signed checkpoints, inclusion and consistency proofs and our hash store to Go's
note.Open, tlog.CheckRecord, tlog.CheckTree and tlog.TreeHash (through
tests/interop/go/sumdbcheck.go), check that Go refuses tampered inputs as we do,
and run Go-made keys and Go-signed notes through our parser and open_note.

Go is required: a missing toolchain fails the session's first test with the
apt-get line that installs it, because a skipped interop test proves nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import gosumdb
import pytest

from edgeledger.core import merkle
from edgeledger.core.checkpoint import Checkpoint, open_checkpoint
from edgeledger.core.errors import EdgeLedgerError
from edgeledger.core.note import Signer, Verifier, open_note

pytestmark = pytest.mark.interop

ORIGIN = "edgeledger.example/agg-1"
BIG = 4097
LARGE_SIZES = (1000, 1023, 1024, 1025, 4095, 4096, BIG)
SMALL = range(1, 71)


@pytest.fixture(scope="session")
def go(tmp_path_factory: pytest.TempPathFactory) -> gosumdb.GoSumdb:
    """sumdbcheck, built once per session; fails (never skips) without Go."""
    try:
        return gosumdb.build(tmp_path_factory.mktemp("go-sumdb"))
    except gosumdb.GoUnavailable as exc:
        reason = str(exc)
    pytest.fail(f"Go interop needs Go and golang.org/x/mod: {reason}", pytrace=False)


@pytest.fixture(scope="module")
def store() -> merkle.MemoryHashes:
    """A log of BIG leaves in our stored-hash layout."""
    hashes = merkle.MemoryHashes()
    for i in range(BIG):
        hashes.append(merkle.leaf_hash(f"leaf {i}".encode()))
    return hashes


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(ORIGIN, hashlib.sha256(b"interop log key").digest())


def flip(raw: bytes, bit: int) -> bytes:
    """`raw` with one bit flipped."""
    out = bytearray(raw)
    out[(bit // 8) % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


def rejected_by_python(fn: Any, *args: Any) -> bool:
    try:
        fn(*args)
    except EdgeLedgerError:
        return True
    return False


def failures(results: dict[str, dict[str, Any]], want_ok: bool) -> list[str]:
    """Ids (with Go's error) whose outcome is not `want_ok`; at most 10 shown."""
    bad = [f"{i}: {r.get('error', 'accepted')}" for i, r in results.items() if r["ok"] != want_ok]
    return bad[:10] + ([f"... {len(bad) - 10} more"] if len(bad) > 10 else [])


# --- signed checkpoints ------------------------------------------------------------------


def checkpoint_chain(store: merkle.MemoryHashes) -> list[Checkpoint]:
    chain, prev = [], bytes(32)
    for height, size in enumerate((1, 2, 3, 7, 70, 1000, 1023, BIG)):
        extra = ("witness-note something",) if height == 3 else ()
        cp = Checkpoint(ORIGIN, size, store.root(size), height, prev,
                        1_700_000_000_000 + height, extra)
        chain.append(cp)
        prev = cp.hash
    return chain


def test_go_opens_our_checkpoints(go: gosumdb.GoSumdb, store: merkle.MemoryHashes,
                                  signer: Signer) -> None:
    vkey = signer.verifier().text()
    chain = checkpoint_chain(store)
    witness = Signer("witness.example/w1", hashlib.sha256(b"witness").digest())
    cases = [{"id": f"cp{cp.height}", "op": "open", "note": cp.sign(signer), "vkeys": [vkey],
              "checkpoint": True} for cp in chain]
    # A witness cosignature (a key Go does not know) must not stop Go from opening it.
    cosigned = chain[-1].sign(signer) + chain[-1].sign(witness).split("\n\n", 1)[1]
    cases.append({"id": "cosigned", "op": "open", "note": cosigned, "vkeys": [vkey],
                  "checkpoint": True})
    results = go.run(cases)
    assert not failures(results, want_ok=True)
    sig = f"{ORIGIN}+{signer.verifier().hash.hex()}"
    for cp in chain:
        r = results[f"cp{cp.height}"]
        assert r["text"] == cp.text()
        assert r["sigs"] == [sig]
        parsed = r["checkpoint"]
        assert (parsed["origin"], parsed["size"], parsed["root"]) == \
            (ORIGIN, cp.size, gosumdb.b64(cp.root))
        assert (parsed["tlog_size"], parsed["tlog_root"]) == (cp.size, gosumdb.b64(cp.root))
        assert parsed["rest"] == cp.text().split("\n")[3:-1]
        assert parsed["rest"][:3] == [f"height {cp.height}", f"prev {gosumdb.b64(cp.prev)}",
                                      f"time {cp.time}"]
    r = results["cosigned"]
    assert r["sigs"] == [sig]
    assert r["unverified"] == [f"witness.example/w1+{witness.verifier().hash.hex()}"]
    assert open_checkpoint(cosigned, signer.verifier()) == chain[-1]


def tampered_notes(note: str, signer: Signer) -> Iterator[tuple[str, str, str]]:
    """(name, note, verifier key) triples that must not open."""
    vkey = signer.verifier().text()
    text, sigs = note.split("\n\n", 1)
    sig_line = sigs.split(" ")
    raw = gosumdb.unb64(sig_line[-1].strip())
    for bit in (0, 40, 300, 511):  # signature bits (after the 4-byte key hash)
        line = " ".join([*sig_line[:-1], gosumdb.b64(raw[:4] + flip(raw[4:], bit))])
        yield f"sigbit{bit}", f"{text}\n\n{line}\n", vkey
    lines = text.split("\n")
    yield "size+1", "\n".join([lines[0], str(int(lines[1]) + 1), *lines[2:]]) + "\n\n" + sigs, vkey
    yield "rootbit", note.replace(lines[2], gosumdb.b64(flip(gosumdb.unb64(lines[2]), 9))), vkey
    yield "heightchange", note.replace(lines[3], lines[3] + "0"), vkey
    other = Signer(ORIGIN, hashlib.sha256(b"another key, same name").digest())
    yield "wrongkey", note, other.verifier().text()
    # A signature by another key presented under our key's name and hash.
    forged = Checkpoint.parse(text + "\n").sign(other)
    forged_raw = gosumdb.unb64(forged.rsplit(" ", 1)[1].strip())
    yield "forged", forged.rsplit(" ", 1)[0] + " " + \
        gosumdb.b64(signer.verifier().hash + forged_raw[4:]) + "\n", vkey


def test_go_and_we_refuse_tampered_checkpoints(go: gosumdb.GoSumdb, store: merkle.MemoryHashes,
                                               signer: Signer) -> None:
    note = checkpoint_chain(store)[4].sign(signer)
    variants = list(tampered_notes(note, signer))
    assert len(variants) == 9
    results = go.run([{"id": name, "op": "open", "note": n, "vkeys": [k]}
                      for name, n, k in variants])
    assert not failures(results, want_ok=False)
    assert "invalid signature" in results["forged"]["error"]
    assert "no verifiable signatures" in results["wrongkey"]["error"]
    for name, n, k in variants:
        assert rejected_by_python(open_note, n, Verifier.parse(k)), name


# --- proofs ---------------------------------------------------------------------------------


def inclusion_pairs() -> list[tuple[int, int]]:
    pairs = [(i, n) for n in SMALL for i in range(n)]
    for n in LARGE_SIZES:
        pairs += [(i, n) for i in sorted({0, 1, n // 3, n // 2, n - 2, n - 1, 511, 512, 1000})
                  if i < n]
    return pairs


def consistency_pairs() -> list[tuple[int, int]]:
    pairs = [(m, n) for n in SMALL for m in range(1, n + 1)]
    for n in LARGE_SIZES:
        pairs += [(m, n) for m in sorted({1, 2, 3, 7, 64, 70, 511, 999, 1000, 1023, 1024,
                                          n - 1, n}) if m <= n]
    return pairs


def test_go_checks_our_inclusion_proofs(go: gosumdb.GoSumdb, store: merkle.MemoryHashes) -> None:
    read = store.read_hashes
    roots = {n: merkle.tree_root(n, read) for n in {n for _, n in inclusion_pairs()}}
    good, bad, ours = [], [], {}
    for k, (i, n) in enumerate(inclusion_pairs()):
        proof, leaf = merkle.inclusion_proof(i, n, read), store.hashes[merkle.stored_index(0, i)]
        ours[(i, n)] = proof
        case = {"op": "check_record", "size": n, "root": gosumdb.b64(roots[n]), "index": i}
        good.append({**case, "id": f"{i}/{n}", "leaf": gosumdb.b64(leaf),
                     "proof": [gosumdb.b64(h) for h in proof]})
        good.append({"id": f"prove {i}/{n}", "op": "prove_record", "store": "log", "size": n,
                     "index": i})
        tampered = {"leafbit": (leaf[:1] + flip(leaf[1:], k), proof, i)}
        if proof:
            at = k % len(proof)
            tampered["proofbit"] = (leaf, [*proof[:at], flip(proof[at], k), *proof[at + 1:]], i)
            tampered["short"] = (leaf, proof[:-1], i)
        tampered["long"] = (leaf, [*proof, roots[n]], i)
        if n > 1:
            tampered["index"] = (leaf, proof, (i + 1 + k % (n - 1)) % n)
        for name, (lf, pf, idx) in tampered.items():
            assert rejected_by_python(merkle.verify_inclusion, lf, idx, n, pf, roots[n]), \
                (name, i, n)
            bad.append({**case, "id": f"{name} {i}/{n}", "index": idx, "leaf": gosumdb.b64(lf),
                        "proof": [gosumdb.b64(h) for h in pf]})
    results = go.run(good + bad, {"log": store.hashes})
    assert len(good) > 2 * 2485 and len(bad) > 4 * 2485
    assert not failures({c["id"]: results[c["id"]] for c in good}, want_ok=True)
    assert not failures({c["id"]: results[c["id"]] for c in bad}, want_ok=False)
    for (i, n), proof in ours.items():  # Go's ProveRecord gives exactly our proof
        go_proof = results[f"prove {i}/{n}"].get("hashes", [])  # omitted when empty
        assert go_proof == [gosumdb.b64(h) for h in proof], (i, n)


def test_go_checks_our_consistency_proofs(go: gosumdb.GoSumdb,
                                          store: merkle.MemoryHashes) -> None:
    read = store.read_hashes
    roots = {n: merkle.tree_root(n, read) for n in range(1, BIG + 1)}
    good, bad, ours = [], [], {}
    for k, (m, n) in enumerate(consistency_pairs()):
        proof = merkle.consistency_proof(m, n, read)
        ours[(m, n)] = proof
        case = {"op": "check_tree", "size": n, "root": gosumdb.b64(roots[n])}
        good.append({**case, "id": f"{m}/{n}", "old_size": m, "old_root": gosumdb.b64(roots[m]),
                     "proof": [gosumdb.b64(h) for h in proof]})
        good.append({"id": f"prove {m}/{n}", "op": "prove_tree", "store": "log", "size": n,
                     "old_size": m})
        tampered = {"oldrootbit": (m, flip(roots[m], k), proof),
                    "long": (m, roots[m], [*proof, roots[n]])}
        if proof:
            at = k % len(proof)
            tampered["proofbit"] = (m, roots[m], [*proof[:at], flip(proof[at], k),
                                                  *proof[at + 1:]])
            tampered["short"] = (m, roots[m], proof[:-1])
        if m < n:  # a real (size, root) of the log, but not the one the proof is for
            other = m + 1 + k % (n - m)
            tampered["othersize"] = (other, roots[other], proof)
        for name, (old, old_root, pf) in tampered.items():
            assert rejected_by_python(merkle.verify_consistency, old, n, old_root, roots[n], pf), \
                (name, m, n)
            bad.append({**case, "id": f"{name} {m}/{n}", "old_size": old,
                        "old_root": gosumdb.b64(old_root), "proof": [gosumdb.b64(h) for h in pf]})
    results = go.run(good + bad, {"log": store.hashes})
    assert len(good) > 2 * 2485 and len(bad) > 3 * 2485
    assert not failures({c["id"]: results[c["id"]] for c in good}, want_ok=True)
    assert not failures({c["id"]: results[c["id"]] for c in bad}, want_ok=False)
    for (m, n), proof in ours.items():  # Go's ProveTree gives exactly our proof
        go_proof = results[f"prove {m}/{n}"].get("hashes", [])  # omitted when empty
        assert go_proof == [gosumdb.b64(h) for h in proof], (m, n)


# --- the storage layout -------------------------------------------------------------------


def test_our_store_is_tlogs_layout(go: gosumdb.GoSumdb, store: merkle.MemoryHashes) -> None:
    sizes = [*range(1, 300), *LARGE_SIZES]
    leaves = [store.hashes[merkle.stored_index(0, i)] for i in range(BIG)]
    pairs = [(level, n) for level in range(13) for n in range(0, 600, 7)]
    cases: list[dict[str, Any]] = [
        {"id": f"treehash {n}", "op": "tree_hash", "store": "log", "size": n} for n in sizes]
    cases += [{"id": "stored", "op": "stored_hashes", "leaves": [gosumdb.b64(h) for h in leaves]},
              {"id": "index", "op": "stored_index", "pairs": pairs}]
    results = go.run(cases, {"log": store.hashes})
    assert not failures(results, want_ok=True)
    for n in sizes:
        assert results[f"treehash {n}"]["hash"] == gosumdb.b64(store.root(n)), n
    # tlog, appending the same leaf hashes, writes exactly our store, hash for hash.
    go_store = [gosumdb.unb64(h) for h in results["stored"]["hashes"]]
    assert len(go_store) == len(store.hashes) == merkle.stored_count(BIG)
    assert go_store == store.hashes
    assert results["index"]["indexes"] == [merkle.stored_index(lv, n) for lv, n in pairs]


def test_empty_tree_hash_is_rfc6962_not_tlogs(go: gosumdb.GoSumdb) -> None:
    """Known difference, on purpose: tlog defines the size-0 tree hash as 32 zero bytes;
    RFC 6962 and DESIGN.md 2 say SHA-256(""). Go never checks a proof against size 0
    (CheckTree refuses n < 1), so only a size-0 checkpoint root differs."""
    r = go.run([{"id": "empty", "op": "tree_hash", "store": "none", "size": 0}])["empty"]
    assert r["ok"]
    assert gosumdb.unb64(r["hash"]) == bytes(32)
    assert merkle.tree_root(0, merkle.MemoryHashes().read_hashes) == hashlib.sha256().digest()


# --- Go's keys and notes in our code -------------------------------------------------------


def test_we_read_go_keys_and_go_signed_notes(go: gosumdb.GoSumdb,
                                             store: merkle.MemoryHashes) -> None:
    names = [ORIGIN, "a", "sum.golang.org", "ünïcode.example/log", "x/y/z-1_2.3"]
    keys = go.run([{"id": name, "op": "generate", "name": name} for name in names])
    assert not failures(keys, want_ok=True)
    cps = {name: Checkpoint(name, 70, store.root(70), 5, bytes(range(32)), 1_700_000_000_005)
           for name in names}
    sign = [{"id": name, "op": "sign", "skey": keys[name]["skey"], "text": cps[name].text()}
            for name in names]
    signed = go.run(sign)
    assert not failures(signed, want_ok=True)
    for name in names:
        skey, vkey = keys[name]["skey"], keys[name]["vkey"]
        signer, verifier = Signer.parse(skey), Verifier.parse(vkey)
        assert (signer.name, verifier.name) == (name, name)
        assert signer.verifier() == verifier
        assert (signer.text(), verifier.text()) == (skey, vkey)
        note = signed[name]["note"]
        assert open_checkpoint(note, verifier) == cps[name]
        assert cps[name].sign(signer) == note  # Ed25519 is deterministic: same bytes
        for other in names:
            if other != name:  # another Go key; its name differs, so no signature for it
                with pytest.raises(EdgeLedgerError, match="no signature by key"):
                    open_note(note, Verifier.parse(keys[other]["vkey"]))
    # The same name with another key: refused, however the signature line is presented.
    again = go.run([{"id": "again", "op": "generate", "name": ORIGIN}])["again"]
    other = Verifier.parse(again["vkey"])
    assert other.name == ORIGIN and other != Verifier.parse(keys[ORIGIN]["vkey"])
    note = signed[ORIGIN]["note"]
    with pytest.raises(EdgeLedgerError, match="no signature by key"):
        open_note(note, other)
    head, blob = note.rsplit(" ", 1)
    relabelled = f"{head} {gosumdb.b64(other.hash + gosumdb.unb64(blob.strip())[4:])}\n"
    with pytest.raises(EdgeLedgerError, match="does not verify"):
        open_note(relabelled, other)
    bad = go.run([{"id": "relabelled", "op": "open", "note": relabelled,
                   "vkeys": [again["vkey"]]}])
    assert not bad["relabelled"]["ok"] and "invalid signature" in bad["relabelled"]["error"]
