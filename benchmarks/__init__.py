"""Benchmarks for aime-tui: startup, restoration, wake, loop lag, durability, ingest, memory."""
