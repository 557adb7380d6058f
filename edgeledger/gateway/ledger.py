"""The gateway's local ledger: readings and sealed blocks in the journal, found by height.

Readings are journaled once as READING records; a SEAL record closes a block and
holds the signed block plus every sensor's last sequence number, so a restart
reads only from the last seal on: start-up time does not grow with the chain.
The readings after the last seal are the open block and survive a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgeledger.core import cbor
from edgeledger.core.block import Block
from edgeledger.core.errors import DecodeError
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.blockindex import BlockIndex
from edgeledger.gateway.chain import DeviceChain
from edgeledger.gateway.journal import (
    DROP,
    READING,
    SEAL,
    Damage,
    FileOps,
    Journal,
    JournalError,
    Position,
    Record,
)

_SEAL_KEYS = frozenset({"blk", "q"})


class PrunedError(JournalError):
    """Block `height` was removed on purpose: the disk quota deleted its segment."""

    def __init__(self, height: int, segment: int | None) -> None:
        where = f"its segment {segment}" if segment is not None else "its segment"
        super().__init__(f"ledger: block {height} was pruned ({where} was removed by the "
                         "disk quota)")
        self.height = height
        self.segment = segment


@dataclass(frozen=True)
class Seal:
    """A SEAL record's content: the signed block and each sensor's last `q`."""

    block: Block
    last_q: dict[str, int]

    def encode(self) -> bytes:
        """The record payload."""
        return cbor.encode({"blk": self.block.cose, "q": self.last_q})

    @classmethod
    def decode(cls, payload: bytes, where: str) -> Seal:
        """Parse a SEAL record payload."""
        m = cbor.expect_map(cbor.decode(payload, where), _SEAL_KEYS, frozenset(), where)
        cbor.field(m, "blk", lambda x: isinstance(x, bytes), "bytes", where)
        cbor.field(m, "q", lambda x: isinstance(x, dict) and all(
            isinstance(k, str) and cbor.is_uint(v) for k, v in x.items()),
            "a map of sensor id to q", where)
        return cls(Block.parse(m["blk"], f"{where} block"), dict(m["q"]))


@dataclass
class Recovery:
    """What opening the ledger found."""

    tip: int | None
    open_readings: int
    damage: list[Damage] = field(default_factory=list)
    index_dropped: int = 0


class Ledger:
    """One device's local chain on disk. Single writer; not thread-safe."""

    def __init__(self, data_dir: Path, signer: Signer, segment_bytes: int = 4 << 20,
                 ops: FileOps | None = None) -> None:
        self.data_dir = data_dir
        self.journal = Journal(data_dir / "journal", segment_bytes, ops or FileOps())
        self.index = BlockIndex(data_dir / "blocks.idx")
        self.chain = DeviceChain.after(signer, None)
        self.open: list[Reading] = []
        self.last_q: dict[str, int] = {}
        self.durable_q: dict[str, int] = {}
        self.last_block: Block | None = None

    # --- opening -----------------------------------------------------------------------

    def recover(self) -> Recovery:
        """Bring the ledger back to its last durable state; see Journal.recover."""
        dropped, tip_seal = self._trim_index()
        start = self._first() if self.index.empty else self.index.get(self.index.count - 1)
        records, damage = self.journal.recover(start)
        if not self.index.empty:
            first = records[0] if records else None
            if first is None or first.pos != start or first.kind != SEAL:
                raise JournalError(f"ledger {self.data_dir}: seal of block "
                                   f"{self.index.count - 1} not found at {start}")
            if tip_seal is None or tip_seal[0] != first.payload:
                tip_seal = (first.payload, Seal.decode(first.payload, f"seal at {start}"))
            self._apply_seal(tip_seal[1], first.pos, index=False)
            records = records[1:]
        for record in records:
            self._replay(record)
        self.durable_q = dict(self.last_q)
        self.index.flush()
        return Recovery(self.tip, len(self.open), damage, dropped)

    def _first(self) -> Position:
        segments = self.journal.segments()
        return Position(segments[0] if segments else 0, 0)

    def _trim_index(self) -> tuple[int, tuple[bytes, Seal] | None]:
        """Drop index entries whose seal records the journal no longer has.

        Returns how many were dropped and the tip's seal (payload and decoded), if any.
        """
        dropped = 0
        while not self.index.empty:
            h = self.index.count - 1
            try:
                record = self.journal.read(self.index.get(h))
                if record.kind == SEAL:
                    seal = Seal.decode(record.payload, "seal")
                    if seal.block.header.h == h:
                        return dropped, (record.payload, seal)
            except (JournalError, DecodeError):
                pass
            self.index.truncate(h)
            dropped += 1
        return dropped, None

    def _replay(self, record: Record) -> None:
        where = f"{self.journal.segment_path(record.pos.segment)} offset {record.pos.offset}"
        if record.kind == READING:
            reading = Reading.decode(record.payload, f"reading at {where}")
            self.open.append(reading)
            self.last_q[reading.sensor] = reading.q
        elif record.kind == SEAL:
            self._apply_seal(Seal.decode(record.payload, f"seal at {where}"), record.pos)

    def _apply_seal(self, seal: Seal, pos: Position, index: bool = True) -> None:
        h = seal.block.header.h
        if index:
            self.index.append(h, pos)
        self.last_block = seal.block
        self.chain = DeviceChain.after(self.chain.signer, seal.block)
        self.last_q.update(seal.last_q)
        self.open = []

    # --- writing ---------------------------------------------------------------------

    @property
    def tip(self) -> int | None:
        """Height of the newest sealed block, if any."""
        return None if self.index.empty else self.index.count - 1

    def next_q(self, sensor: str) -> int:
        """The next sequence number for `sensor`, continuing across restarts."""
        return self.last_q.get(sensor, -1) + 1

    def add(self, reading: Reading) -> None:
        """Journal a reading into the open block (durable after the next sync)."""
        last = self.last_q.get(reading.sensor)
        if last is not None and reading.q <= last:
            raise JournalError(f"ledger: reading {reading.n} q={reading.q} does not follow "
                               f"q={last} of sensor {reading.sensor}")
        self.journal.append(READING, reading.raw)
        self.open.append(reading)
        self.last_q[reading.sensor] = reading.q

    def seal(self, ts: int) -> Block:
        """Seal the open block (possibly empty: a heartbeat) and journal it."""
        block = self.chain.seal(self.open, ts)
        seal = Seal(block, dict(self.last_q))
        pos = self.journal.append(SEAL, seal.encode())
        self.index.append(block.header.h, pos)
        self.last_block, self.open = block, []
        if self.journal.roll():
            self.index.flush()
        return block

    def append_drop(self, payload: bytes) -> None:
        """Journal a signed record of blocks dropped by the quota policy."""
        self.journal.append(DROP, payload)

    def sync(self) -> None:
        """Make everything appended durable (journal, then index)."""
        self.journal.sync()
        self.index.flush()
        self.durable_q = dict(self.last_q)

    def close(self) -> None:
        """Sync and close the files."""
        self.journal.close()
        self.index.close()

    # --- reading back ----------------------------------------------------------------

    def drop_records(self) -> list[bytes]:
        """The payloads of every DROP record still in the journal, oldest first.

        Reads the whole journal: for the rare case of forwarding a drop the sync
        layer did not see happen (it was made before a restart). JournalError at damage.
        """
        return [r.payload for r in self.journal.scan(self._first()) if r.kind == DROP]

    def block(self, height: int) -> tuple[Block, list[bytes]]:
        """Block `height` and its readings' bytes, from O(1) index reads and one segment.

        Raises PrunedError if the disk quota removed the block's segment.
        """
        if height < self.index.base:
            raise PrunedError(height, None)
        pos = self.index.get(height)
        try:
            record = self.journal.read(pos)
        except JournalError:
            if not self.journal.segment_path(pos.segment).exists():
                raise PrunedError(height, pos.segment) from None
            raise
        block = Seal.decode(record.payload, f"seal of block {height}").block
        start = Position(pos.segment, 0)
        if height > self.index.base:
            prev = self.index.get(height - 1)
            if prev.segment == pos.segment:
                start = Position(pos.segment, prev.offset + self.journal.read(prev).size)
        readings = [r.payload for r in self.journal.read_range(start, pos.offset)
                    if r.kind == READING]
        return block, readings

