"""Finding readings: `/v1/readings` pages, with bounded work per request.

Theory of operation. The store keeps one CBOR array of readings per block, and finds
blocks by time (StoreReader.blocks_by_time: (t0, log index) order, no scan). A page
walks those blocks from the cursor, decodes their readings and keeps the ones that
match the device, name and [since, until] filters, in (block t0, log index, position
in block) order. The cursor is that position, `<t0>_<log index>_<position>`, so the
next page starts exactly where this one stopped, even inside a block.

Every request does bounded work: it stops after `limit` matches, or after looking at
SCAN_BLOCKS blocks or SCAN_READINGS readings, whichever comes first, and then returns
what it has (possibly nothing) with a cursor to go on. A client follows `next` until
it is null; a sparse filter (a rare name) costs more pages, never a long request.

Blocks that arrive after a client has paged past their time (a gateway back from an
outage) are not in the pages already returned: for an audit of a past window, query
it once ingest has caught up (the devices' `backlog` in /v1/devices says when).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeledger.aggregator.store.reader import BlockSpan, StoreReader
from edgeledger.core import cbor
from edgeledger.core.block import MAX_SYNC_MESSAGE
from edgeledger.core.errors import DecodeError, EdgeLedgerError
from edgeledger.core.reading import Reading

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
SCAN_BLOCKS = 2000
SCAN_READINGS = 20_000
BATCH = 64
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
CURSOR_RE = re.compile(r"(-?[0-9]{1,19})_([0-9]{1,19})_([0-9]{1,5})")
CURSOR_PATTERN = "^" + CURSOR_RE.pattern + "$"


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: block (t0, log index), and the position in its readings."""

    t0: int
    log_index: int
    index: int

    def text(self) -> str:
        """The cursor as `next` gives it."""
        return f"{self.t0}_{self.log_index}_{self.index}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """Parse what `text()` made; ValueError saying why otherwise."""
        match = CURSOR_RE.fullmatch(text)
        if match is None:
            raise ValueError("not a cursor from a previous page's `next`")
        t0, log_index, index = (int(g) for g in match.groups())
        if not INT64_MIN <= t0 <= INT64_MAX or log_index > INT64_MAX:
            raise ValueError("out of range")
        return cls(t0, log_index, index)


@dataclass(frozen=True)
class Found:
    """One matching reading, with its block and its position there."""

    block: BlockSpan
    index: int
    reading: Reading


@dataclass(frozen=True)
class Query:
    """The filters of `/v1/readings`; `name` is a reading name, or a sensor id."""

    device: str | None
    name: str | None
    since: int
    until: int

    def matches(self, r: Reading) -> bool:
        """Whether reading `r` passes the name and time filters."""
        if not self.since <= r.t <= self.until:
            return False
        if self.name is None:
            return True
        return r.n == self.name if "/" in self.name else r.sensor == self.name


def block_readings(reader: StoreReader, log_index: int) -> list[bytes]:
    """The readings' bytes of the block at `log_index` ([] if none are stored)."""
    data = reader.readings(log_index)
    if data is None:
        return []
    what = f"store: readings of log entry {log_index}"
    try:
        items = cbor.loads(data, what, MAX_SYNC_MESSAGE)
    except DecodeError as exc:
        raise EdgeLedgerError(str(exc)) from exc
    if not isinstance(items, list) or not all(isinstance(i, bytes) for i in items):
        raise EdgeLedgerError(f"{what}: not an array of byte strings")
    return items


def decode_reading(raw: bytes, log_index: int, index: int) -> Reading:
    """A stored reading (verified at ingest); a decode failure is a store fault."""
    try:
        return Reading.decode(raw, f"store: log entry {log_index} reading {index}")
    except DecodeError as exc:
        raise EdgeLedgerError(str(exc)) from exc


def page(reader: StoreReader, query: Query, cursor: Cursor | None,
         limit: int) -> tuple[list[Found], Cursor | None]:
    """One page of matching readings from `cursor`, and the cursor of the next (None: done)."""
    found: list[Found] = []
    start = None if cursor is None else (cursor.t0, cursor.log_index)
    skip = 0 if cursor is None else cursor.index
    blocks_seen = readings_seen = 0
    while True:
        blocks = reader.blocks_by_time(query.device, query.since, query.until, start, BATCH)
        if not blocks:
            return found, None
        for block in blocks:
            if blocks_seen >= SCAN_BLOCKS or readings_seen >= SCAN_READINGS:
                return found, Cursor(block.t0, block.log_index, 0)
            first = skip if start == block.key else 0
            raws = block_readings(reader, block.log_index)
            for i in range(first, len(raws)):
                reading = decode_reading(raws[i], block.log_index, i)
                readings_seen += 1
                if query.matches(reading):
                    found.append(Found(block, i, reading))
                    if len(found) == limit:
                        return found, Cursor(block.t0, block.log_index, i + 1)
            blocks_seen += 1
        last = blocks[-1]
        start, skip = (last.t0, last.log_index + 1), 0
