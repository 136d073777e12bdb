"""Loopback fakes speaking the real protocols, for the demo and the tests."""
