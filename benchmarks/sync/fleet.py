"""The simulated fleet: device keys, their chains of signed blocks, and the block timing.

Pure apart from reading the clock in `BlockTimes.now`. A device is `bench-gw-NNN`,
its key derived from its index, so the parent (which enrolls the keys) and the load
generators (which sign with them) agree without passing secrets around.

Two timings. Unpaced (throughput runs): every block is sealed at build time, its
readings 100 ms apart, and the generator sends as fast as the window allows; the
"seal time" of such a block is taken to be its publish time. Paced (latency runs):
device d of G seals block h at `t0 + h * period + d * period / G`, its ten readings
taken every period / 10 up to that moment, and the generator publishes the block at
that time, as a gateway sealing once a period would.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks import workload
from edgeledger.core.block import sync_message
from edgeledger.core.note import Signer
from edgeledger.core.reading import Reading
from edgeledger.gateway.chain import DeviceChain

READINGS = 10  # per block
UNPACED_SPACING_MS = 100  # between a block's readings when not paced
_FIELDS = workload.reading_fields(READINGS)  # (n, t, q, v, u): names, values, units


def device_id(index: int) -> str:
    """The id of simulated device `index`: bench-gw-000, bench-gw-001, ..."""
    return f"bench-gw-{index:03d}"


def device_signer(index: int) -> Signer:
    """Device `index`'s key (deterministic, named after the device as the agent's are)."""
    seed = hashlib.sha256(b"edgeledger sync benchmark device %d" % index).digest()
    return Signer(device_id(index), seed)


def device_ids(count: int) -> list[str]:
    """The ids of the first `count` devices."""
    return [device_id(i) for i in range(count)]


@dataclass(frozen=True)
class BlockTimes:
    """When device `index` of `gateways` seals block `h`, and its readings' spacing (ms)."""

    t0_ms: int
    period_ms: int  # between a device's blocks; 0: unpaced (all sealed at t0)
    gateways: int

    @classmethod
    def now(cls, gateways: int) -> BlockTimes:
        """Unpaced: every block sealed now."""
        return cls(time.time_ns() // 1_000_000, 0, gateways)

    @property
    def spacing_ms(self) -> int:
        """Milliseconds between one block's readings."""
        return self.period_ms // READINGS if self.period_ms else UNPACED_SPACING_MS

    def seal_ms(self, index: int, h: int) -> int:
        """The seal time `ts` of block `h` of device `index`."""
        if not self.period_ms:
            return self.t0_ms + h  # distinct, increasing, all "now"
        return self.t0_ms + h * self.period_ms + index * self.period_ms // self.gateways

    def reading_lags_ms(self) -> list[int]:
        """ts - t of each of a block's readings: how long each waited for its seal."""
        return [(READINGS - 1 - j) * self.spacing_ms for j in range(READINGS)]


def block_readings(h: int, ts: int, spacing_ms: int) -> list[Reading]:
    """The ten readings of block `h` sealed at `ts`: BME280 and GPS values, q per block."""
    return [Reading(n, ts - (READINGS - 1 - j) * spacing_ms, h * READINGS + j, v, u)
            for j, (n, _, _, v, u) in enumerate(_FIELDS)]


def build_chain(index: int, blocks: int, times: BlockTimes) -> list[bytes]:
    """Sync messages (DESIGN.md 2.2) of heights 0..blocks-1 of device `index`, signed."""
    chain = DeviceChain.after(device_signer(index), None)
    out = []
    for h in range(blocks):
        ts = times.seal_ms(index, h)
        readings = block_readings(h, ts, times.spacing_ms)
        out.append(sync_message(chain.seal(readings, ts), readings))
    return out


def checkpoint_size(note: str) -> int:
    """The tree size on a checkpoint note's second line (the note is already trusted)."""
    return int(note.split("\n", 2)[1])


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, nearest rank."""
    if not sorted_values:
        raise ValueError("percentile of nothing")
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]
