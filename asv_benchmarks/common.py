"""Shared pieces of the asv suite: a Benchmark base class and data makers."""

import numpy as np


class Benchmark:
    """Base of every benchmark: timing settings shared by the suite.

    Subclasses build their data in ``setup`` (or ``setup_cache`` when it is
    costly) and call the timed function once there, so that Numba compile
    time never lands in a timing.
    """

    timeout = 300
    processes = 1
    repeat = (3, 20, 10.0)
    sample_time = 0.02
    warmup_time = 0.05


def make_data(n, d_in, n_out, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d_in)).astype(dtype)
    y = rng.integers(0, n_out, n).astype(np.int64)
    return X, y


def make_layer(d_in, d_out, dtype, seed=1):
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((d_in, d_out)) * np.sqrt(2.0 / d_in)).astype(dtype)
    b = np.zeros(d_out, dtype)
    return W, b
