"""The audit's I/O: fetch from the API what the pure checks (chain.py, blocks.py) judge.

Theory of operation. `ChainWalker` holds the tip of the chain of checkpoints it has
verified. `begin` starts from the checkpoint saved by an earlier run (or from
checkpoint 0) and walks, one height at a time, to the log's latest checkpoint, so a
run costs O(checkpoints signed since the last run): one GET per checkpoint and one
per consistency proof (none when the size did not change). During the device phase
the API proves each block against whatever checkpoint is latest when it answers,
which may be newer than the tip: `anchor` then walks the chain on to it first, so
every inclusion proof is checked against a checkpoint that is on the verified chain.
"""

from __future__ import annotations

from edgeledger.audit import chain, responses
from edgeledger.audit.blocks import DeviceAudit, check_device
from edgeledger.audit.client import ApiClient, NotFound
from edgeledger.audit.progress import Progress
from edgeledger.audit.responses import CheckpointFields, Inclusion
from edgeledger.core.checkpoint import Checkpoint
from edgeledger.core.errors import VerificationError
from edgeledger.core.note import Verifier

DEVICE_PAGE = 1000


class ChainWalker:
    """The verified chain of checkpoints, extended from the API on demand."""

    def __init__(self, client: ApiClient, key: Verifier, progress: Progress) -> None:
        self.client = client
        self.key = key
        self.progress = progress
        self.start: Checkpoint | None = None
        self.tip: Checkpoint | None = None
        self.tip_note = ""

    @property
    def covered(self) -> int:
        """How many log entries the verified tip covers."""
        return 0 if self.tip is None else self.tip.size

    def begin(self, saved: Checkpoint | None) -> None:
        """Check /v1/log, then walk from `saved` (or checkpoint 0) to the latest."""
        chain.check_log_info(responses.log_info(self.client.get("/v1/log")), self.key)
        try:
            fields = responses.checkpoint(self.client.get("/v1/checkpoint"), "/v1/checkpoint")
        except NotFound:
            if saved is not None:
                raise VerificationError("rollback", f"the API has no checkpoint, but "
                                                    f"checkpoint {saved.height} (size "
                                                    f"{saved.size}) was seen on an earlier "
                                                    "run") from None
            return
        latest = chain.open_fields(fields, self.key, None)
        if saved is not None:
            chain.check_not_behind(saved, latest)
        first_height = 0 if saved is None else saved.height
        if first_height == latest.height:
            self.tip, self.tip_note = latest, fields.note
        else:
            self._start_at(first_height)
        assert self.tip is not None
        if saved is not None:
            chain.check_same(saved, self.tip, "saved by an earlier run")
        self.start = self.tip
        self.walk_to(latest, fields.note)
        if saved is not None and saved.size < latest.size:
            chain.check_against_saved(saved, latest, self._proof(saved.size, latest.size))

    def walk_to(self, target: Checkpoint, note: str) -> None:
        """Verify every checkpoint after the tip up to `target` (already opened), in order."""
        tip = self.tip
        assert tip is not None
        if target.height <= tip.height:
            if target.height == tip.height:
                chain.check_same(tip, target, "verified as the latest")
            return
        self.progress.start(f"checkpoints {tip.height}..{target.height}",
                            target.height - tip.height)
        for height in range(tip.height + 1, target.height):
            fields = self._fetch(height)
            self._link(chain.open_fields(fields, self.key, height), fields.note)
        self._link(target, note)
        self.progress.finish()

    def anchor(self, inc: Inclusion) -> Checkpoint:
        """The verified checkpoint an inclusion proof is against (walking on to it)."""
        cp = self.tip
        if cp is None or inc.checkpoint != self.tip_note:
            cp = chain.open_fields(CheckpointFields(inc.checkpoint, inc.height, inc.size,
                                                    inc.root), self.key, None)
            self._reach(cp, inc.checkpoint)
        if (inc.height, inc.size, inc.root) != (cp.height, cp.size, cp.root):
            raise VerificationError("checkpoint fields", f"checkpoint {cp.height}: the "
                                                         "inclusion's height/size/root fields "
                                                         "are not those of its signed note")
        return cp

    def _reach(self, cp: Checkpoint, note: str) -> None:
        """Put `cp` (signed, not yet on the chain) on the verified chain, or fail."""
        tip = self.tip
        if tip is None:  # the log's first checkpoint was signed during this run
            self._start_at(0)
            self.start = self.tip
            self.walk_to(cp, note)
        elif cp.height >= tip.height:
            self.walk_to(cp, note)
        else:
            raise VerificationError("log inclusion", f"the inclusion proof is against "
                                                     f"checkpoint {cp.height}, older than the "
                                                     f"verified checkpoint {tip.height}")

    def _start_at(self, height: int) -> None:
        """Make the checkpoint served at `height` the tip to walk from."""
        fields = self._fetch(height)
        self.tip, self.tip_note = chain.open_fields(fields, self.key, height), fields.note

    def _link(self, new: Checkpoint, note: str) -> None:
        old = self.tip
        assert old is not None
        proof = self._proof(old.size, new.size) if chain.needs_proof(old, new) else ()
        chain.check_next(old, new, proof)
        self.tip, self.tip_note = new, note
        self.progress.advance()

    def _fetch(self, height: int) -> CheckpointFields:
        path = f"/v1/checkpoints/{height}"
        try:
            return responses.checkpoint(self.client.get(path), path)
        except NotFound as exc:
            raise VerificationError("checkpoint height", f"the API has no checkpoint at "
                                                         f"height {height} ({exc.reason}), "
                                                         "below its latest") from exc

    def _proof(self, old: int, new: int) -> tuple[bytes, ...]:
        path = "/v1/consistency"
        try:
            body = self.client.get(path, {"from": old, "to": new})
        except NotFound as exc:
            raise VerificationError("consistency", f"the API has no consistency proof from "
                                                   f"size {old} to {new} "
                                                   f"({exc.reason})") from exc
        return responses.consistency(body, f"{path}?from={old}&to={new}", old, new)


def list_devices(client: ApiClient) -> list[str]:
    """Every device id the API lists, page by page."""
    ids: list[str] = []
    after = ""
    while True:
        page, nxt = responses.device_page(
            client.get("/v1/devices", {"after": after, "limit": DEVICE_PAGE}), "/v1/devices")
        ids.extend(page)
        if nxt is None or not page:
            return ids
        if nxt <= after:
            raise VerificationError("api response", f"/v1/devices: the page after {after!r} "
                                                    f"says the next starts after {nxt!r}")
        after = nxt


def audit_device(client: ApiClient, walker: ChainWalker, dev: str,
                 progress: Progress) -> DeviceAudit:
    """Re-verify every block of `dev`, from height 0 to the tip its record names."""
    path = f"/v1/devices/{dev}"
    try:
        info = responses.device(client.get(path), path)
    except NotFound as exc:
        raise VerificationError("device", f"the API has no device {dev} "
                                          f"({exc.reason})") from exc
    check_device(info, dev)
    audit = DeviceAudit(info)
    progress.start(f"device {dev} blocks", info.next_height)
    for h in range(info.next_height):
        path = f"/v1/devices/{dev}/blocks/{h}"
        try:
            ans = responses.block(client.get(path), path)
        except NotFound as exc:
            raise VerificationError("device blocks", f"the API has no block {dev}/{h} "
                                                     f"({exc.reason}), yet the device's next "
                                                     f"height is {info.next_height}") from exc
        anchor = None if ans.inclusion is None else walker.anchor(ans.inclusion)
        audit.check(ans, anchor, walker.covered)
        progress.advance()
    progress.finish()
    audit.check_tip()
    return audit
