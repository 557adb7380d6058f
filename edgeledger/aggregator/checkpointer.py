"""The checkpointer: when to sign the next checkpoint of the canonical log.

Theory of operation. A checkpoint is signed when the log has grown since the last
one and either `interval_ms` has passed since the last checkpoint's `time`, or the
log grew by at least `batch_size` entries. With no checkpoint at all, the first one
is signed at once, even over an empty log, so that devices always have a signed
tree to start from. The signing itself is CanonicalLog.sign_checkpoint, which
never signs a smaller tree nor a second checkpoint for one size, and which
continues the `prev` chain from the last checkpoint in the store: a restart picks
up where the chain left off, and the interval counts from the last checkpoint's
time, not from the restart. Pure: times are passed in.
"""

from __future__ import annotations

from edgeledger.aggregator.log import CanonicalLog
from edgeledger.core.errors import EdgeLedgerError


class Checkpointer:
    """Decides when to sign; signs through `log.sign_checkpoint`."""

    def __init__(self, log: CanonicalLog, interval_ms: int = 5_000,
                 batch_size: int = 1_000) -> None:
        if interval_ms <= 0 or batch_size <= 0:
            raise EdgeLedgerError(f"checkpointer: interval_ms ({interval_ms}) and batch_size "
                                  f"({batch_size}) must be positive")
        self.log = log
        self.interval_ms = interval_ms
        self.batch_size = batch_size

    @property
    def note(self) -> str | None:
        """The latest signed checkpoint note, if any."""
        return self.log.checkpoint_note

    def due(self, now_ms: int) -> bool:
        """Whether `maybe_sign(now_ms)` would sign a new checkpoint."""
        last = self.log.checkpoint
        if last is None:
            return True
        grown = self.log.size - last.size
        return grown > 0 and (grown >= self.batch_size or now_ms - last.time >= self.interval_ms)

    def maybe_sign(self, now_ms: int) -> str | None:
        """Sign a checkpoint if one is due; return the new note, or None."""
        return self.sign(now_ms) if self.due(now_ms) else None

    def sign(self, now_ms: int) -> str | None:
        """Sign now if the log grew (or has no checkpoint), as at shutdown; the new note or None."""
        before = self.log.checkpoint_note
        note = self.log.sign_checkpoint(now_ms)
        return None if note == before else note
