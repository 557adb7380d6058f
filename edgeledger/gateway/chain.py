"""A device's hash chain of micro-blocks: what the next block's height and prev are.

Pure state, no I/O: the agent's journal persists the blocks and restores a
DeviceChain from the last sealed block on start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgeledger.core.block import ZERO_HASH, Block, seal
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading


@dataclass
class DeviceChain:
    """The tip of one device's chain, and the key that extends it."""

    signer: Signer
    dev: str
    next_height: int = 0
    prev: bytes = ZERO_HASH

    @classmethod
    def after(cls, signer: Signer, last: Block | None) -> DeviceChain:
        """The chain state that follows `last` (or an empty chain)."""
        if last is None:
            return cls(signer, signer.name)
        return cls(signer, last.header.dev, last.header.h + 1, last.hash)

    def seal(self, readings: Sequence[Reading], ts: int) -> Block:
        """Sign `readings` as the next block and advance the tip."""
        block = seal(self.signer, self.dev, self.next_height, self.prev, readings, ts)
        self.next_height += 1
        self.prev = block.hash
        return block
