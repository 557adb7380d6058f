"""Store conformance: PostgresStore behaves as SqliteStore for the log, ingest and the API.

Each `both` test runs once on each backend, with the same calls and the same
expectations; `test_the_backends_answer_reads_alike` builds the same content in
both and compares every StoreReader answer. The PostgreSQL-only tests after that
are the guards that make several writers safe (store/postgres.py's module doc).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from edgeledger.aggregator.ingest import Ingest
from edgeledger.aggregator.log import CanonicalLog, MemoryLogStore
from edgeledger.aggregator.store.postgres import PostgresStore, StoreFault
from edgeledger.aggregator.store.sqlite import AcceptedBlock, SqliteStore
from edgeledger.core import merkle
from edgeledger.core.block import seal, sync_message
from edgeledger.core.checkpoint import ZERO_HASH, check_extends, open_checkpoint
from edgeledger.core.errors import ConfigError, EdgeLedgerError
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.chain import DeviceChain

SIGNER = Signer("log.test/conformance", bytes(range(32)))
DEVICE = Signer("gw-1", bytes([3]) * 32)
Store = SqliteStore | PostgresStore
Opener = Callable[[], Any]


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens (and reopens) one store of the parametrized backend; all closed at the end."""
    opened: list[Store] = []

    def open_store() -> Store:
        if request.param == "sqlite":
            store: Store = SqliteStore(tmp_path / "log.db")
        else:
            store = PostgresStore(request.getfixturevalue("pg_dsn"),
                                  request.getfixturevalue("pg_schema"))
        opened.append(store)
        return store
    yield open_store
    for store in opened:
        store.close()


def _block(dev: str, height: int, prev: bytes = ZERO_HASH,
           times: tuple[int, int] | None = None) -> AcceptedBlock:
    entry = f"{dev}/{height}/".encode() + prev
    readings = b"\x80" if times is None else b"\x81\x01"
    return AcceptedBlock(dev, height, hashlib.sha256(entry).digest(), entry, readings,
                         (("s-1", height),) if times else (), times)


def _chain(dev: str, start: int, count: int, prev: bytes = ZERO_HASH) -> list[AcceptedBlock]:
    out = []
    for h in range(start, start + count):
        out.append(_block(dev, h, prev))
        prev = out[-1].hash
    return out


@pytest.mark.parametrize("sizes", [[1], [2, 1], [3, 4], [7, 1, 1], [64], [100, 157]])
def test_roots_and_proofs_equal_the_memory_stores(opener: Opener, sizes: list[int]) -> None:
    store = opener()
    log, mem = CanonicalLog(store, SIGNER), CanonicalLog(MemoryLogStore(), SIGNER)
    store.enroll("gw-1", bytes(32), 1)
    prev, height = ZERO_HASH, 0
    for batch in sizes:
        blocks = _chain("gw-1", height, batch, prev)
        assert store.append_blocks(log, blocks) == list(range(height, height + batch))
        prev, height = blocks[-1].hash, height + batch
        for b in blocks:
            mem.append(b.entry)
    assert log.append(b"one more, on its own") == height
    mem.append(b"one more, on its own")
    n = height + 1
    for m in range(1, n + 1, max(1, n // 17)):
        assert log.root(m) == mem.root(m)
        for i in range(0, m, max(1, m // 5)):
            assert log.inclusion_proof(i, m) == mem.inclusion_proof(i, m)
            assert log.consistency_proof(i, m) == mem.consistency_proof(i, m)
    assert store.read_hashes(range(merkle.stored_count(n))) == \
        mem.store.read_hashes(range(merkle.stored_count(n)))
    assert list(store.entries()) == [mem.store.entry(i) for i in range(n)]


def test_reopening_continues_the_log_devices_and_the_checkpoint_chain(opener: Opener) -> None:
    store = opener()
    log = CanonicalLog(store, SIGNER)
    store.enroll("gw-1", bytes([1]) * 32, 100)
    store.enroll("gw-2", bytes([2]) * 32, 100)
    store.revoke("gw-2", 200)
    first, second = _chain("gw-1", 0, 2)
    store.append_blocks(log, [first, second])
    note1 = log.sign_checkpoint(1000)
    root = log.root()
    store.close()
    store = opener()
    log = CanonicalLog(store, SIGNER)
    assert (log.size, log.root(), log.checkpoint_note) == (2, root, note1)
    gw1, gw2 = store.devices()
    assert (gw1.dev, gw1.next_height, gw1.prev) == ("gw-1", 2, second.hash)
    assert (gw2.dev, gw2.revoked_ms, gw2.next_height) == ("gw-2", 200, 0)
    assert store.block("gw-1", 1) == (second.hash, 1)
    store.append_blocks(log, [_block("gw-1", 2, second.hash)])
    note2 = log.sign_checkpoint(900)
    cp1, cp2 = (open_checkpoint(n, SIGNER.verifier()) for n in (note1, note2))
    assert (cp2.height, cp2.prev, cp2.size) == (1, cp1.hash, 3)
    check_extends(cp1, cp2, log.consistency_proof(cp1.size, cp2.size))
    assert store.checkpoint(0) == note1 and store.checkpoint(1) == note2


def _state(store: Store) -> tuple[object, ...]:
    return (store.size(), store.read_hashes(range(64)), store.devices(),
            store.blocks("gw-1"), store.last_checkpoint(), store.events())


def test_a_batch_failing_midway_leaves_nothing(opener: Opener) -> None:
    store = opener()
    log = CanonicalLog(store, SIGNER)
    store.enroll("gw-1", bytes(32), 0)
    zero, one = _chain("gw-1", 0, 2)
    store.append_blocks(log, [zero])
    before = _state(store)
    with pytest.raises(EdgeLedgerError, match=r"gw-1/5: .*next height"):
        store.append_blocks(log, [one, _block("gw-1", 5)])
    assert _state(store) == before
    with pytest.raises(RuntimeError), store.transaction():
        store.append_blocks(log, [one])
        store.add_event("note", "gw-1", 1, "about to fail", 5)
        raise RuntimeError("power cut")
    assert _state(store) == before
    assert store.append_blocks(log, [one]) == [1]


def test_devices_evidence_and_the_event_cursor(opener: Opener) -> None:
    store = opener()
    log = CanonicalLog(store, SIGNER)
    store.enroll("gw-1", bytes(32), 10)
    [block] = _chain("gw-1", 0, 1)
    store.append_blocks(log, [block])
    assert store.add_equivocation("gw-1", 0, b"h" * 32, b"other block", 20)
    assert not store.add_equivocation("gw-1", 0, b"h" * 32, b"other block", 30)
    [evidence] = store.equivocations("gw-1")
    assert (evidence.log_index, evidence.block) == (0, b"other block")
    device = store.device("gw-1")
    assert device is not None and device.flagged_ms == 20
    store.revoke("gw-1", 40)
    with pytest.raises(EdgeLedgerError, match="revoked"):
        store.append_blocks(log, _chain("gw-1", 1, 1, block.hash))
    assert store.blocks("gw-1") == [(0, block.hash, 0)], "history stays"
    with pytest.raises(EdgeLedgerError, match="not enrolled"):
        store.revoke("gw-9", 50)
    ids = [store.add_event("gap", "gw-1", h, f"gap at {h}", 50 + h) for h in range(5)]
    assert ids == list(range(ids[0], ids[0] + 5))
    assert [e.height for e in store.events(after=ids[1], limit=2)] == [2, 3]
    assert store.events(after=ids[-1]) == [] and store.last_event_id() == ids[-1]
    with pytest.raises(EdgeLedgerError, match="no log entry 7"):
        store.entry(7)


def _readings(start: int, count: int = 3) -> list[Reading]:
    return [Reading("s-1/temperature", 1000 + q, q, 20.0 + q, "Cel")
            for q in range(start, start + count)]


def test_ingest_answers_alike_on_both(opener: Opener) -> None:
    """The same messages through Ingest: the same acks, events, log and stored readings."""
    store = opener()
    ingest = Ingest(CanonicalLog(store, SIGNER), store)
    ingest.enroll("gw-1", DEVICE.public_key, 1)
    chain = DeviceChain.after(DEVICE, None)
    good = [sync_message(chain.seal(_readings(3 * h), 5000 + h), _readings(3 * h))
            for h in range(3)]
    other = sync_message(seal(DEVICE, "gw-1", 0, ZERO_HASH, _readings(50), 5000), _readings(50))
    back = [Reading("s-1/temperature", 1000, 1, 1.0, "Cel")]
    rewound = sync_message(chain.seal(back, 6000), back)
    answers = [ingest.receive_batch([("gw-1", m) for m in batch], 10_000)
               for batch in ([good[0], good[0]], [good[2]], [good[1], good[2]], [other],
                             [rewound], [b"\x00"])]
    assert [[(a.status, a.next, a.log_index) for a in acks] for acks in answers] == [
        [("ok", 1, 0), ("dup", 1, 0)], [("gap", 1, None)], [("ok", 2, 1), ("ok", 3, 2)],
        [("rejected", 3, None)], [("rejected", 3, None)], [("rejected", 3, None)]]
    assert [e.kind for e in store.events()] == ["enrolled", "dup", "gap", "equivocation",
                                                "bad-readings", "malformed"]
    assert store.readings(1) is not None and store.last_q("gw-1", "s-1") == 8
    assert store.blocks_by_time("gw-1", 1000, 1003, None, 10)[0].log_index == 0


def test_the_backends_answer_reads_alike(tmp_path: Path, pg_dsn: str, pg_schema: str) -> None:
    sqlite, pg = SqliteStore(tmp_path / "a.db"), PostgresStore(pg_dsn, pg_schema)
    try:
        for store in (sqlite, pg):
            log = CanonicalLog(store, SIGNER)
            for i, dev in enumerate(["gw-a", "gw-10", "gw-2", "x-1"]):
                store.enroll(dev, bytes([i]) * 32, 5)
            for dev, count, t in (("gw-a", 5, 0), ("gw-2", 4, 50), ("x-1", 3, -7)):
                prev = ZERO_HASH
                for h in range(count):
                    times = None if h == 1 else (t + 10 * h, t + 10 * h + (h * h * 7))
                    block = _block(dev, h, prev, times)
                    store.append_blocks(log, [block])
                    prev = block.hash
            log.sign_checkpoint(1234)
            store.enroll("gw-a", bytes([9]) * 32, 7)  # a new key, from height 5 on
            for i in range(7):
                store.add_event(("gap", "dup")[i % 2], ("gw-a", "x-1", None)[i % 3], i, "r", i)
        for call, args in [("devices", ()), ("devices", ("gw-10", 2)), ("devices", ("zz", None)),
                           ("events", (0, 100)), ("events", (2, 3, "dup")),
                           ("events", (0, 10, None, "x-1")), ("events", (0, 10, "gap", "gw-a")),
                           ("blocks", ("gw-2",)), ("block", ("gw-a", 4)), ("readings", (2,)),
                           ("last_checkpoint", ()), ("entry", (3,)), ("last_q", ("x-1", "s-1")),
                           ("keys", ("gw-a",)), ("keys", ("x-1",))]:
            answer = getattr(sqlite, call)(*args)
            assert answer == getattr(pg, call)(*args), (call, args)
            assert answer or call == "devices", (call, args)
        assert [k.from_height for k in pg.keys("gw-a")] == [0, 5] and pg.keys("nobody") == []
        found = 0
        for dev in (None, "gw-a", "gw-2", "nobody"):
            for since, until in ((-100, 1000), (0, 0), (15, 41), (60, 59), (-7, -7)):
                for limit in (1, 2, 50):
                    a = sqlite.blocks_by_time(dev, since, until, None, limit)
                    assert a == pg.blocks_by_time(dev, since, until, None, limit)
                    found += len(a)
                    if a:
                        assert sqlite.blocks_by_time(dev, since, until, a[-1].key, limit) == \
                            pg.blocks_by_time(dev, since, until, a[-1].key, limit)
        assert found > 30
    finally:
        sqlite.close()
        pg.close()


# --- PostgreSQL only: schemas, and the guards that keep several writers safe ----------------

def test_a_foreign_or_newer_schema_is_refused_by_name(pg_dsn: str, pg_schema: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {pg_schema}")
        conn.execute(f"CREATE TABLE {pg_schema}.t (x int)")
    with pytest.raises(ConfigError, match=f"schema '{pg_schema}' is not an EdgeLedger store"):
        PostgresStore(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {pg_schema}.t")
    PostgresStore(pg_dsn, pg_schema).close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {pg_schema}.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(ConfigError, match="store schema version 99 is newer"):
        PostgresStore(pg_dsn, pg_schema)
    with pytest.raises(StoreFault, match="cannot reach PostgreSQL") as unreachable:
        PostgresStore("host=127.0.0.1 port=1 dbname=test connect_timeout=2", pg_schema)
    assert unreachable.value.lost  # worth retrying, unlike a refusal:
    with pytest.raises(ConfigError, match="PostgreSQL refused us"):
        PostgresStore(f"{pg_dsn} dbname=no_such_database_here", pg_schema)


@pytest.fixture
def two(pg_dsn: str, pg_schema: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    """Two connections to one store: two processes that both think they may write."""
    a = PostgresStore(pg_dsn, pg_schema)
    b = PostgresStore(pg_dsn, pg_schema)
    a.enroll("gw-1", bytes(32), 1)
    yield a, b
    a.close()
    b.close()


def test_a_stale_writer_cannot_fork_the_log(two: tuple[PostgresStore, PostgresStore]) -> None:
    a, b = two
    log_a, log_b = CanonicalLog(a, SIGNER), CanonicalLog(b, SIGNER)
    blocks = _chain("gw-1", 0, 3)
    a.append_blocks(log_a, blocks[:2])
    stale = b.size()
    hashes = merkle.append_hashes(stale, merkle.leaf_hash(b"fork"), b.read_hashes)
    a.append_blocks(log_a, blocks[2:])
    with pytest.raises(EdgeLedgerError, match="another writer appended"):
        b.append(b"fork", hashes)  # computed for the size it saw: refused, nothing written
    with pytest.raises(EdgeLedgerError, match=r"gw-1/2: .*not its next height"):
        b.append_blocks(log_b, blocks[2:])  # the same block decided twice: refused
    assert a.size() == 3 and list(a.entries()) == [x.entry for x in blocks]


def test_a_stale_sequencer_cannot_fork_the_checkpoint_chain(
        two: tuple[PostgresStore, PostgresStore]) -> None:
    a, b = two
    log_a = CanonicalLog(a, SIGNER)
    a.append_blocks(log_a, _chain("gw-1", 0, 2))
    log_a.sign_checkpoint(10)
    log_b = CanonicalLog(b, SIGNER)  # took over: it knows checkpoint 0
    a.append_blocks(log_a, _chain("gw-1", 2, 1, a.blocks("gw-1")[-1][1]))
    log_a.sign_checkpoint(20)  # the old sequencer signs height 1 first
    with pytest.raises(EdgeLedgerError, match="checkpoint 1 refused: that height is already"):
        log_b.sign_checkpoint(30)
    other = Signer("log.test/conformance", bytes([9]) * 32)  # a different tree, same origin
    forged = CanonicalLog(MemoryLogStore(), other)
    for i in range(5):
        forged.append(b"x%d" % i)
    with pytest.raises(EdgeLedgerError, match="checkpoint 0 refused"):
        b.add_checkpoint(forged.sign_checkpoint(40))
    assert [a.checkpoint(h) is not None for h in range(3)] == [True, True, False]


def test_concurrent_batches_serialise_on_the_log_head(
        two: tuple[PostgresStore, PostgresStore]) -> None:
    """Two writers appending different devices at once: both succeed, one after the other,
    and the tree is the one the entries make (no interleaved, miscomputed hashes)."""
    a, b = two
    a.enroll("gw-2", bytes(32), 1)
    errors: list[EdgeLedgerError] = []

    def write(store: PostgresStore, dev: str) -> None:
        log, prev = CanonicalLog(store, SIGNER), ZERO_HASH
        try:
            for h in range(0, 40, 4):
                blocks = _chain(dev, h, 4, prev)
                store.append_blocks(log, blocks)
                prev = blocks[-1].hash
        except EdgeLedgerError as exc:
            errors.append(exc)
    threads = [threading.Thread(target=write, args=(s, d)) for s, d in ((a, "gw-1"),
                                                                        (b, "gw-2"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    entries = list(a.entries())
    assert len(entries) == 80
    assert CanonicalLog(a, SIGNER).root() == merkle.root_from_leaf_hashes(
        [merkle.leaf_hash(e) for e in entries])


def test_a_reader_needs_a_current_store_and_cannot_write(pg_dsn: str, pg_schema: str) -> None:
    with pytest.raises(ConfigError, match="holds no current EdgeLedger store"):
        PostgresStore(pg_dsn, pg_schema, read_only=True)  # and creates nothing:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.tables WHERE "
                            "table_schema = %s", (pg_schema,)).fetchone() == (0,)
    writer = PostgresStore(pg_dsn, pg_schema)
    writer.enroll("gw-1", bytes(32), 1)
    reader = PostgresStore(pg_dsn, pg_schema, read_only=True)
    try:
        assert [d.dev for d in reader.devices()] == ["gw-1"]
        with pytest.raises(StoreFault, match="read-only transaction"):
            reader.enroll("gw-2", bytes(32), 1)
    finally:
        reader.close()
        writer.close()
