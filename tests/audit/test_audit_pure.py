"""The audit's pure parts: chain checks (hypothesis over random logs and mutations),
strict parsing of answers (any JSON parses or fails as a named check, never a crash),
the state file, the progress line, and base URLs."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from auditfleet import LOG_KEY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeledger.audit import chain, responses
from edgeledger.audit.client import ApiUrl
from edgeledger.audit.progress import Progress, is_live
from edgeledger.audit.state import default_path, load_state, save_state
from edgeledger.core import merkle
from edgeledger.core.checkpoint import ZERO_HASH, Checkpoint
from edgeledger.core.errors import ConfigError, VerificationError
from edgeledger.core.note import Signer


def build_chain(sizes: list[int]) -> tuple[list[Checkpoint], merkle.MemoryHashes]:
    """Checkpoints over one growing tree, at the given (non-decreasing) sizes."""
    tree = merkle.MemoryHashes()
    cps: list[Checkpoint] = []
    for size in sizes:
        while tree.size < size:
            tree.append(merkle.leaf_hash(tree.size.to_bytes(8, "big")))
        prev = cps[-1].hash if cps else ZERO_HASH
        cps.append(Checkpoint(LOG_KEY.name, size, tree.root(size), len(cps), prev,
                              1000 + len(cps)))
    return cps, tree


def proof(tree: merkle.MemoryHashes, old: Checkpoint, new: Checkpoint) -> list[bytes]:
    if not chain.needs_proof(old, new):
        return []
    return merkle.consistency_proof(old.size, new.size, tree.read_hashes)


growth = st.lists(st.integers(0, 40), min_size=2, max_size=8)


@settings(max_examples=60, deadline=None)
@given(growth)
def test_a_true_chain_passes_link_by_link(steps: list[int]) -> None:
    sizes = [sum(steps[:i + 1]) for i in range(len(steps))]
    cps, tree = build_chain(sizes)
    for old, new in itertools.pairwise(cps):
        chain.check_next(old, new, proof(tree, old, new))
    chain.check_against_saved(cps[0], cps[-1], merkle.consistency_proof(
        cps[0].size, cps[-1].size, tree.read_hashes) if cps[0].size else [])


MUTATIONS: dict[str, tuple[Callable[[Checkpoint], Checkpoint], str]] = {
    "root": (lambda c: dataclasses.replace(c, root=bytes(32)), "consistency"),
    "prev": (lambda c: dataclasses.replace(c, prev=bytes([1]) * 32), "checkpoint chain"),
    "time": (lambda c: dataclasses.replace(c, time=c.time - 5), "checkpoint time"),
    "height": (lambda c: dataclasses.replace(c, height=c.height + 1), "checkpoint height"),
    "size": (lambda c: dataclasses.replace(c, size=0), "consistency"),
}
"""One field of the next checkpoint changed (signatures are not in play here). A size
that merely differs can go unseen by one RFC 9162 proof when two tree shapes share a
path (sizes 3 and 4 from size 1), and is then caught at the next link; a shrink never."""


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), st.sampled_from(sorted(MUTATIONS)))
def test_any_one_change_to_the_next_checkpoint_is_caught(a: int, grow: int,
                                                         field: str) -> None:
    cps, tree = build_chain([a, a + grow])
    old, new = cps
    change, check = MUTATIONS[field]
    bad = change(new)
    with pytest.raises(VerificationError) as caught:
        chain.check_next(old, bad, proof(tree, old, new))
    assert caught.value.check == check


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), st.data())
def test_any_flipped_bit_in_a_proof_is_caught(a: int, grow: int, data: st.DataObject) -> None:
    cps, tree = build_chain([a, a + grow])
    old, new = cps
    path = proof(tree, old, new)
    i = data.draw(st.integers(0, len(path) - 1))
    bit = data.draw(st.integers(0, 255))
    path[i] = bytes(b ^ (1 << bit % 8) if j == bit // 8 else b for j, b in enumerate(path[i]))
    with pytest.raises(VerificationError) as caught:
        chain.check_next(old, new, path)
    assert caught.value.check == "consistency"


def test_rollback_and_fork_against_the_saved_checkpoint() -> None:
    cps, _ = build_chain([3, 5, 9])
    chain.check_not_behind(cps[1], cps[2])
    with pytest.raises(VerificationError, match="rollback: the latest checkpoint is 0"):
        chain.check_not_behind(cps[1], cps[0])
    with pytest.raises(VerificationError, match="fork: checkpoint 1 served now"):
        chain.check_same(cps[1], dataclasses.replace(cps[1], root=bytes(32)), "saved")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)


PARSERS: dict[str, Callable[[object], object]] = {
    "log": responses.log_info,
    "checkpoint": lambda o: responses.checkpoint(o, "/p"),
    "consistency": lambda o: responses.consistency(o, "/p", 1, 2),
    "device": lambda o: responses.device(o, "/p"),
    "devices": lambda o: responses.device_page(o, "/p"),
    "block": lambda o: responses.block(o, "/p"),
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(PARSERS)), json_values)
def test_any_json_parses_or_is_a_named_fault(which: str, obj: object) -> None:
    try:
        PARSERS[which](obj)
    except VerificationError as exc:
        assert exc.check in ("api response", "readings")


READING = {"device": "gw-1", "height": 0, "index": 0, "log_index": 0, "n": "s-1/t",
           "t": 5, "q": 0, "v": 1.5, "u": "Cel", "a": None}


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(READING)), json_values)
def test_any_change_to_a_reading_parses_or_is_a_named_fault(key: str, value: object) -> None:
    body = {"device": "gw-1", "height": 0, "hash": "A" * 43 + "=", "log_index": 0,
            "block": "", "header": {}, "readings": [{**READING, key: value}],
            "inclusion": None}
    try:
        responses.block(body, "/p")
    except VerificationError as exc:
        assert exc.check in ("api response", "readings")


def test_a_state_file_round_trips_and_is_written_atomically(tmp_path: Path) -> None:
    cps, _ = build_chain([2])
    note = cps[0].sign(LOG_KEY)
    path = tmp_path / "deep" / "state.json"
    assert load_state(path, LOG_KEY.verifier()) is None
    save_state(path, LOG_KEY.verifier(), note, cps[0], 123)
    assert load_state(path, LOG_KEY.verifier()) == cps[0]
    assert os.listdir(path.parent) == ["state.json"]
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    forged = cps[0].sign(Signer(LOG_KEY.name, b"f" * 32))
    path.write_text(path.read_text().replace(json.dumps(note), json.dumps(forged)))
    with pytest.raises(ConfigError, match="checkpoint: checkpoint signature: no signature"):
        load_state(path, LOG_KEY.verifier())


def test_a_failed_state_write_leaves_the_old_file(tmp_path: Path) -> None:
    cps, _ = build_chain([2, 4])
    path = tmp_path / "state.json"
    save_state(path, LOG_KEY.verifier(), cps[0].sign(LOG_KEY), cps[0], 1)
    before = path.read_bytes()
    (tmp_path / f".state.json.tmp-{os.getpid()}").mkdir()  # the temp file cannot be made
    with pytest.raises(ConfigError, match="cannot write the audit state"):
        save_state(path, LOG_KEY.verifier(), cps[1].sign(LOG_KEY), cps[1], 2)
    assert path.read_bytes() == before


def test_the_default_state_path_is_per_origin() -> None:
    assert default_path("edgeledger.example/agg 1", {"XDG_STATE_HOME": "/s"}) == \
        Path("/s/edgeledger/audit-edgeledger.example_agg_1.json")
    assert default_path("o", {"HOME": "/h"}).name == "audit-o.json"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_redraws_one_line_on_a_terminal() -> None:
    out, clock = io.StringIO(), FakeClock()
    p = Progress(out, live=True, clock=clock)
    p.start("checkpoints 0..100", 100)
    for _ in range(50):
        clock.now += 0.01
        p.advance()
    p.finish()
    text = out.getvalue()
    assert text.count("\r\x1b[K") >= 4 and "\n" not in text
    assert "\r\x1b[Kaudit: checkpoints 0..100: 41/100 (41%) 100/s, 0m01s left" in text
    assert text.endswith("\r\x1b[K")


def test_progress_prints_plain_lines_elsewhere_and_nothing_for_short_runs() -> None:
    out, clock = io.StringIO(), FakeClock()
    p = Progress(out, live=False, clock=clock)
    p.start("device gw-1 blocks", 10)
    for _ in range(9):
        clock.now += 0.5
        p.advance()
    p.finish()
    assert out.getvalue() == ""
    p.start("device gw-1 blocks", 100)
    for _ in range(30):
        clock.now += 1
        p.advance()
    p.finish()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in out.getvalue()
    assert lines[0] == "audit: device gw-1 blocks: 10/100 (10%) 1/s, 1m30s left"


def test_a_phase_inside_a_phase_resumes_the_outer_one() -> None:
    out, clock = io.StringIO(), FakeClock()
    p = Progress(out, live=False, clock=clock)
    p.start("device gw-1 blocks", 100)
    p.advance(40)
    p.start("checkpoints 3..5", 2)
    p.advance(2)
    p.finish()
    clock.now = 20
    p.advance()
    p.finish()
    assert out.getvalue() == "audit: device gw-1 blocks: 41/100 (41%) 2/s, 0m29s left\n"


def test_progress_is_live_only_on_a_terminal_outside_ci() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert is_live(Tty(), {})
    assert not is_live(Tty(), {"CI": "true"})
    assert not is_live(io.StringIO(), {})


@pytest.mark.parametrize(("text", "parsed"), [
    ("http://127.0.0.1:8080", ApiUrl("http", "127.0.0.1", 8080, "")),
    ("https://log.example/api/", ApiUrl("https", "log.example", 443, "/api")),
    ("http://[::1]:9", ApiUrl("http", "::1", 9, "")),
])
def test_api_urls(text: str, parsed: ApiUrl) -> None:
    assert ApiUrl.parse(text) == parsed
    assert ApiUrl.parse(text).url("/v1/log").endswith("/v1/log")


@pytest.mark.parametrize("text", ["127.0.0.1:8080", "ftp://h", "http://h/?x=1",
                                  "http://u@h", "http://h:0x"])
def test_bad_api_urls(text: str) -> None:
    with pytest.raises(ValueError, match="--api"):
        ApiUrl.parse(text)
