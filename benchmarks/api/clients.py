"""HTTP clients of /v1/proof: the latency loop, and the child processes that load the server.

    python -m benchmarks.api.clients      (driven by benchmarks.api over stdin/stdout)

Theory of operation. A client is the standard library's http.client on one keep-alive
connection (HTTP/1.1, as uvicorn serves it), asking for the proof of a random
reading: a device, a height and an index drawn uniformly (seeded) from what the store
holds. Every answer must be 200; anything else is counted as an error. The latency
loop runs in the benchmark's own process, one request at a time, and times each with
perf_counter. For throughput, each child process runs one such client flat out from
a common wall-clock start to a common end (so all of them overlap exactly, and the
server's CPU can be read from /proc over the same window), then reports how many
requests completed, their latencies and its own CPU time.
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from benchmarks.sync.analysis import summary
from benchmarks.sync.fleet import device_id


def proof_cases(seed: int, devices: int, heights: int,
                readings: int) -> Iterator[tuple[str, int, int]]:
    """Endless uniformly random (device id, height, reading index), seeded."""
    rng = random.Random(seed)
    while True:
        yield device_id(rng.randrange(devices)), rng.randrange(heights), rng.randrange(readings)


def proof_paths(seed: int, devices: int, heights: int, readings: int) -> Iterator[str]:
    """Endless /v1/proof paths of `proof_cases`."""
    for dev, h, i in proof_cases(seed, devices, heights, readings):
        yield f"/v1/proof?device={dev}&height={h}&index={i}"


class Client:
    """One keep-alive HTTP/1.1 connection to the API at `url`."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                               timeout=timeout)

    def get(self, path: str) -> tuple[int, bytes]:
        """GET `path`: (status, body)."""
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def timed_gets(client: Client, paths: Sequence[str]) -> tuple[list[float], int]:
    """Seconds each GET of `paths` took, one after the other; and how many were not 200."""
    took, errors, clock = [], 0, time.perf_counter
    for path in paths:
        start = clock()
        status, _ = client.get(path)
        took.append(clock() - start)
        errors += status != 200
    return took, errors


def hammer(cmd: dict[str, Any]) -> dict[str, Any]:
    """One child's run: GETs from `start_at` to `end_at` (Unix s), back to back."""
    client = Client(cmd["url"])
    paths = proof_paths(cmd["seed"], cmd["devices"], cmd["heights"], cmd["readings"])
    warm, _ = timed_gets(client, [next(paths) for _ in range(20)])  # connect, warm up
    took: list[float] = []
    errors = 0
    delay = cmd["start_at"] - time.time()
    if delay > 0:
        time.sleep(delay)
    cpu0, end, clock = time.process_time(), cmd["end_at"], time.perf_counter
    while time.time() < end:
        start = clock()
        status, _ = client.get(next(paths))
        took.append(clock() - start)
        errors += status != 200
    cpu = time.process_time() - cpu0
    client.close()
    return {"requests": len(took), "errors": errors, "cpu_s": cpu, "latency": summary(took),
            "warmup_requests": len(warm)}


def main() -> int:
    """Serve the parent's commands: one JSON line in (`run` or `quit`), one out."""
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            return 0
        if cmd["cmd"] != "run":
            raise SystemExit(f"clients: unexpected command {cmd!r}")
        sys.stdout.write(json.dumps(hammer(cmd)) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
