"""The agent's small documents in TinyDB: identity, sync cursors, settings, flags, counters.

Never the chain: blocks and readings live in the journal. What is here is small
and rewritten whole on each change, so each write goes through `AtomicJSONStorage`
(temp file, fsync, rename, fsync the directory): after a power cut the file holds
either the old or the new state, never a mix. Changes are rare (an ack, a
checkpoint, a clock flag, a disk-full episode), never one per reading.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage

from edgeledger.atomicfile import replace_file
from edgeledger.core.errors import EdgeLedgerError
from edgeledger.sync.device import SyncCursor

MAX_CLOCK_FLAGS = 100  # the newest are kept; the counter `clock_flags` counts them all
MAX_SYNC_ALARMS = 100  # likewise for `sync_alarms`


class StateError(EdgeLedgerError):
    """The state file cannot be read as it must be (names the file)."""


class AtomicJSONStorage(Storage):
    """TinyDB storage that replaces its JSON file atomically on every write."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.tmp.unlink(missing_ok=True)  # left by a write that never reached its rename

    def read(self) -> dict[str, dict[str, Any]] | None:
        """The whole database, or None for a new file."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateError(f"state {self.path}: cannot read: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StateError(f"state {self.path}: not valid JSON ({exc}); move it aside to "
                             "start with empty state") from exc
        if not isinstance(data, dict):
            raise StateError(f"state {self.path}: not a JSON object")
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        """Write `data` to a temp file, fsync it, rename it over the file, fsync the dir."""
        raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        replace_file(self.path, raw, self.tmp)

    def close(self) -> None:
        """Nothing is held open between writes."""


@dataclass(frozen=True)
class IdentityRecord:
    """Who this gateway is: device id, public key (base64) and when the key was made."""

    device_id: str
    public_key: str
    created_ms: int


@dataclass(frozen=True)
class ClockFlag:
    """One clock anomaly the agent saw."""

    kind: str
    detail: str
    wall_ms: int


@dataclass(frozen=True)
class CheckpointCursor:
    """The last checkpoint this device verified, and the highest of its blocks it covers."""

    note: str
    covered: int


class State:
    """Typed access to the agent's TinyDB file (one document per table, plus flag rows)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = TinyDB(path, storage=AtomicJSONStorage)

    # --- single documents ----------------------------------------------------------

    def _doc(self, table: str) -> dict[str, Any]:
        docs = self.db.table(table).all()
        return dict(docs[0]) if docs else {}

    def _put(self, table: str, **fields: Any) -> None:
        t = self.db.table(table)
        if t.all():
            t.update(fields)
        else:
            t.insert(fields)

    @property
    def identity(self) -> IdentityRecord | None:
        """The recorded identity, if any."""
        doc = self._doc("identity")
        if not doc:
            return None
        return IdentityRecord(doc["device_id"], doc["public_key"], doc["created_ms"])

    def set_identity(self, record: IdentityRecord) -> None:
        """Record the identity (once, on first start)."""
        self._put("identity", device_id=record.device_id, public_key=record.public_key,
                  created_ms=record.created_ms)

    @property
    def acked(self) -> int | None:
        """The highest block height the aggregator acknowledged."""
        value = self._doc("sync").get("acked")
        return value if isinstance(value, int) else None

    @acked.setter
    def acked(self, height: int | None) -> None:
        self._put("sync", acked=height)

    @property
    def checkpoint(self) -> CheckpointCursor | None:
        """The last verified checkpoint note and the highest block height it covers."""
        doc = self._doc("sync")
        if not isinstance(doc.get("checkpoint"), str) or not isinstance(doc.get("covered"), int):
            return None
        return CheckpointCursor(doc["checkpoint"], doc["covered"])

    def set_checkpoint(self, note: str, covered: int) -> None:
        """Record a checkpoint after it was verified, and what it covers."""
        self._put("sync", checkpoint=note, covered=covered)

    @property
    def covered(self) -> int | None:
        """The highest block height covered by a verified checkpoint."""
        cursor = self.checkpoint
        return cursor.covered if cursor else None

    @property
    def sync_cursor(self) -> SyncCursor:
        """The sync cursor (acked, kept checkpoint, covered, known log indexes)."""
        doc = self._doc("sync")
        acked, covered, note = doc.get("acked"), doc.get("covered"), doc.get("checkpoint")
        pairs = doc.get("log_indexes", [])
        try:
            indexes = tuple((int(h), int(i)) for h, i in pairs)
        except (TypeError, ValueError) as exc:
            raise StateError(f"state {self.path}: sync.log_indexes is not a list of "
                             f"[height, index] pairs: {exc}") from exc
        return SyncCursor(acked if isinstance(acked, int) else None,
                                note if isinstance(note, str) else None,
                                covered if isinstance(covered, int) else None, indexes)

    def set_sync_cursor(self, cursor: SyncCursor) -> None:
        """Record the whole sync cursor in one atomic write."""
        self._put("sync", acked=cursor.acked, checkpoint=cursor.checkpoint,
                  covered=cursor.covered,
                  log_indexes=[[h, i] for h, i in cursor.log_indexes])

    def setting(self, key: str, default: Any = None) -> Any:
        """A stored setting (JSON value)."""
        return self._doc("settings").get(key, default)

    def set_setting(self, key: str, value: Any) -> None:
        """Store a setting (a JSON value)."""
        self._put("settings", **{key: value})

    # --- flags and counters --------------------------------------------------------

    def flag_clock(self, kind: str, detail: str, wall_ms: int) -> None:
        """Record a clock anomaly (the newest MAX_CLOCK_FLAGS are kept) and count it."""
        table = self.db.table("clock")
        table.insert({"kind": kind, "detail": detail, "wall_ms": wall_ms})
        ids = sorted(doc.doc_id for doc in table.all())
        if len(ids) > MAX_CLOCK_FLAGS:
            table.remove(doc_ids=ids[:-MAX_CLOCK_FLAGS])
        self.bump("clock_flags")

    def flag_sync_alarm(self, reason: str, wall_ms: int) -> None:
        """Record a sync alarm (the newest MAX_SYNC_ALARMS are kept) and count it."""
        table = self.db.table("sync_alarms")
        table.insert({"reason": reason, "wall_ms": wall_ms})
        ids = sorted(doc.doc_id for doc in table.all())
        if len(ids) > MAX_SYNC_ALARMS:
            table.remove(doc_ids=ids[:-MAX_SYNC_ALARMS])
        self.bump("sync_alarms")

    def sync_alarms(self) -> list[tuple[str, int]]:
        """The recorded sync alarms as (reason, wall_ms), oldest first."""
        return [(d["reason"], d["wall_ms"])
                for d in sorted(self.db.table("sync_alarms").all(), key=lambda d: d.doc_id)]

    def clock_flags(self) -> list[ClockFlag]:
        """The recorded clock anomalies, oldest first."""
        return [ClockFlag(d["kind"], d["detail"], d["wall_ms"])
                for d in sorted(self.db.table("clock").all(), key=lambda d: d.doc_id)]

    def bump(self, counter: str, by: int = 1) -> int:
        """Add `by` to a counter; return its new value."""
        value = self.counter(counter) + by
        self._put("counters", **{counter: value})
        return value

    def counter(self, name: str) -> int:
        """A counter's value (0 if never bumped)."""
        value = self._doc("counters").get(name, 0)
        return value if isinstance(value, int) else 0

    def counters(self) -> dict[str, int]:
        """All counters."""
        return {k: v for k, v in self._doc("counters").items() if isinstance(v, int)}

    def close(self) -> None:
        """Close the database."""
        self.db.close()

