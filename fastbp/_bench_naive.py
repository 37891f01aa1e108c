"""The naive Numba port of a training step that ``fastbp bench`` compares against.

What a user who knows NumPy and Numba would write without fastbp: one
``@njit(cache=True)`` function per operation (dense forward, ReLU, softmax
cross-entropy, ReLU backward, dense backward, SGD-momentum update) in array
style, and one ``@njit`` step that calls them layer by layer.  Matrix
products are Numba's ``@`` (SciPy's BLAS); every operation allocates its
result.  Parameters are passed as tuples of arrays, so any number of layers
works (Numba compiles one step per depth and dtype).

This module imports only NumPy and Numba, so that the start-up report of
``fastbp bench --startup`` can load it in a fresh process without importing
fastbp, and it serves both that report (cold compile) and the step timed
beside fastbp's (``fastbp.bench.make_naive_numba``).
"""

import numpy as np
from numba import njit


@njit(cache=True)
def dense_forward(x, W, b):
    """``x @ W + b``: the pre-activation of one dense layer."""
    return x @ W + b


@njit(cache=True)
def relu(a):
    """``max(a, 0)`` element-wise (the result has ``a``'s dtype)."""
    return a * (a > 0)


@njit(cache=True)
def softmax_xent(z, y):
    """Mean softmax cross-entropy of logits ``z`` (n, c) and integer labels
    ``y`` (n,); returns (loss, gradient with respect to ``z``)."""
    n, c = z.shape
    p = np.empty_like(z)
    loss = 0.0
    for i in range(n):
        m = z[i, 0]
        for j in range(c):
            m = max(m, z[i, j])
        s = 0.0
        for j in range(c):
            p[i, j] = np.exp(z[i, j] - m)
            s += p[i, j]
        for j in range(c):
            p[i, j] /= s
        loss -= np.log(p[i, y[i]])
        p[i, y[i]] -= 1.0
    p /= n
    return loss / n, p


@njit(cache=True)
def relu_backward(dh, h):
    """Gradient through a ReLU given its output ``h``."""
    return dh * (h > 0)


@njit(cache=True)
def dense_backward(dz, x, W, want_dx):
    """Gradients of one dense layer: (dx, dW, db); dx is empty unless
    ``want_dx`` (the first layer's input needs none)."""
    dW = x.T @ dz
    db = dz.sum(axis=0)
    if want_dx:
        dx = dz @ W.T
    else:
        dx = np.empty((0, 0), dz.dtype)
    return dx, dW, db


@njit(cache=True)
def sgd(p, g, v, lr, mu):
    """SGD with momentum, in place: ``v = mu v + g``, ``p -= lr v``."""
    v *= mu
    v += g
    p -= lr * v


@njit(cache=True)
def step(x, y, Ws, bs, vWs, vbs, lr, mu):
    """One training step of a ReLU network with a softmax output; updates
    the parameters ``Ws``, ``bs`` and velocities ``vWs``, ``vbs`` (tuples of
    arrays, one per layer) in place and returns the loss."""
    L = len(Ws)
    hs = [x]
    for k in range(L):
        a = dense_forward(hs[k], Ws[k], bs[k])
        if k < L - 1:
            a = relu(a)
        hs.append(a)
    loss, d = softmax_xent(hs[L], y)
    for k in range(L - 1, -1, -1):
        dh, dW, db = dense_backward(d, hs[k], Ws[k], k > 0)
        sgd(Ws[k], dW, vWs[k], lr, mu)
        sgd(bs[k], db, vbs[k], lr, mu)
        if k > 0:
            d = relu_backward(dh, hs[k])
    return loss
