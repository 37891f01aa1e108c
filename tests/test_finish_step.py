"""The data-parallel step's second half, ``_kernels.distributed.finish_step``,
in one process: against a plain NumPy reference of the scaling, the L2 term
and both optimizers, its statuses when a value late in the buffer is bad
(across the chunks of its one pass), and that it only reads the parameters
and state it is given (the new values go to the second buffers)."""

import itertools

import numpy as np
import pytest

import fastbp as fb
from fastbp._kernels import distributed as dk
from fastbp._kernels import records as rec

# widths whose buffer spans several chunks, with layer and weight/bias
# boundaries inside chunks and a last chunk shorter than the others
WIDTHS = (70, 90, 50, 3)
P = sum(a * b + b for a, b in itertools.pairwise(WIDTHS))
assert P > 2 * dk.CHUNK


def weight_mask():
    """True where the flat buffer holds a weight (False for biases)."""
    mask = np.zeros(P, dtype=bool)
    off = 0
    for a, b in itertools.pairwise(WIDTHS):
        mask[off:off + a * b] = True
        off += a * b + b
    return mask


def reference(params, g, s1, s2, opt, alpha, S, loss_sum, step):
    """finish_step in float64 NumPy: (new params, s1, s2, batch loss)."""
    p = params.astype(np.float64)
    w = weight_mask()
    grad = g.astype(np.float64) / S + np.where(w, alpha / S * p, 0.0)
    l2 = float(np.sum(p[w] ** 2))
    loss = loss_sum / S + 0.5 * alpha / S * l2
    hp = opt.hyperparameters()
    m1, m2 = s1.astype(np.float64), s2.astype(np.float64)
    t = step + 1
    if isinstance(opt, fb.Adam):
        lr, b1, b2, eps = hp[0], hp[1], hp[2], hp[3]
        m1 = b1 * m1 + (1 - b1) * grad
        m2 = b2 * m2 + (1 - b2) * grad * grad
        p = p - lr / (1 - b1**t) * m1 / (np.sqrt(m2 / (1 - b2**t)) + eps)
    else:
        lr, mu = hp[0], hp[1]
        m1 = mu * m1 + grad if step > 0 else grad.copy()
        p = p - lr * m1
    return p, m1, m2, loss


def make(dtype, rng):
    params = rng.standard_normal(P).astype(dtype)
    gbuf = np.zeros(P + dk.TAIL, dtype=dtype)
    gbuf[:P] = rng.standard_normal(P)
    gbuf[P + dk.WEIGHT] = 48
    gbuf[P + dk.ROWS] = 48
    gbuf[P + dk.LOSS] = 30
    s1 = (rng.standard_normal(P) * 0.1).astype(dtype)
    s2 = (rng.random(P) * 0.1).astype(dtype)
    return params, gbuf, s1, s2


def call(params, gbuf, s1, s2, opt, alpha, step):
    """finish_step with fresh second buffers (NaN where nothing is written);
    checks that params, s1 and s2 are only read.  Returns (status, loss,
    step, (new params, new s1, new s2))."""
    before = params.copy(), s1.copy(), s2.copy()
    nxt = tuple(np.full(P, np.nan, dtype=params.dtype) for _ in range(3))
    widths = np.array(WIDTHS, dtype=np.int64)
    net = rec.network(params, np.empty(0, params.dtype), widths, widths[:0], alpha)
    status, loss, step = dk.finish_step(
        net, gbuf, rec.optimizer(opt.kind, opt.hyperparameters(), s1, s2, step), nxt)
    for a, b in zip((params, s1, s2), before, strict=True):
        assert np.array_equal(a, b)
    return status, loss, step, nxt


OPTS = [fb.SGD(lr=0.05, momentum=0.9), fb.Adam(lr=0.01)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opt", OPTS, ids=["sgd", "adam"])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_against_numpy(dtype, opt, alpha):
    rng = np.random.default_rng(3)
    params, gbuf, s1, s2 = make(dtype, rng)
    want = reference(params, gbuf[:P], s1, s2, opt, alpha, 48.0, 30.0, 4)
    status, loss, step, (pn, s1n, s2n) = call(params, gbuf, s1, s2, opt, alpha, 4)
    assert (status, step) == (0, 5)
    tol = {"rtol": 2e-5, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-13}
    np.testing.assert_allclose(pn, want[0], **tol)
    np.testing.assert_allclose(s1n, want[1], **tol)
    if isinstance(opt, fb.Adam):
        np.testing.assert_allclose(s2n, want[2], **tol)
    np.testing.assert_allclose(loss, want[3], rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("opt", OPTS, ids=["sgd", "adam"])
@pytest.mark.parametrize("where", [0, dk.CHUNK - 1, dk.CHUNK, P - 1])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_bad_gradient_anywhere_is_refused(opt, where, value):
    rng = np.random.default_rng(4)
    params, gbuf, s1, s2 = make(np.float32, rng)
    gbuf[where] = value
    status, _, step, _ = call(params, gbuf, s1, s2, opt, 0.1, 7)
    assert (status, step) == (2, 7)


def test_bad_gradient_after_a_bad_update_is_reported_as_gradient():
    """A non-finite update in the first chunk and a non-finite gradient in
    the last: the gradient wins, as in the one-pass check of the whole
    buffer (optim.check_update)."""
    rng = np.random.default_rng(5)
    opt = fb.SGD(lr=1.0, momentum=0.9)
    params, gbuf, s1, s2 = make(np.float32, rng)
    params[1] = np.finfo(np.float32).max  # p - lr * v overflows with v < 0 huge
    s1[1] = -np.finfo(np.float32).max
    assert call(params, gbuf, s1, s2, opt, 0.0, 3)[0] == 3  # alone: a bad update
    gbuf[P - 2] = np.nan
    assert call(params, gbuf, s1, s2, opt, 0.0, 3)[0] == 2


def test_overflowing_l2_term_refuses_the_step():
    """sum(W**2) overflows float32 while every update is finite: status 1
    (a non-finite loss)."""
    rng = np.random.default_rng(6)
    opt = fb.SGD(lr=1e-3, momentum=0.0)
    params, gbuf, s1, s2 = make(np.float32, rng)
    params[:5] = 3e19  # squares overflow float32
    status, loss, _, (pn, _, _) = call(params, gbuf, s1, s2, opt, 1e-30, 0)
    assert status == 1 and not np.isfinite(loss)
    assert np.isfinite(pn).all()  # every update finite: only the loss refuses


def test_sgd_without_momentum_writes_no_state():
    """Plain SGD keeps no momentum: its new state buffer is not written (the
    epoch adopts no state for it, optim.adopt_update)."""
    rng = np.random.default_rng(7)
    opt = fb.SGD(lr=0.1, momentum=0.0)
    params, gbuf, s1, s2 = make(np.float64, rng)
    want = params - 0.1 * (gbuf[:P] / 48.0)
    status, _, _, (pn, s1n, s2n) = call(params, gbuf, s1, s2, opt, 0.0, 0)
    assert status == 0
    np.testing.assert_allclose(pn, want, rtol=1e-12)
    assert np.isnan(s1n).all() and np.isnan(s2n).all()
