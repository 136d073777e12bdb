"""Clocks handed to the code under test."""

from __future__ import annotations

import time


def fast_clock(scale: float):
    """A wall clock running `scale` times faster than real time, like the fake's tracks."""
    wall, origin = time.time(), time.monotonic()
    return lambda: wall + (time.monotonic() - origin) * scale
