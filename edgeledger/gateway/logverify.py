"""`edgeledger log verify --data-dir DIR`: check a gateway's local log without changing it.

Theory of operation. Every file is opened read-only; nothing is recovered, cut or
rewritten, so this can run beside a live agent or on a card pulled from a dead
gateway. Every segment is read from its first byte (not from the last indexed
seal, as the agent's O(1) start does), so damage anywhere is found:

- every record's frame (length, CRC-32 over kind and payload, kind);
- the chain: heights consecutive from the first block kept (older segments may be
  pruned), each `prev` the hash of the block before, one `dev`, each block signed
  by the device key (the public half of DATA/device.key; its mode is not checked,
  since only the public key is used);
- each block against its readings: count, Merkle root, t0/t1, `q` order
  (`verify_readings`), and each sensor's `q` strictly increasing across blocks
  and agreeing with the seal's `q` map;
- blocks.idx: the entry of every block kept points at its seal record.

A torn tail (the newest segment ends in a record that does not check out and no
whole record follows) is what a power cut leaves; the agent cuts it on its next
start and loses nothing that was reported durable. It is therefore not a fault:
the exit status is 0 and the summary line carries a note naming file, offset and
bytes. Index entries the agent will trim or add on its next start are notes too.
Anything else that does not check out is a fault: exit 1, and one line naming the
segment file, offset and height.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeledger.core import b64
from edgeledger.core.block import Block, verify_readings
from edgeledger.core.droprecord import verify_drop
from edgeledger.core.errors import DecodeError, EdgeLedgerError, VerificationError
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.blockindex import read_index
from edgeledger.gateway.journal import (
    DROP,
    HEADER,
    READING,
    SEAL,
    Journal,
    JournalError,
    Position,
    parse_at,
)
from edgeledger.gateway.ledger import Seal

EXIT_OK, EXIT_FAULT = 0, 1


class LogFault(EdgeLedgerError):
    """The first thing in the log that does not check out (names file, offset, height)."""


@dataclass
class _Chain:
    """What the walk over the records has seen so far."""

    public_key: bytes
    dev: str | None = None
    first: Block | None = None
    last: Block | None = None
    pending: list[bytes] = field(default_factory=list)
    last_q: dict[str, int] = field(default_factory=dict)
    seals: dict[int, Position] = field(default_factory=dict)
    readings: int = 0
    drops: int = 0

    @property
    def next_height(self) -> str:
        """The height the open block will get, for messages."""
        return str(self.last.header.h + 1) if self.last else "after the last pruned block"

    def reading(self, payload: bytes, where: str) -> None:
        """A READING record: it joins the open block; its `q` must move forward."""
        try:
            r = Reading.decode(payload, "reading")
        except DecodeError as exc:
            raise LogFault(f"{where} (block {self.next_height}): {exc}") from exc
        last = self.last_q.get(r.sensor)
        if last is not None and r.q <= last:
            raise LogFault(f"{where} (block {self.next_height}): reading {r.n} has q={r.q}, "
                           f"not above q={last} of sensor {r.sensor}")
        self.last_q[r.sensor] = r.q
        self.pending.append(payload)

    def seal(self, payload: bytes, where: str, pos: Position) -> None:
        """A SEAL record: the block must extend the chain and match the open readings."""
        try:
            seal = Seal.decode(payload, "seal")
        except DecodeError as exc:
            raise LogFault(f"{where} (block {self.next_height}): {exc}") from exc
        block, h = seal.block, seal.block.header.h
        self._link(block, f"{where} (block {h})")
        try:
            block.verify(self.public_key)
            verify_readings(block, self.pending)
        except VerificationError as exc:
            raise LogFault(f"{where} (block {h}): {exc}") from exc
        for sensor, q in seal.last_q.items():
            if self.last_q.get(sensor, q) != q:
                raise LogFault(f"{where} (block {h}): seal says sensor {sensor} is at q={q}, "
                               f"its readings are at q={self.last_q[sensor]}")
        self.last_q.update(seal.last_q)
        self.readings += len(self.pending)
        self.pending = []
        self.seals[h] = pos
        self.first = self.first or block
        self.last = block

    def _link(self, block: Block, where: str) -> None:
        hdr = block.header
        if self.last is None:
            self.dev = hdr.dev
            return
        if hdr.h != self.last.header.h + 1:
            raise LogFault(f"{where}: height {hdr.h} follows height {self.last.header.h}")
        if hdr.prev != self.last.hash:
            raise LogFault(f"{where}: prev {hdr.prev.hex()[:16]}… is not the hash of block "
                           f"{self.last.header.h} ({self.last.hash.hex()[:16]}…)")
        if hdr.dev != self.dev:
            raise LogFault(f"{where}: device {hdr.dev!r}, earlier blocks are {self.dev!r}")


@dataclass
class LogReport:
    """What `verify_log` found in a sound log."""

    chain: _Chain
    segments: int
    size: int
    acked: int | None
    has_state: bool
    notes: list[str]

    def line(self) -> str:
        """The one summary line."""
        c = self.chain
        if c.first and c.last:
            blocks = c.last.header.h - c.first.header.h + 1
            heights = f" (heights {c.first.header.h}..{c.last.header.h})"
            tip: int | None = c.last.header.h
        else:
            blocks, heights, tip = 0, "", None
        out = (f"OK: {blocks} blocks{heights}, {c.readings} readings, {len(c.pending)} open "
               f"readings, {self.segments} segments, {self.size} bytes, "
               f"tip {_show(tip)}")
        if self.has_state:
            backlog = (tip if tip is not None else -1) - (self.acked if self.acked is not None
                                                          else -1)
            out += f", acked {_show(self.acked)}, backlog {max(backlog, 0)}"
        if c.drops:
            out += f", {c.drops} drop records"
        return out + "".join(f"; note: {n}" for n in self.notes)


def _show(h: int | None) -> str:
    return "none" if h is None else str(h)


def run_log_verify(data_dir: Path) -> int:
    """The command: print one summary line and return 0, or the first fault and return 1."""
    try:
        report = verify_log(data_dir)
    except LogFault as exc:
        print(f"FAULT: {exc}")
        return EXIT_FAULT
    print(report.line())
    return EXIT_OK


def verify_log(data_dir: Path) -> LogReport:
    """Check the log in `data_dir` as the module doc says; LogFault names the first fault."""
    journal = Journal(data_dir / "journal")
    if not journal.directory.is_dir():
        raise LogFault(f"{journal.directory}: no journal directory (is {data_dir} a data dir?)")
    state = _read_state(data_dir / "state.json")
    chain = _Chain(_public_key(data_dir, state))
    numbers = journal.segments()
    notes: list[str] = []
    size = 0
    for i, number in enumerate(numbers):
        path = journal.segment_path(number)
        data = path.read_bytes()
        size += len(data)
        torn = _walk_segment(chain, path, number, data, newest=i == len(numbers) - 1)
        if torn is not None:
            notes.append(f"torn tail in {path.name} at offset {torn}: {len(data) - torn} bytes "
                         "(a power cut; the agent cuts it on its next start)")
    notes += _check_index(data_dir / "blocks.idx", chain, numbers)
    quarantined = journal.directory / "quarantine"
    if quarantined.is_dir() and any(quarantined.iterdir()):
        notes.append(f"{len(list(quarantined.iterdir()))} damaged file(s) kept in {quarantined}")
    acked = _acked(state)
    return LogReport(chain, len(numbers), size, acked, state is not None, notes)


def _walk_segment(chain: _Chain, path: Path, number: int, data: bytes,
                  newest: bool) -> int | None:
    """Check every record of one segment; return the offset of a torn tail, if any."""
    view, offset = memoryview(data), 0
    while offset < len(data):
        parsed = parse_at(view, offset)
        where = f"{path.name} offset {offset}"
        if parsed is None:
            if newest and not _record_after(view, offset):
                return offset
            place = "followed by whole records" if newest else "in an older segment"
            raise LogFault(f"{where} (block {chain.next_height}): record fails its frame or "
                           f"CRC check, {place} (damage, not a torn tail)")
        kind, payload = parsed
        if kind == READING:
            chain.reading(payload, where)
        elif kind == SEAL:
            chain.seal(payload, where, Position(number, offset))
        elif kind == DROP:
            try:
                verify_drop(payload, chain.public_key)
            except (DecodeError, VerificationError) as exc:
                raise LogFault(f"{where} (block {chain.next_height}): {exc}") from exc
            chain.drops += 1
        offset += HEADER.size + len(payload)
    return None


def _record_after(view: memoryview, bad: int) -> bool:
    """Whether a whole record starts anywhere after the bad byte at `bad`."""
    return any(parse_at(view, at) is not None for at in range(bad + 1, len(view)))


def _check_index(path: Path, chain: _Chain, numbers: list[int]) -> list[str]:
    """Compare blocks.idx with the seal records found; return notes, raise on a fault."""
    if not chain.seals:
        return []
    try:
        base, entries, torn = read_index(path)
    except FileNotFoundError:
        return [f"no block index {path.name} (rebuilt on the next start)"]
    except JournalError as exc:
        raise LogFault(str(exc)) from exc
    notes = [f"{path.name} ends in a torn entry (cut on the next start)"] if torn else []
    count = base + len(entries)
    first, tip = min(chain.seals), max(chain.seals)
    if base > first:
        raise LogFault(f"{path.name} starts at block {base}, but block {first} is still kept")
    for h in range(base, min(count, first)):
        if numbers and entries[h - base].segment >= numbers[0]:
            raise LogFault(f"{path.name} entry {h}: points into segment "
                           f"{entries[h - base].segment}, but block {h} is not in the kept "
                           f"segments (first kept block is {first})")
    for h in range(first, min(count, tip + 1)):
        entry = entries[h - base]
        if entry != chain.seals[h]:
            raise LogFault(f"{path.name} entry {h}: says segment {entry.segment} offset "
                           f"{entry.offset}, but the seal of block {h} is at segment "
                           f"{chain.seals[h].segment} offset {chain.seals[h].offset}")
    if count <= tip:
        notes.append(f"{path.name} lacks blocks {count}..{tip} (added on the next start)")
    elif count > tip + 1:
        notes.append(f"{path.name} has {count - tip - 1} entries past the tip "
                     "(their seals were lost; trimmed on the next start)")
    return notes


def _public_key(data_dir: Path, state: dict[str, Any] | None) -> bytes:
    """The device's public key: from device.key (any mode), else from the state file."""
    key_file = data_dir / "device.key"
    try:
        return Signer.parse(key_file.read_text()).public_key
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError, DecodeError) as exc:
        raise LogFault(f"{key_file}: cannot read the device key: {exc}") from exc
    value = (state or {}).get("public_key")
    if isinstance(value, str):
        try:
            return b64.decode(value, "state.json identity public_key", 32)
        except DecodeError as exc:
            raise LogFault(f"{data_dir / 'state.json'}: {exc}") from exc
    raise LogFault(f"{key_file}: no device key (and no public key in state.json) to check "
                   "the block signatures with")


def _read_state(path: Path) -> dict[str, Any] | None:
    """The fields of the agent's TinyDB state that matter here, or None without a file.

    `acked` comes from the "sync" table, `public_key` from "identity"; other tables
    are left alone (the file belongs to the agent and may grow).
    """
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LogFault(f"{path}: not readable as JSON: {exc}") from exc
    flat: dict[str, Any] = {}
    for name in ("identity", "sync"):
        table = obj.get(name) if isinstance(obj, dict) else None
        for doc in table.values() if isinstance(table, dict) else ():
            if isinstance(doc, dict):
                flat.update(doc)
    return flat


def _acked(state: dict[str, Any] | None) -> int | None:
    value = (state or {}).get("acked")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
