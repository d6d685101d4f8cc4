"""RNG states in checkpoints: the cached Gaussians of Python's and numpy's generators round-trip exactly."""

from __future__ import annotations

import random

import numpy as np

from bigtrain.callbacks.resume_state import capture_rng, restore_rng


def _scramble() -> None:
    """Move every generator away from the captured state, as a new process's start-up would."""
    np.random.seed(99)
    random.seed(99)


def test_numpy_cached_gaussian_round_trips_exactly():
    """numpy's Gaussian sampler makes two values at a time and caches the second: a resumed run must draw
    that same value, to the last bit, as its next Gaussian."""
    np.random.seed(7)
    np.random.standard_normal()  # leaves the second value cached
    state = capture_rng()
    expected = np.random.standard_normal(4)
    _scramble()
    restore_rng(state)
    assert np.array_equal(np.random.standard_normal(4), expected)


def test_a_cached_python_gaussian_of_zero_is_still_restored():
    """A cached Gaussian of exactly 0.0 is a cached value (not 'none cached'): the next gauss() returns it."""
    random.seed(7)
    version, words, _ = random.getstate()
    random.setstate((version, words, 0.0))
    state = capture_rng()
    expected = [random.gauss(0, 1) for _ in range(3)]
    assert expected[0] == 0.0
    _scramble()
    restore_rng(state)
    assert [random.gauss(0, 1) for _ in range(3)] == expected
