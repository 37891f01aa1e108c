"""Fused in-place optimizer updates over the flat parameter buffer.

All parameters of a network live in one 1-D buffer and their gradients in a
second of the same layout, so one loop updates the whole network.
Hyper-parameters arrive as float64 scalars and are cast once to the
parameter dtype, so float32 training never computes in float64.
"""

import numpy as np
from numba import njit

from .config import JIT

SGD = 0
ADAM = 1


@njit(**JIT)
def _max_masked(bits, mask):
    worst = bits.dtype.type(0)
    for i in range(bits.size):
        worst = max(worst, bits[i] & mask)
    return worst


@njit(**JIT)
def all_finite(x):
    """True if every element of the 1-D float array x is finite."""
    # Integer test on the exponent bits (all ones for inf and NaN): integer
    # max is associative, so the loop vectorises without any fastmath flag,
    # and no flag can fold it away (a float ``x - x`` sum was folded to 0
    # under ``reassoc``: test_all_finite_detects).
    if x.itemsize == 4:
        mask = np.uint32(0x7F800000)
        return _max_masked(x.view(np.uint32), mask) != mask
    mask64 = np.uint64(0x7FF0000000000000)
    return _max_masked(x.view(np.uint64), mask64) != mask64


@njit(**JIT)
def sgd_update(p, g, v, lr, momentum, dampening, weight_decay, nesterov, first):
    """SGD with optional momentum, Nesterov momentum and L2 weight decay.

    With d = g + weight_decay * p:  v = momentum * v + (1 - dampening) * d,
    except on the ``first`` step, where v = d;
    p -= lr * (d + momentum * v) if nesterov else lr * v  (PyTorch's rule;
    with momentum 0 it is p -= lr * d).  p, g, v: 1-D, one dtype.
    """
    t = p.dtype.type
    lr_ = t(lr)
    mu = t(momentum)
    # PyTorch starts the momentum buffer at the first gradient, undamped
    # (test_optim.py::test_matches_torch with dampening > 0).
    keep = mu  # weight of the old buffer
    damp = t(1.0 - dampening)
    if first:
        keep = t(0.0)
        damp = t(1.0)
    wd = t(weight_decay)
    if momentum == 0.0:
        for i in range(p.size):
            p[i] -= lr_ * (g[i] + wd * p[i])
    elif nesterov:
        for i in range(p.size):
            d = g[i] + wd * p[i]
            vi = keep * v[i] + damp * d
            v[i] = vi
            p[i] -= lr_ * (d + mu * vi)
    else:
        for i in range(p.size):
            d = g[i] + wd * p[i]
            vi = keep * v[i] + damp * d
            v[i] = vi
            p[i] -= lr_ * vi


@njit(**JIT)
def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """Adam (Kingma & Ba) with bias correction; ``step`` counts from 1.

    m = b1 m + (1 - b1) d;  v = b2 v + (1 - b2) d^2 with d = g + wd * p;
    p -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps).
    """
    t = p.dtype.type
    b1 = t(beta1)
    b2 = t(beta2)
    c1 = t(1.0 - beta1)
    c2 = t(1.0 - beta2)
    wd = t(weight_decay)
    step_size = t(lr / (1.0 - beta1**step))
    inv_bc2 = t(1.0 / (1.0 - beta2**step))
    eps_ = t(eps)
    for i in range(p.size):
        d = g[i] + wd * p[i]
        mi = b1 * m[i] + c1 * d
        vi = b2 * v[i] + c2 * d * d
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * mi / (np.sqrt(vi * inv_bc2) + eps_)


@njit(**JIT)
def apply_update(kind, p, g, s1, s2, hp, step):
    """Dispatch on optimizer kind.  hp (float64): SGD [lr, momentum,
    dampening, weight_decay, nesterov]; Adam [lr, beta1, beta2, eps,
    weight_decay].  ``step`` is the 1-based update count (Adam)."""
    if kind == ADAM:
        adam_update(p, g, s1, s2, step, hp[0], hp[1], hp[2], hp[3], hp[4])
    else:
        sgd_update(p, g, s1, hp[0], hp[1], hp[2], hp[3], hp[4] != 0.0, step == 1)
