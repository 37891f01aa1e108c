"""Compile (or load from the on-disk cache) every kernel ahead of use."""

import numpy as np


def prepare(dtypes=("float32", "float64")):
    """Compile the kernels for the given dtypes now, so that no later call
    pays for compilation.  With a warm on-disk cache this only loads them.
    """
    from .datasets import load_digits  # noqa: F401
    from .layers import (
        dense_backward,
        dense_forward,
        sigmoid_cross_entropy,
        softmax_cross_entropy,
    )
    from .network import MLP

    rng = np.random.default_rng(0)
    for dt in dtypes:
        x = rng.standard_normal((4, 3)).astype(dt)
        W = rng.standard_normal((3, 2)).astype(dt)
        b = np.zeros(2, dt)
        h = dense_forward(x, W, b, "relu")
        dense_backward(h, x, W, h, "relu")
        softmax_cross_entropy(h, np.array([0, 1, 0, 1]))
        sigmoid_cross_entropy(h, np.array([[0, 1], [1, 0], [0, 0], [1, 1]]))
        m = MLP([3, 4, 2], dtype=dt, seed=0)
        m.fit(x, np.array([0, 1, 0, 1]), epochs=1, batch_size=2, optimizer="sgd")
        m.fit(x, np.array([0, 1, 0, 1]), epochs=1, batch_size=2, optimizer="adam")
        m.evaluate(x, np.array([0, 1, 0, 1]))
