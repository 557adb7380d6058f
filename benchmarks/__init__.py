"""Benchmarks of EdgeLedger; see benchmarks/README.md."""
