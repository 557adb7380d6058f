"""The store's read side for the API: blocks by time, migration to schema 3, read-only use.

`blocks_by_time` is checked against a brute-force filter over random blocks (any
time ranges, including clock jumps and the int64 extremes), page by page. The
migration test takes a schema version 2 file with blocks in it, as the previous
release wrote it, and checks that version 3 back-fills every time range.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from apifleet import DEVICES, LOG_KEY, T0, build_fleet, readings_for
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeledger.aggregator.ingest import Ingest
from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.store.reader import BlockSpan, StoreReader
from edgeledger.aggregator.store.sqlite import SCHEMA_VERSION, SqliteStore
from edgeledger.core.block import sync_message
from edgeledger.core.errors import ConfigError
from edgeledger.gateway.chain import DeviceChain

I64 = (-(1 << 63), (1 << 63) - 1)
times = st.one_of(st.integers(-50, 50), st.integers(*I64),
                  st.sampled_from([I64[0], I64[1], 0, T0]))
spans = st.one_of(st.integers(0, 20), st.integers(0, 1 << 40), st.just(0))


def _store_with(blocks: list[tuple[str, int, int]]) -> tuple[SqliteStore, list[BlockSpan]]:
    """A store holding `blocks` (device, t0, span) with readings time ranges."""
    store = SqliteStore(":memory:")
    log = CanonicalLog(store, LOG_KEY)
    heights: dict[str, int] = {}
    spans_out = []
    for dev in ("a", "b"):
        store.enroll(dev, bytes(32), 0)
    for i, (dev, t0, span) in enumerate(blocks):
        t1 = min(t0 + span, I64[1])
        index = log.append(f"entry {i}".encode())
        h = heights.get(dev, 0)
        heights[dev] = h + 1
        store.record_block(dev, h, bytes([i % 256]) * 32, index, (t0, t1))
        spans_out.append(BlockSpan(dev, h, bytes([i % 256]) * 32, index, t0, t1))
    return store, spans_out


def _pages(reader: StoreReader, dev: str | None, since: int, until: int,
           limit: int) -> list[BlockSpan]:
    out: list[BlockSpan] = []
    start = None
    while True:
        page = reader.blocks_by_time(dev, since, until, start, limit)
        assert len(page) <= limit
        out += page
        if len(page) < limit:
            return out
        start = (page[-1].t0, page[-1].log_index + 1)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), times, spans), max_size=30),
       times, times, st.sampled_from([None, "a", "b"]), st.integers(1, 7))
def test_blocks_by_time_is_an_exact_overlap_query_in_pages(
        blocks: list[tuple[str, int, int]], since: int, until: int, dev: str | None,
        limit: int) -> None:
    store, spans_in = _store_with(blocks)
    want = sorted((b for b in spans_in if (dev is None or b.dev == dev)
                   and b.t0 <= until and b.t1 >= since and since <= until),
                  key=lambda b: b.key)
    assert _pages(store, dev, since, until, limit) == want
    store.close()


def test_heartbeats_and_blocks_without_readings_are_never_found(tmp_path: Path) -> None:
    store, _ = _store_with([("a", 5, 0)])
    store.record_block("b", 0, bytes(32), CanonicalLog(store, LOG_KEY).append(b"x"), None)
    assert [b.dev for b in store.blocks_by_time(None, I64[0], I64[1], None, 10)] == ["a"]


def _v2_file(path: Path) -> list[tuple[str, int, int, int]]:
    """A schema version 2 store with blocks (what the previous release left on disk);
    returns (device, height, t0, t1) of each block with readings."""
    store = SqliteStore(path)
    log = CanonicalLog(store, LOG_KEY)
    ingest = Ingest(log, store)
    ingest.enroll("gw-1", DEVICES["gw-1"].public_key, T0)
    chain = DeviceChain.after(DEVICES["gw-1"], None)
    expected = []
    for h in range(5):
        readings = [] if h == 2 else readings_for("gw-1", h, 2 * h)
        block = chain.seal(readings, T0 + h * 10_000 + 500)
        assert ingest.receive("gw-1", sync_message(block, readings)).status == "ok"
        if readings:
            expected.append(("gw-1", h, block.header.t0, block.header.t1))
    store.close()
    db = sqlite3.connect(path)  # back to version 2: what schema 3 added, removed
    db.executescript("DROP INDEX blocks_dev_time; DROP INDEX blocks_time; DROP INDEX events_kind;"
                     "DROP INDEX events_dev; DROP TABLE IF EXISTS drops; DROP TABLE device_keys;"
                     "ALTER TABLE blocks DROP COLUMN span; ALTER TABLE blocks DROP COLUMN t1;"
                     "ALTER TABLE blocks DROP COLUMN t0; PRAGMA user_version=2;")
    db.close()
    return expected


def test_a_version_2_store_is_migrated_and_back_filled(tmp_path: Path) -> None:
    expected = _v2_file(tmp_path / "v2.db")
    with pytest.raises(ConfigError, match="open it for writing first"):
        SqliteStore(tmp_path / "v2.db", read_only=True)
    store = SqliteStore(tmp_path / "v2.db")
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 3
    found = store.blocks_by_time("gw-1", I64[0], I64[1], None, 100)
    assert [(b.dev, b.height, b.t0, b.t1) for b in found] == expected
    store.close()


def test_a_reader_never_creates_writes_or_migrates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open"):
        SqliteStore(tmp_path / "absent.db", read_only=True)
    assert not (tmp_path / "absent.db").exists()
    build_fleet(tmp_path / "agg.db", heights=3, tail=0)
    reader = SqliteStore(tmp_path / "agg.db", read_only=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.enroll("gw-9", bytes(32), 1)
    assert reader.size() == 9


def test_a_reader_sees_commits_of_the_writer_while_it_writes(tmp_path: Path) -> None:
    build_fleet(tmp_path / "agg.db", heights=3, tail=0)
    writer = SqliteStore(tmp_path / "agg.db")
    reader = SqliteStore(tmp_path / "agg.db", read_only=True)
    sizes: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            sizes.append(reader.size())

    thread = threading.Thread(target=read)
    thread.start()
    log = CanonicalLog(writer, LOG_KEY)
    for i in range(200):
        log.append(f"more {i}".encode())
    stop.set()
    thread.join()
    sizes.append(reader.size())
    assert len(set(sizes)) > 2, "the reader saw the log grow"
    assert sizes == sorted(sizes) and sizes[-1] == 209


def test_events_and_devices_page_with_filters(tmp_path: Path) -> None:
    build_fleet(tmp_path / "agg.db", heights=3, tail=0)
    store = SqliteStore(tmp_path / "agg.db", read_only=True)
    every = store.events(0, 1000)
    assert store.events(0, 1000, kind="enrolled") == [e for e in every if e.kind == "enrolled"]
    assert store.events(0, 1000, dev="gw-2") == [e for e in every if e.dev == "gw-2"]
    assert store.events(every[1].id, 2) == every[2:4]
    assert [d.dev for d in store.devices()] == ["gw-1", "gw-2", "gw-3"]
    assert [d.dev for d in store.devices("gw-1", 1)] == ["gw-2"]
