"""The SQLite store: same trees as memory, O(log n) reads, durable and all-or-nothing."""

from __future__ import annotations

import hashlib
import math
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeledger.aggregator.log import CanonicalLog, MemoryLogStore
from edgeledger.aggregator.store import sqlite as sqlite_store
from edgeledger.aggregator.store.sqlite import (
    SCHEMA_VERSION,
    AcceptedBlock,
    SqliteStore,
)
from edgeledger.core import merkle
from edgeledger.core.checkpoint import ZERO_HASH, check_extends, open_checkpoint
from edgeledger.core.errors import ConfigError, EdgeLedgerError
from edgeledger.core.note import Signer

SIGNER = Signer("log.test/sqlite", bytes(range(32)))
WRITER = Path(__file__).with_name("sqlite_writer.py")


def _fill(log: CanonicalLog, store: SqliteStore, start: int, stop: int) -> None:
    with store.transaction():
        for i in range(start, stop):
            assert log.append(b"entry %d" % i) == i


@contextmanager
def _statements(store: SqliteStore) -> Iterator[list[str]]:
    """Every SQL statement the store runs inside the block."""
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        store._db.set_trace_callback(None)


def _block(dev: str, height: int, prev: bytes = ZERO_HASH) -> AcceptedBlock:
    entry = f"{dev}/{height}/".encode() + prev
    return AcceptedBlock(dev, height, hashlib.sha256(entry).digest(), entry)


@settings(max_examples=25, deadline=None)
@given(size=st.integers(1, 300), data=st.data())
def test_roots_and_proofs_equal_the_memory_stores(size: int, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "log.db")
        sql, mem = CanonicalLog(store, SIGNER), CanonicalLog(MemoryLogStore(), SIGNER)
        _fill(sql, store, 0, size)
        for i in range(size):
            mem.append(b"entry %d" % i)
        for _ in range(5):
            n = data.draw(st.integers(1, size))
            i = data.draw(st.integers(0, n - 1))
            m = data.draw(st.integers(0, n))
            assert sql.root(n) == mem.root(n)
            assert sql.inclusion_proof(i, n) == mem.inclusion_proof(i, n)
            assert sql.consistency_proof(m, n) == mem.consistency_proof(m, n)
        leaves = [merkle.leaf_hash(e) for e in store.entries()]
        assert sql.root() == merkle.root_from_leaf_hashes(leaves)
        store.close()


def test_each_proof_is_one_query_for_o_log_n_positions(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db")
    log = CanonicalLog(store, SIGNER)
    size = 5000
    _fill(log, store, 0, size)
    asked: list[int] = []
    read = store.read_hashes

    def counting(positions: Sequence[int]) -> Sequence[bytes]:
        asked.append(len(positions))
        return read(positions)

    bound = 2 * math.ceil(math.log2(size)) + 2
    rng = random.Random(1)
    for _ in range(50):
        n = rng.randint(2, size)
        i, m = rng.randrange(n), rng.randint(1, n - 1)
        calls: list[tuple[Callable[..., object], tuple[int, ...]]] = [
            (merkle.inclusion_proof, (i, n)), (merkle.consistency_proof, (m, n)),
            (merkle.tree_root, (n,))]
        for call, args in calls:
            asked.clear()
            with _statements(store) as seen:
                call(*args, counting)
            queries = [q for q in seen if not q.startswith("PRAGMA data_version")]
            assert len(queries) <= 1 and all("FROM hashes" in q for q in queries), seen
            assert asked and asked[0] <= bound, (n, i, m, asked)


def test_reopening_continues_size_root_devices_and_the_checkpoint_chain(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = SqliteStore(path)
    log = CanonicalLog(store, SIGNER)
    store.enroll("gw-1", bytes([1]) * 32, 100)
    store.enroll("gw-2", bytes([2]) * 32, 100)
    store.revoke("gw-2", 200)
    first, second = _block("gw-1", 0), None
    second = _block("gw-1", 1, first.hash)
    store.append_blocks(log, [first, second])
    note1 = log.sign_checkpoint(1000)
    root, size = log.root(), log.size
    store.close()

    store = SqliteStore(path)
    log = CanonicalLog(store, SIGNER)
    assert (log.size, log.root()) == (size, root)
    assert log.checkpoint_note == note1
    [gw1, gw2] = store.devices()
    assert (gw1.dev, gw1.public_key, gw1.next_height, gw1.prev) == ("gw-1", bytes([1]) * 32, 2,
                                                                    second.hash)
    assert (gw2.dev, gw2.revoked_ms, gw2.next_height) == ("gw-2", 200, 0)
    assert store.block("gw-1", 1) == (second.hash, 1)
    store.append_blocks(log, [_block("gw-1", 2, second.hash)])
    note2 = log.sign_checkpoint(900)
    cp1, cp2 = (open_checkpoint(n, SIGNER.verifier()) for n in (note1, note2))
    assert (cp2.height, cp2.prev, cp2.size) == (1, cp1.hash, 3)
    check_extends(cp1, cp2, log.consistency_proof(cp1.size, cp2.size))
    assert store.checkpoint(0) == note1 and store.checkpoint(1) == note2


def _state(store: SqliteStore) -> tuple[object, ...]:
    db = store._db
    return (store.size(), db.execute("SELECT count(*) FROM hashes").fetchone(),
            store.devices(), db.execute("SELECT count(*) FROM blocks").fetchone(),
            store.last_checkpoint())


def test_a_transaction_failing_midway_leaves_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db")
    log = CanonicalLog(store, SIGNER)
    store.enroll("gw-1", bytes(32), 0)
    store.append_blocks(log, [_block("gw-1", 0)])
    before = _state(store)
    tip = _block("gw-1", 1, _block("gw-1", 0).hash)

    # SQLite itself refuses the block row, after the entry and hashes were written.
    store._db.set_authorizer(lambda action, table, *_: sqlite3.SQLITE_DENY
                             if action == sqlite3.SQLITE_INSERT and table == "blocks"
                             else sqlite3.SQLITE_OK)
    with pytest.raises(sqlite3.DatabaseError):
        store.append_blocks(log, [tip])
    store._db.set_authorizer(None)
    assert _state(store) == before

    # A batch whose second block is out of order takes the first one down with it.
    with pytest.raises(EdgeLedgerError, match=r"gw-1/5: .*not its next height"):
        store.append_blocks(log, [tip, _block("gw-1", 5)])
    assert _state(store) == before

    # Any exception raised by the caller inside a transaction rolls it back.
    with pytest.raises(RuntimeError), store.transaction():
        log.append(tip.entry)
        store.record_block("gw-1", 1, tip.hash, 1)
        store.add_event("note", "gw-1", 1, "about to fail", 5)
        raise RuntimeError("power cut")
    assert _state(store) == before and store.events() == []
    assert store.append_blocks(log, [tip]) == [1]


def test_write_path_statements_per_append_stay_constant_over_ten_thousand(
        tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db")
    log = CanonicalLog(store, SIGNER)
    per_append: list[int] = []
    plans: set[str] = set()
    with store.transaction():
        for i in range(10_000):
            with _statements(store) as seen:
                log.append(b"entry %d" % i)
            per_append.append(len(seen))
            if i % 997 == 0:
                for sql in seen:
                    plan = store._db.execute("EXPLAIN QUERY PLAN " + sql)
                    plans.update(row[3] for row in plan)
    # Once the size is known (the first append asks for it), an append is two inserts:
    # the entry, and all its new hashes in one statement; the siblings it hashes with
    # come from the writer's cache of stored hashes.
    assert set(per_append[1:100]) == set(per_append[-100:]) == {2}
    assert per_append[0] == 3
    table_scans = [p for p in plans if p.startswith("SCAN") and "CONSTANT ROWS" not in p]
    assert not table_scans and "SEARCH entries" in plans, plans
    assert log.root() == merkle.root_from_leaf_hashes(
        [merkle.leaf_hash(e) for e in store.entries()])


def test_files_that_are_not_ours_or_newer_are_refused_by_name(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    SqliteStore(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    newer_version = f"store schema version {SCHEMA_VERSION + 1} is newer"
    with pytest.raises(ConfigError, match=f"{newer}: {newer_version}"):
        SqliteStore(newer)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(ConfigError, match=f"{other}: not an EdgeLedger store"):
        SqliteStore(other)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError, match=f"{garbage}: not an EdgeLedger store"):
        SqliteStore(garbage)


def test_devices_evidence_and_the_event_cursor(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db")
    log = CanonicalLog(store, SIGNER)
    store.enroll("gw-1", bytes(32), 10)
    block = _block("gw-1", 0)
    store.append_blocks(log, [block])
    with pytest.raises(sqlite3.IntegrityError):
        store.record_block("gw-1", 1, block.hash, 0)  # one log index, one block
    assert store.add_equivocation("gw-1", 0, b"h" * 32, b"other block", 20)
    assert not store.add_equivocation("gw-1", 0, b"h" * 32, b"other block", 30)
    [evidence] = store.equivocations("gw-1")
    assert (evidence.log_index, evidence.block) == (0, b"other block")
    assert store.entry(evidence.log_index) == block.entry, "both blocks are kept"
    device = store.device("gw-1")
    assert device is not None and device.flagged_ms == 20
    store.revoke("gw-1", 40)
    with pytest.raises(EdgeLedgerError, match="revoked"):
        store.append_blocks(log, [_block("gw-1", 1, block.hash)])
    assert store.blocks("gw-1") == [(0, block.hash, 0)], "history stays"
    ids = [store.add_event("gap", "gw-1", h, f"gap at {h}", 50 + h) for h in range(5)]
    assert [e.height for e in store.events(after=ids[1], limit=2)] == [2, 3]
    assert store.events(after=ids[-1]) == []
    with pytest.raises(EdgeLedgerError, match="no log entry 7"):
        store.entry(7)


def _run_writer(path: Path, out: Path, seed: int, rng: random.Random) -> None:
    with out.open("w") as sink:
        proc = subprocess.Popen([sys.executable, str(WRITER), str(path), str(seed)],
                                stdout=sink)
    try:
        deadline = time.monotonic() + 20
        while "ready" not in out.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "writer did not start"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.02, 0.4))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the writer died on its own"


def test_sigkilled_writer_loses_no_committed_block_and_keeps_the_tree_whole(
        tmp_path: Path) -> None:
    path, rng = tmp_path / "log.db", random.Random(7)
    committed: list[int] = []
    for run in range(10):
        out = tmp_path / f"out-{run}.txt"
        _run_writer(path, out, run, rng)
        lines = out.read_text().split("\n")[1:-1]  # the last one may be torn
        committed += [int(x) for x in lines]
    store = SqliteStore(path)
    size = store.size()
    entries = list(store.entries())
    assert len(committed) == len(set(committed)), "an index was reported twice"
    assert size >= len(committed) > 0 and max(committed) < size
    assert len(set(entries)) == size, "an entry is in the log twice"
    hashes = merkle.MemoryHashes()
    for e in entries:
        hashes.append(merkle.leaf_hash(e))
    assert store.read_hashes(range(len(hashes.hashes))) == hashes.hashes
    log = CanonicalLog(store, SIGNER)
    assert log.root() == hashes.root()
    for dev in store.devices():
        blocks, prev = store.blocks(dev.dev), ZERO_HASH
        assert [h for h, _, _ in blocks] == list(range(dev.next_height)), "a gap"
        for height, block_hash, index in blocks:
            entry = f"{dev.dev}/{height}/".encode() + prev
            assert entries[index] == entry and hashlib.sha256(entry).digest() == block_hash
            prev = block_hash
        assert dev.prev == prev
    assert sum(d.next_height for d in store.devices()) == size
    notes = store._db.execute("SELECT note FROM checkpoints ORDER BY height").fetchall()
    cps = [open_checkpoint(n, Signer("kill.test/log", bytes([5]) * 32).verifier())
           for (n,) in notes]
    for old, new in pairwise(cps):
        check_extends(old, new, log.consistency_proof(old.size, new.size))


def test_the_file_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db")
    assert store._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert store._db.execute("PRAGMA foreign_keys").fetchone() == (1,)
    with sqlite3.connect(tmp_path / "log.db") as other:  # WAL is a property of the file
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_version_1_store_is_migrated_and_keeps_its_log(tmp_path: Path) -> None:
    """A file made by the first schema opens at the current version, devices kept."""
    path = tmp_path / "v1.db"
    v1 = sqlite_store._SCHEMA[:sqlite_store._SCHEMA.index("CREATE TABLE readings")]
    with sqlite3.connect(path) as db:
        db.executescript(v1 + f"PRAGMA application_id={sqlite_store.APPLICATION_ID};"
                              "PRAGMA user_version=1;")
        db.execute("INSERT INTO devices (dev, public_key, enrolled_ms, prev) "
                   "VALUES ('gw-1', ?, 1, ?)", (bytes(32), bytes(32)))
    store = SqliteStore(path)
    try:
        assert store.device("gw-1") is not None
        assert store.last_q("gw-1", "s-1") is None and store.readings(0) is None
        assert store.drops("gw-1") == []
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_the_writers_caches_see_commits_from_other_connections(tmp_path: Path) -> None:
    """`edgeledger revoke` runs in another process while the aggregator holds a cache."""
    path = tmp_path / "log.db"
    writer, other = SqliteStore(path), SqliteStore(path)
    try:
        writer.enroll("gw-1", bytes(32), 1)
        log = CanonicalLog(writer, SIGNER)
        log.append(b"first")
        device = writer.device("gw-1")
        assert device is not None and device.revoked_ms is None and writer.size() == 1
        other.revoke("gw-1", 7)
        CanonicalLog(other, SIGNER).append(b"second")
        revoked = writer.device("gw-1")
        assert revoked is not None and revoked.revoked_ms == 7
        assert writer.size() == 2
        with pytest.raises(EdgeLedgerError, match="is revoked"):
            writer.record_block("gw-1", 0, bytes(32), 0)
        with pytest.raises(RuntimeError), writer.transaction():
            writer.enroll("gw-2", bytes(32), 2)
            assert writer.device("gw-2") is not None
            raise RuntimeError("rolled back")
        assert writer.device("gw-2") is None
    finally:
        writer.close()
        other.close()


def test_the_key_history_keeps_each_key_and_the_height_it_signs_from(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db")
    log = CanonicalLog(store, SIGNER)
    try:
        old, new = bytes([1]) * 32, bytes([2]) * 32
        store.enroll("gw-1", old, 10)
        store.enroll("gw-1", old, 11)  # the same key again: no new entry
        blocks, prev = [], ZERO_HASH
        for h in range(3):
            blocks.append(_block("gw-1", h, prev))
            prev = blocks[-1].hash
        store.append_blocks(log, blocks)
        store.enroll("gw-1", new, 20)  # a rotation: signs from height 3 on
        assert [(k.from_height, k.public_key, k.enrolled_ms) for k in store.keys("gw-1")] == [
            (0, old, 10), (3, new, 20)]
        assert store.keys("gw-2") == []
    finally:
        store.close()
