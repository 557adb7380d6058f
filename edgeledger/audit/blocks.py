"""Pure checks of one device's blocks as the API serves them (DESIGN.md 2.2, 2.3).

Theory of operation. A device's blocks are checked in height order from 0, as the
aggregator's ingest checked them, but against what the API serves now and with the
log's own proofs: the COSE signature with the device's enrolled key (and its kid),
the header's device and height, the prev link to the block before, the Merkle root
over the readings the API returns (and their sanity, core.block.verify_readings),
the order of the blocks in the log, and the block's inclusion at its log index in
a checkpoint the auditor has verified (chain.py). The caller fetches and resolves
the checkpoint of each inclusion proof; everything here is a function of values.

Key history: each block is checked with the key the device's history (from
/v1/devices/{id}) gives for its height, so blocks signed before a key rotation are
checked with the key of their time. A block whose kid is not that key's is the
fault "kid", naming both.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeledger.audit.responses import API_RESPONSE, BlockAnswer, DeviceInfo
from edgeledger.core import b64, merkle
from edgeledger.core.block import ZERO_HASH, Block, key_id, verify_readings
from edgeledger.core.checkpoint import Checkpoint
from edgeledger.core.errors import DecodeError, VerificationError


def check_device(info: DeviceInfo, dev: str) -> None:
    """The device record must be the one asked for, with a kid that matches its key."""
    if info.id != dev:
        raise VerificationError(API_RESPONSE, f"/v1/devices/{dev}: answers for device "
                                              f"{info.id!r}")
    if info.kid != key_id(info.public_key).hex():
        raise VerificationError("device key", f"device {dev}: kid {info.kid} is not the kid "
                                              f"of its key {key_id(info.public_key).hex()}")


@dataclass
class DeviceAudit:
    """How far a device's chain is verified: the next height, the hash it must link to,
    and how many of its blocks are proven in a checkpoint (the rest are pending)."""

    info: DeviceInfo
    next_height: int = 0
    prev_hash: bytes = ZERO_HASH
    last_log_index: int = -1
    included: int = 0
    pending: int = 0

    @property
    def dev(self) -> str:
        """The device id."""
        return self.info.id

    def check(self, ans: BlockAnswer, anchor: Checkpoint | None, covered: int) -> Block:
        """Check the next block. `anchor` is the verified checkpoint its inclusion proof is
        against (None: the API gave none); `covered` is the size the verified chain
        covers, below which a block without a proof is a fault."""
        h, where = self.next_height, f"block {self.dev}/{self.next_height}"
        if (ans.device, ans.height) != (self.dev, h):
            raise VerificationError(API_RESPONSE, f"{ans.path}: answers for block "
                                                  f"{ans.device}/{ans.height}")
        try:
            block = Block.parse(ans.cose, where)
        except DecodeError as exc:
            raise VerificationError("block format", str(exc)) from exc
        self._check_signed(block, where)
        self._check_fields(block, ans, where)
        raws = [r.raw for r in ans.readings]
        if block.header.cnt and not raws:
            raise VerificationError("readings", f"{where} has {block.header.cnt} readings and "
                                                "the API serves none of them")
        for i, r in enumerate(ans.readings):
            if (r.device, r.height, r.index, r.log_index) != (self.dev, h, i, ans.log_index):
                raise VerificationError("readings", f"{where}: reading {i} is served as reading "
                                                    f"{r.index} of {r.device}/{r.height} at "
                                                    f"log index {r.log_index}")
        verify_readings(block, raws)
        self._check_included(block, ans, anchor, covered, where)
        self.next_height, self.prev_hash, self.last_log_index = h + 1, block.hash, ans.log_index
        return block

    def _check_signed(self, block: Block, where: str) -> None:
        key = self.info.key_at(self.next_height)
        if block.kid != key_id(key):
            raise VerificationError("kid", f"{where} is signed by key {block.kid.hex()}, not "
                                           f"{key_id(key).hex()}, the device's key for that "
                                           "height in its key history")
        block.verify(key)
        hdr = block.header
        if hdr.dev != self.dev:
            raise VerificationError("device", f"{where}: the signed header names device "
                                              f"{hdr.dev!r}")
        if hdr.h != self.next_height:
            raise VerificationError("block height", f"{where}: the signed header says height "
                                                    f"{hdr.h}")
        if hdr.prev != self.prev_hash:
            raise VerificationError("block chain", f"{where}: prev {hdr.prev.hex()[:16]}... is "
                                                   f"not the hash of block "
                                                   f"{self.next_height - 1} "
                                                   f"({self.prev_hash.hex()[:16]}...)")

    def _check_fields(self, block: Block, ans: BlockAnswer, where: str) -> None:
        """The API's convenience fields must agree with the signed block: a client that
        reads them is told the truth."""
        served = dict(ans.header)
        expect = {**block.header.as_map(), "prev": b64.encode(block.header.prev),
                  "root": b64.encode(block.header.root)}
        if ans.hash != block.hash or served != expect:
            raise VerificationError("block fields", f"{where}: the API's hash or header fields "
                                                    "are not those of the signed block")
        if ans.log_index <= self.last_log_index:
            raise VerificationError("log order", f"{where} is log entry {ans.log_index}, not "
                                                 f"after block {self.next_height - 1}'s entry "
                                                 f"{self.last_log_index}")

    def _check_included(self, block: Block, ans: BlockAnswer, anchor: Checkpoint | None,
                        covered: int, where: str) -> None:
        if ans.inclusion is None or anchor is None:
            if ans.log_index < covered:
                raise VerificationError("log inclusion", f"{where} is log entry {ans.log_index} "
                                                         "and the API gives no inclusion proof, "
                                                         f"yet a checkpoint covers {covered} "
                                                         "entries")
            self.pending += 1
            return
        try:
            merkle.verify_inclusion(merkle.leaf_hash(block.cose), ans.log_index, anchor.size,
                                    ans.inclusion.log_path, anchor.root, check="log inclusion")
        except VerificationError as exc:
            raise VerificationError(exc.check, f"{where} at log index {ans.log_index}, "
                                               f"checkpoint {anchor.height}: "
                                               f"{exc.detail}") from exc
        self.included += 1

    def check_tip(self) -> None:
        """After the last block: the device record's tip must be where the chain ended."""
        info, dev = self.info, self.dev
        if self.next_height != info.next_height:
            raise VerificationError("device tip", f"device {dev}: record says next height "
                                                  f"{info.next_height}, its blocks end at "
                                                  f"{self.next_height}")
        if self.prev_hash != info.tip_hash:
            raise VerificationError("device tip", f"device {dev}: record's tip hash "
                                                  f"{info.tip_hash.hex()} is not the hash of "
                                                  f"block {self.next_height - 1}, "
                                                  f"{self.prev_hash.hex()}")
