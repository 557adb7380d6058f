"""The API benchmark (issue 7): /v1/proof latency and proofs/s through the real aggregator
process, and ingest on PostgreSQL (1 and 2 processes) against SQLite.

`python -m benchmarks.api` runs `bench.main`; see benchmarks/api/bench.py and README.md.
"""
