"""Seal policy and clock checks: pure, table-driven."""

from __future__ import annotations

import pytest

from edgeledger.config import SealingConfig
from edgeledger.gateway.sealer import AGE, FULL, HEARTBEAT, ClockEvent, Sealer

CFG = SealingConfig(max_readings=3, max_age_ms=1000, heartbeat_ms=5000, clock_jump_ms=200)

# (readings added as (mono time, count), time asked, expected reason, expected next_due)
POLICY = [
    ([], 4999, None, 5000),
    ([], 5000, HEARTBEAT, 5000),
    ([(100, 1)], 1099, None, 1100),
    ([(100, 1)], 1100, AGE, 1100),
    ([(100, 1), (900, 1)], 1100, AGE, 1100),     # age counts from the first reading
    ([(100, 2)], 200, None, 1100),
    ([(100, 2), (150, 1)], 150, FULL, 100),
    ([(100, 5)], 100, FULL, 100),
    ([(100, 1)], 4000, AGE, 1100),               # an open block never waits for the heartbeat
]


@pytest.mark.parametrize(("adds", "now", "reason", "next_due"), POLICY)
def test_seal_policy(adds: list[tuple[int, int]], now: int, reason: str | None,
                     next_due: int) -> None:
    sealer = Sealer.start(CFG, 0, None, 0)
    for at, n in adds:
        sealer.added(n, at)
    assert sealer.due(now) == reason
    assert sealer.next_due() == next_due


def test_sealing_resets_the_block_and_restarts_the_heartbeat() -> None:
    sealer = Sealer.start(CFG, 0, None, 0)
    sealer.added(3, 10)
    assert sealer.due(10) == FULL
    assert sealer.sealed(1_000, 20) is None
    assert sealer.count == 0 and sealer.due(20) is None
    assert sealer.next_due() == 5020
    assert sealer.due(5020) == HEARTBEAT


def test_a_recovered_open_block_counts_as_opened_at_start() -> None:
    sealer = Sealer.start(CFG, 7000, 123, 2)
    assert sealer.count == 2 and sealer.next_due() == 8000
    assert sealer.due(7999) is None and sealer.due(8000) == AGE


# (last seal ts, new seal ts, expected event)
SEAL_TIMES = [
    (None, 5, None),
    (1000, 1000, None),
    (1000, 1001, None),
    (1000, 999, ClockEvent("backwards", 999, 1)),
    (1_700_000_000_000, 1_600_000_000_000, ClockEvent("backwards", 1_600_000_000_000,
                                                      100_000_000_000)),
]


@pytest.mark.parametrize(("last", "ts", "event"), SEAL_TIMES)
def test_a_seal_before_the_last_seal_is_flagged(last: int | None, ts: int,
                                                event: ClockEvent | None) -> None:
    sealer = Sealer.start(CFG, 0, last, 0)
    assert sealer.check_seal_time(ts) == event
    assert sealer.sealed(ts, 1) == event
    assert sealer.last_seal_ts == ts  # the next check is against this seal
    assert sealer.sealed(ts, 2) is None


# successive (wall, mono) observations and the drift each one should flag (None: none)
CLOCK = [
    ([(10_000, 0), (11_000, 1000)], [None, None]),
    ([(10_000, 0), (11_200, 1000)], [None, None]),            # exactly the limit
    ([(10_000, 0), (11_201, 1000)], [None, 201]),
    ([(10_000, 0), (10_799, 1000)], [None, -201]),
    ([(10_000, 0), (3_610_000, 1000), (3_611_000, 2000)], [None, 3_599_000, None]),  # rebased
    ([(10_000, 0), (5_000, 1000)], [None, -6000]),            # stepped back
    # slow slew, 150 ms per check, never adds up to a flag
    ([(10_000 + i * 1150, i * 1000) for i in range(10)], [None] * 10),
]


@pytest.mark.parametrize(("observations", "drifts"), CLOCK)
def test_wall_clock_jumps_against_the_monotonic_clock(observations: list[tuple[int, int]],
                                                      drifts: list[int | None]) -> None:
    sealer = Sealer.start(CFG, 0, None, 0)
    seen = []
    for wall, mono in observations:
        event = sealer.check_clock(wall, mono)
        assert event is None or (event.kind == "jump" and event.wall_ms == wall)
        seen.append(event.delta_ms if event else None)
    assert seen == drifts


def test_events_describe_themselves() -> None:
    assert "before the previous seal" in ClockEvent("backwards", 5, 3).describe()
    assert "jumped 300 ms forward" in ClockEvent("jump", 5, 300).describe()
    assert "jumped 300 ms backward" in ClockEvent("jump", 5, -300).describe()
