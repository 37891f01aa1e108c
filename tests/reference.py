"""Plain, naive NumPy reference implementations for the correctness tests.

Everything here is written from the formulas in DESIGN.md (and the optimizer
docstrings in fastbp/optim.py) with ordinary NumPy, in float64, without
touching any fastbp code, so that the tests compare fastbp against an
independent implementation.
"""

from itertools import pairwise

import numpy as np
from scipy.special import logsumexp

ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh")


def act(a, name):
    """g(a) in float64."""
    a = np.asarray(a, dtype=np.float64)
    if name == "identity":
        return a.copy()
    if name == "relu":
        return np.where(a > 0, a, 0.0)
    if name == "sigmoid":
        e = np.exp(-np.abs(a))  # exp of a non-positive number: no overflow
        return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    if name == "tanh":
        return np.tanh(a)
    raise ValueError(name)


def act_grad(h, name):
    """g'(a) written with the output h = g(a)."""
    h = np.asarray(h, dtype=np.float64)
    if name == "identity":
        return np.ones_like(h)
    if name == "relu":
        return (h > 0).astype(np.float64)
    if name == "sigmoid":
        return h * (1.0 - h)
    if name == "tanh":
        return 1.0 - h * h
    raise ValueError(name)


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def dense_pre(x, W, b):
    x, W, b = _f64(x, W, b)
    out = np.zeros((x.shape[0], W.shape[1]))
    for i in range(x.shape[0]):  # naive: row by row
        out[i] = x[i] @ W + b
    return out


def dense_forward(x, W, b, name):
    return act(dense_pre(x, W, b), name)


def dense_backward(dh, x, W, h, name):
    dh, x, W, h = _f64(dh, x, W, h)
    da = dh * act_grad(h, name)
    dW = np.zeros_like(W)
    for i in range(x.shape[0]):  # sum of per-sample outer products
        dW += np.outer(x[i], da[i])
    return da @ W.T, dW, da.sum(axis=0)


def row_weights(n, sample_weight=None):
    if sample_weight is None:
        return np.full(n, 1.0 / n)
    sw = np.asarray(sample_weight, dtype=np.float64)
    return sw / sw.sum()


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def xent_labels(z, y, sample_weight=None):
    """Weighted mean softmax cross-entropy with integer labels and its gradient."""
    z = np.asarray(z, dtype=np.float64)
    n, c = z.shape
    w = row_weights(n, sample_weight)
    lse = logsumexp(z, axis=1)
    loss = float(np.sum(w * (lse - z[np.arange(n), y])))
    onehot = np.zeros((n, c))
    onehot[np.arange(n), y] = 1.0
    return loss, w[:, None] * (softmax(z) - onehot)


def xent_targets(z, t, sample_weight=None):
    """Softmax cross-entropy with target rows (sum_j t_ij (lse_i - z_ij))."""
    z, t = _f64(z, t)
    n = z.shape[0]
    w = row_weights(n, sample_weight)
    lse = logsumexp(z, axis=1)
    loss = float(np.sum(w * (t.sum(1) * lse - (t * z).sum(1))))
    grad = w[:, None] * (t.sum(1, keepdims=True) * softmax(z) - t)
    return loss, grad


def half_squared_error(p, t, sample_weight=None):
    p, t = _f64(p, t)
    p2 = p.reshape(p.shape[0], -1)
    t2 = t.reshape(p2.shape)
    w = row_weights(p2.shape[0], sample_weight)
    r = p2 - t2
    loss = float(np.sum(w * 0.5 * (r * r).sum(1)))
    return loss, (w[:, None] * r).reshape(p.shape)


# -- optimizers (PyTorch's rules) ------------------------------------------
class RefSGD:
    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
        self.lr, self.mu, self.nesterov = lr, momentum, nesterov
        self.wd, self.damp = weight_decay, dampening
        self.v = None

    def step(self, p, g):
        p = np.asarray(p, dtype=np.float64)
        d = np.asarray(g, dtype=np.float64) + self.wd * p
        if self.mu == 0.0:
            return p - self.lr * d
        if self.v is None:
            # the buffer starts at the first (undamped) gradient, as in PyTorch
            self.v = d.copy()
        else:
            self.v = self.mu * self.v + (1.0 - self.damp) * d
        if self.nesterov:
            return p - self.lr * (d + self.mu * self.v)
        return p - self.lr * self.v


class RefAdam:
    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, beta1, beta2, eps, weight_decay
        self.m = self.v = None
        self.t = 0

    def step(self, p, g):
        p = np.asarray(p, dtype=np.float64)
        d = np.asarray(g, dtype=np.float64) + self.wd * p
        if self.m is None:
            self.m, self.v = np.zeros_like(p), np.zeros_like(p)
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * d
        self.v = self.b2 * self.v + (1 - self.b2) * d * d
        mhat = self.m / (1 - self.b1 ** self.t)
        vhat = self.v / (1 - self.b2 ** self.t)
        return p - self.lr * mhat / (np.sqrt(vhat) + self.eps)


# -- whole MLP over the flat parameter layout -------------------------------
def unflatten(flat, widths):
    """[(W, b)] from the flat layout W_0 (row-major), b_0, W_1, b_1, ..."""
    flat = np.asarray(flat, dtype=np.float64)
    out, off = [], 0
    for d_in, d_out in pairwise(widths):
        W = flat[off:off + d_in * d_out].reshape(d_in, d_out)
        off += d_in * d_out
        b = flat[off:off + d_out]
        off += d_out
        out.append((W, b))
    assert off == flat.size
    return out


def mlp_loss_grad(flat, widths, hidden, output, X, y, alpha=0.0, sample_weight=None):
    """Loss (L2 term alpha/(2n) sum W**2 included, n the row count or the
    total sample weight, as scikit-learn) and flat gradient."""
    layers = unflatten(flat, widths)
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0] if sample_weight is None else float(np.sum(sample_weight))
    names = [hidden] * (len(layers) - 1) + ["identity"]
    hs = [X]
    for (W, b), name in zip(layers, names):
        hs.append(dense_forward(hs[-1], W, b, name))
    z = hs[-1]
    if output == "softmax":
        y = np.asarray(y)
        if y.ndim == 1:
            loss, dh = xent_labels(z, y, sample_weight)
        else:
            loss, dh = xent_targets(z, y, sample_weight)
    else:
        loss, dh = half_squared_error(z, np.asarray(y, dtype=np.float64).reshape(z.shape),
                                      sample_weight)
    grads = []
    for k in range(len(layers) - 1, -1, -1):
        W, _ = layers[k]
        dx, dW, db = dense_backward(dh, hs[k], W, hs[k + 1], names[k])
        dW = dW + alpha / n * W
        loss += alpha / (2 * n) * float(np.sum(W * W))
        grads.append((dW, db))
        dh = dx
    grads.reverse()
    flat_g = np.concatenate([np.concatenate([dW.ravel(), db]) for dW, db in grads])
    return loss, flat_g


# -- comparison helpers ------------------------------------------------------

# Tolerances, relative to the scale of the quantity compared (max |reference|
# or, for sums, the sum of absolute terms):
#   float64: 1e-12 (a few thousand ulps), times sqrt(k)/4 for reductions
#   longer than 16;
#   float32: 1e-5 * sqrt(k), k the length of the reduction (dot products of
#   length k accumulate rounding errors that grow like sqrt(k) on random data).
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def tol(dtype, k=1):
    dtype = np.dtype(dtype).type
    return TOL[dtype] * (np.sqrt(k) if dtype is np.float32 else max(1.0, np.sqrt(k) / 4))


def assert_close(actual, ref, dtype, k=1, scale=None, what=""):
    """max |actual - ref| <= tol(dtype, k) * scale, scale defaulting to
    max(|ref|) (at least 1e-30)."""
    actual = np.asarray(actual, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert actual.shape == ref.shape, (what, actual.shape, ref.shape)
    if scale is None:
        scale = max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-30)
    err = np.abs(actual - ref)
    bound = tol(dtype, k) * np.asarray(scale)
    bad = err > bound
    assert not bad.any(), (
        f"{what}: {bad.sum()} elements off; max error {err.max():.3g} "
        f"(bound {np.max(bound):.3g}, dtype {np.dtype(dtype).name}, k={k})")
