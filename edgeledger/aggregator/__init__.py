"""The aggregator: ingest, canonical log, checkpoints."""
