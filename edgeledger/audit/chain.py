"""Pure checks of the canonical chain of checkpoints (DESIGN.md 2.3), for the auditor.

Theory of operation. The log's verifier key is the only thing the auditor brings;
everything else comes from an API that may lie. So each checkpoint is believed only
once its signature verifies with that key, and each one must be the next link after
the last one believed: height + 1, `prev` = SHA-256 of the previous note text, time
not going back, and a tree that extends the previous tree (RFC 9162 consistency
proof). By induction the latest checkpoint then extends every earlier one, including
the one saved by the previous run, so a fork or a rewrite of history cannot hide
between two runs. No I/O here: the walker (walk.py) fetches, these functions judge.

Each fault is a VerificationError whose `check` names what failed:

- "log key": /v1/log names another key or origin than the auditor's;
- "checkpoint signature", "checkpoint format": the note does not verify, or parse;
- "checkpoint fields": the API's parsed fields disagree with its own signed note;
- "checkpoint height": the API served another height than the one asked for;
- "checkpoint chain": `prev` does not link to the previous checkpoint;
- "checkpoint time": time went back;
- "consistency": the tree does not extend the previous (or the saved) tree;
- "rollback": the log is behind the checkpoint saved by an earlier run;
- "fork": two different checkpoints at one height.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeledger.audit.responses import CheckpointFields, LogInfo
from edgeledger.core import merkle
from edgeledger.core.checkpoint import Checkpoint, check_extends, open_checkpoint
from edgeledger.core.errors import DecodeError, VerificationError
from edgeledger.core.note import Verifier


def check_log_info(info: LogInfo, key: Verifier) -> None:
    """/v1/log must name the auditor's key and origin: a mismatch means the auditor is
    talking to another log, or this log changed its key."""
    try:
        served = Verifier.parse(info.verifier_key)
    except DecodeError as exc:
        raise VerificationError("log key", f"/v1/log verifier_key is not a verifier key "
                                           f"({exc})") from exc
    if served != key:
        raise VerificationError("log key", f"/v1/log serves key {info.verifier_key.strip()!r}, "
                                           f"not the given {key.text()!r}")
    if info.origin != key.name:
        raise VerificationError("log key", f"/v1/log origin {info.origin!r} is not the key's "
                                           f"name {key.name!r}")


def open_fields(fields: CheckpointFields, key: Verifier, height: int | None) -> Checkpoint:
    """Verify a served checkpoint: signature, format, the height asked for (None: any),
    and the API's parsed fields against the signed text."""
    try:
        cp = open_checkpoint(fields.note, key)
    except DecodeError as exc:
        raise VerificationError("checkpoint format", f"checkpoint {_at(height)}: {exc}") from exc
    except VerificationError as exc:
        raise VerificationError(exc.check, f"checkpoint {_at(height)}: {exc.detail}") from exc
    if height is not None and cp.height != height:
        raise VerificationError("checkpoint height", f"asked for checkpoint {height}, the API "
                                                     f"served checkpoint {cp.height}")
    if (fields.height, fields.size, fields.root) != (cp.height, cp.size, cp.root):
        raise VerificationError("checkpoint fields", f"checkpoint {cp.height}: the API's "
                                                     "height/size/root fields are not those "
                                                     "of its signed note")
    return cp


def _at(height: int | None) -> str:
    return "(latest)" if height is None else f"at height {height}"


def needs_proof(old: Checkpoint, new: Checkpoint) -> bool:
    """Whether checking `new` after `old` needs a consistency proof from the API (an
    empty tree, or an unchanged size, is checked without one)."""
    return 0 < old.size < new.size


def check_next(old: Checkpoint, new: Checkpoint, proof: Sequence[bytes]) -> None:
    """`new` must be the checkpoint right after `old` in the chain, on an extended tree."""
    if new.height != old.height + 1:
        raise VerificationError("checkpoint height", f"checkpoint {new.height} follows "
                                                     f"checkpoint {old.height}")
    if new.prev != old.hash:
        raise VerificationError("checkpoint chain", f"checkpoint {new.height}: prev "
                                                    f"{new.prev.hex()[:16]}... is not the hash "
                                                    f"of checkpoint {old.height} "
                                                    f"({old.hash.hex()[:16]}...)")
    if new.time < old.time:
        raise VerificationError("checkpoint time", f"checkpoint {new.height}: time {new.time} "
                                                   f"is before checkpoint {old.height}'s "
                                                   f"{old.time}")
    if new.size < old.size:
        raise VerificationError("consistency", f"checkpoint {new.height}: the tree shrank "
                                               f"from size {old.size} to {new.size}")
    try:
        check_extends(old, new, proof, check="consistency")
    except VerificationError as exc:
        raise VerificationError(exc.check, f"checkpoint {old.height} (size {old.size}) -> "
                                           f"{new.height} (size {new.size}): "
                                           f"{exc.detail}") from exc


def check_not_behind(saved: Checkpoint, latest: Checkpoint) -> None:
    """The log's latest checkpoint must not be behind the one an earlier run saw."""
    if latest.height < saved.height or latest.size < saved.size:
        raise VerificationError("rollback", f"the latest checkpoint is {latest.height} (size "
                                            f"{latest.size}), behind checkpoint {saved.height} "
                                            f"(size {saved.size}) seen on an earlier run")


def check_same(known: Checkpoint, served: Checkpoint, where: str) -> None:
    """A checkpoint already believed and one served at its height must be the same."""
    if served != known:
        raise VerificationError("fork", f"checkpoint {known.height} served now (size "
                                        f"{served.size}, root {served.root.hex()[:16]}...) is "
                                        f"not the one {where} (size {known.size}, root "
                                        f"{known.root.hex()[:16]}...)")


def check_against_saved(saved: Checkpoint, latest: Checkpoint, proof: Sequence[bytes]) -> None:
    """The latest tree must extend the saved one, directly (the walk proved it link by
    link too; this one proof ties the two ends together for the record)."""
    try:
        merkle.verify_consistency(saved.size, latest.size, saved.root, latest.root, proof,
                                  check="consistency")
    except VerificationError as exc:
        raise VerificationError(exc.check, f"saved checkpoint {saved.height} (size "
                                           f"{saved.size}) -> latest {latest.height} (size "
                                           f"{latest.size}): {exc.detail}") from exc
