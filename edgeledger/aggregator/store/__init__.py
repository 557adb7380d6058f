"""Durable stores for the aggregator: SQLite embedded (sqlite.py)."""
