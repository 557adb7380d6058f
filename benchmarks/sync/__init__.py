"""The sync benchmark (issue 6): the real aggregator ingesting through a real Mosquitto.

`python -m benchmarks.sync` runs `bench.main`; see benchmarks/sync/bench.py.
"""
