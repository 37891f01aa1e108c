"""Property tests: the layer functions agree with a plain NumPy reference.

Hypothesis draws shapes (1-20 rows, 1-20 columns), dtypes (float32,
float64), memory layouts (C, Fortran, strided slices, negative strides,
read-only, unaligned, big-endian) and activations; values come from a seeded
NumPy generator.  The reference below is written from the formulas of
DESIGN.md in float64 and shares no code with fastbp.  Every result must keep
the input dtype, match the reference to a dtype-dependent tolerance, and
leave the inputs untouched.

The second half checks overflow-prone inputs (logits of +-1e4, sigmoid and
tanh of +-1e4): finite, correct, and no floating-point warnings.
"""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbp as fb

ACTIVATIONS = ["identity", "relu", "sigmoid", "tanh"]
LAYOUTS = ["C", "F", "strided", "reversed", "readonly", "unaligned", "bigendian"]
DTYPES = [np.float32, np.float64]
SETTINGS = settings(max_examples=100, deadline=None)


# --- the NumPy reference ------------------------------------------------------

def ref_act(a, name):
    a = np.asarray(a, dtype=np.float64)
    if name == "identity":
        return a.copy()
    if name == "relu":
        return np.where(a > 0, a, 0.0)
    if name == "sigmoid":
        e = np.exp(-np.abs(a))
        return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return np.tanh(a)


def ref_act_grad(h, name):
    h = np.asarray(h, dtype=np.float64)
    if name == "identity":
        return np.ones_like(h)
    if name == "relu":
        return (h > 0).astype(np.float64)
    if name == "sigmoid":
        return h * (1.0 - h)
    return 1.0 - h * h


def ref_dense_forward(x, W, b, name):
    x, W, b = (np.asarray(t, dtype=np.float64) for t in (x, W, b))
    return ref_act(x @ W + b, name)


def ref_dense_backward(dh, x, W, h, name):
    dh, x, W = (np.asarray(t, dtype=np.float64) for t in (dh, x, W))
    da = dh * ref_act_grad(h, name)
    return da @ W.T, x.T @ da, da.sum(axis=0)


def ref_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ref_xent(z, y):
    """Mean cross-entropy and its gradient; y labels (n,) or target rows (n, c)."""
    z = np.asarray(z, dtype=np.float64)
    n, c = z.shape
    t = np.eye(c)[y] if np.ndim(y) == 1 else np.asarray(y, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(axis=1, keepdims=True)) + m
    loss = np.sum(t * (lse - z)) / n
    grad = (t.sum(axis=1, keepdims=True) * ref_softmax(z) - t) / n
    return loss, grad


# --- inputs -----------------------------------------------------------------------

def in_layout(a, layout):
    """An array equal to ``a`` (C-contiguous) stored in the given layout."""
    if layout == "C":
        return a
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros((a.shape[0], 3 * a.shape[1]), a.dtype)
        big[:, 1::3] = a
        return big[:, 1::3]
    if layout == "reversed":
        return np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1]
    if layout == "readonly":
        r = a.copy()
        r.flags.writeable = False
        return r
    if layout == "unaligned":
        buf = np.zeros(a.nbytes + 1, np.uint8)
        u = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
        u[...] = a
        return u
    if layout == "bigendian":
        return a.astype(a.dtype.newbyteorder(">"))
    raise AssertionError(layout)


def tol(dtype, k=1):
    """(rtol, atol) for results of sums of about k products."""
    if dtype == np.float32:
        return 2e-5 * np.sqrt(k) + 1e-5, 2e-5 * k
    return 1e-12 * k + 1e-13, 1e-12 * k


def assert_close(got, want, dtype, k=1):
    rtol, atol = tol(dtype, k)
    assert got.dtype == dtype, (got.dtype, dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


rows = st.integers(1, 20)
cols = st.integers(1, 20)
dtypes = st.sampled_from(DTYPES)
layouts = st.sampled_from(LAYOUTS)
acts = st.sampled_from(ACTIVATIONS)
seeds = st.integers(0, 2**32 - 1)


def data(seed, *shapes, dtype, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(scale * rng.standard_normal(s)).astype(dtype) for s in shapes]


def frozen(*arrays):
    return [a.copy() for a in arrays]


def unchanged(arrays, copies):
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)


# --- properties ---------------------------------------------------------------

@SETTINGS
@given(n=rows, d_in=cols, d_out=cols, dtype=dtypes, layout=layouts, name=acts, seed=seeds)
def test_dense_forward_matches_numpy(n, d_in, d_out, dtype, layout, name, seed):
    x, W, b = data(seed, (n, d_in), (d_in, d_out), (d_out,), dtype=dtype)
    xs, Ws = in_layout(x, layout), in_layout(W, layout)
    keep = frozen(xs, Ws, b)
    h = fb.dense_forward(xs, Ws, b, activation=name)
    assert h.shape == (n, d_out)
    assert h.flags.c_contiguous
    assert_close(h, ref_dense_forward(x, W, b, name), dtype, d_in)
    # any layout gives exactly what the C-ordered copy gives
    np.testing.assert_array_equal(h, fb.dense_forward(x, W, b, activation=name))
    unchanged((xs, Ws, b), keep)


@SETTINGS
@given(n=rows, d_in=cols, d_out=cols, dtype=dtypes, layout=layouts, name=acts, seed=seeds)
def test_dense_backward_matches_numpy(n, d_in, d_out, dtype, layout, name, seed):
    x, W, b, dh = data(seed, (n, d_in), (d_in, d_out), (d_out,), (n, d_out), dtype=dtype)
    h = fb.dense_forward(x, W, b, activation=name)
    args = [in_layout(t, layout) for t in (dh, x, W, h)]
    keep = frozen(*args)
    dx, dW, db = fb.dense_backward(*args, activation=name)
    rdx, rdW, rdb = ref_dense_backward(dh, x, W, h, name)
    assert (dx.shape, dW.shape, db.shape) == (x.shape, W.shape, b.shape)
    assert_close(dx, rdx, dtype, d_out)
    assert_close(dW, rdW, dtype, n)
    assert_close(db, rdb, dtype, n)
    for got, want in zip((dx, dW, db), fb.dense_backward(dh, x, W, h, activation=name)):
        np.testing.assert_array_equal(got, want)
    unchanged(args, keep)


@SETTINGS
@given(n=rows, c=st.integers(1, 20), dtype=dtypes, layout=layouts, soft=st.booleans(),
       scale=st.sampled_from([0.1, 1.0, 30.0]), seed=seeds)
def test_softmax_cross_entropy_matches_numpy(n, c, dtype, layout, soft, scale, seed):
    (z,) = data(seed, (n, c), dtype=dtype, scale=scale)
    rng = np.random.default_rng(seed + 1)
    if soft:
        y = rng.random((n, c)).astype(dtype)
        y /= y.sum(axis=1, keepdims=True)
        y = in_layout(y, layout)
    else:
        y = rng.integers(0, c, n)
    zs = in_layout(z, layout)
    keep = frozen(zs, y)
    loss, dz = fb.softmax_cross_entropy(zs, y)
    rloss, rdz = ref_xent(z, np.asarray(y))
    assert isinstance(loss, dtype)
    rtol, atol = tol(dtype, c)
    assert np.isclose(loss, rloss, rtol=rtol, atol=atol * max(1.0, scale))
    assert_close(dz, rdz, dtype, c)
    # the gradient of a mean over rows sums to zero in each row when targets sum to 1
    np.testing.assert_allclose(dz.sum(axis=1), 0, atol=tol(dtype, c)[1] * 10)
    assert_close(fb.softmax(zs), ref_softmax(z), dtype, c)
    loss_c, dz_c = fb.softmax_cross_entropy(z, np.ascontiguousarray(y))
    assert loss == loss_c
    np.testing.assert_array_equal(dz, dz_c)
    unchanged((zs, y), keep)


@SETTINGS
@given(shape=st.lists(st.integers(0, 8), min_size=0, max_size=3), dtype=dtypes, name=acts,
       scale=st.sampled_from([1.0, 10.0, 1e3]), seed=seeds)
def test_activation_any_shape_matches_numpy(shape, dtype, name, scale, seed):
    (a,) = data(seed, tuple(shape), dtype=dtype, scale=scale)
    keep = a.copy()
    h = fb.activation(a, name)
    assert h.shape == a.shape
    assert_close(h, ref_act(a, name), dtype)
    g = fb.activation_grad(h, name)
    assert g.shape == a.shape
    assert_close(g, ref_act_grad(h, name), dtype)
    np.testing.assert_array_equal(a, keep)


@SETTINGS
@given(n=rows, d=cols, dtype=dtypes, layout=layouts, name=acts, seed=seeds)
def test_activation_layouts_match_numpy(n, d, dtype, layout, name, seed):
    (a,) = data(seed, (n, d), dtype=dtype, scale=3.0)
    s = in_layout(a, layout)
    keep = s.copy()
    h = fb.activation(s, name)
    assert_close(h, ref_act(a, name), dtype)
    np.testing.assert_array_equal(h, fb.activation(a, name))
    hs = in_layout(np.ascontiguousarray(h), layout)
    assert_close(fb.activation_grad(hs, name), ref_act_grad(h, name), dtype)
    np.testing.assert_array_equal(s, keep)


@SETTINGS
@given(n=rows, k=st.integers(0, 5), dtype=dtypes, layout=layouts, seed=seeds)
def test_half_squared_error_matches_numpy(n, k, dtype, layout, seed):
    shape = (n,) if k == 0 else (n, k)
    p, t = data(seed, shape, shape, dtype=dtype)
    if k:
        p, t = in_layout(p, layout), in_layout(t, layout)
    loss, g = fb.half_squared_error(p, t)
    r = np.asarray(p, np.float64) - np.asarray(t, np.float64)
    assert isinstance(loss, dtype)
    assert np.isclose(loss, 0.5 * np.sum(r * r) / n, rtol=tol(dtype, n * max(k, 1))[0])
    assert g.shape == shape
    assert_close(g, r / n, dtype)


@SETTINGS
@given(n=rows, d_in=cols, d_out=cols, name=acts, seed=seeds)
def test_float32_and_float64_agree(n, d_in, d_out, name, seed):
    """float32 work is float32 all the way, yet close to the float64 result."""
    x, W, b = data(seed, (n, d_in), (d_in, d_out), (d_out,), dtype=np.float64)
    h64 = fb.dense_forward(x, W, b, name)
    h32 = fb.dense_forward(x.astype(np.float32), W.astype(np.float32),
                           b.astype(np.float32), name)
    assert h32.dtype == np.float32
    np.testing.assert_allclose(h32, h64, rtol=1e-4, atol=1e-4 * d_in)


# --- overflow-prone inputs ------------------------------------------------------

@pytest.fixture
def no_warnings():
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        yield


@pytest.mark.parametrize("dtype", DTYPES)
def test_logits_of_1e4_give_finite_exact_loss(dtype, no_warnings):
    z = np.array([[1e4, -1e4], [-1e4, 1e4], [1e4, 1e4]], dtype=dtype)
    y = np.array([1, 1, 0])
    loss, dz = fb.softmax_cross_entropy(z, y)
    # row losses: 2e4, 0, log 2
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, (2e4 + np.log(2)) / 3, rtol=1e-6)
    want = np.array([[1, -1], [0, 0], [-0.5, 0.5]]) / 3
    np.testing.assert_allclose(dz, want, atol=1e-7)
    np.testing.assert_array_equal(fb.softmax(z), [[1, 0], [0, 1], [0.5, 0.5]])
    # soft targets take the same path through log-sum-exp
    loss_t, dz_t = fb.softmax_cross_entropy(z, np.eye(2, dtype=dtype)[y])
    np.testing.assert_allclose(loss_t, loss, rtol=1e-6)
    np.testing.assert_allclose(dz_t, dz, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_and_tanh_extremes(dtype, no_warnings):
    big = np.array([[-1e4, -80.0, -20.0, 0.0, 20.0, 80.0, 1e4]], dtype=dtype)
    s = fb.activation(big, "sigmoid")
    assert np.all(np.isfinite(s))
    assert s[0, 0] == 0 and s[0, -1] == 1 and s[0, 3] == 0.5
    # very negative inputs keep full relative precision (no 1 - (1 - tiny))
    np.testing.assert_allclose(s[0, 1:3], np.exp([-80.0, -20.0]), rtol=1e-5)
    assert np.all(np.diff(s[0]) >= 0)
    t = fb.activation(big, "tanh")
    np.testing.assert_array_equal(t[0, [0, 1, -2, -1]], [-1, -1, 1, 1])
    assert t[0, 3] == 0
    for name, act in (("sigmoid", s), ("tanh", t)):
        g = fb.activation_grad(act, name)
        assert np.all(np.isfinite(g)) and np.all(g >= 0)
        assert g[0, 0] == 0 and g[0, -1] == 0
    # the same through the fused layer kernel (bias added before the activation)
    h = fb.dense_forward(np.ones((1, 1), dtype), np.ones((1, 7), dtype), big[0], "sigmoid")
    np.testing.assert_array_equal(h[0, [0, -1]], [0, 1])
    h = fb.dense_forward(np.ones((1, 1), dtype), np.ones((1, 7), dtype), big[0], "tanh")
    np.testing.assert_array_equal(h[0, [0, -1]], [-1, 1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_network_with_huge_inputs_stays_finite(dtype, no_warnings):
    rng = np.random.default_rng(0)
    X = (1e4 * np.sign(rng.standard_normal((16, 4)))).astype(dtype)
    y = np.arange(16) % 3
    for act in ("sigmoid", "tanh"):
        m = fb.MLP([4, 8, 3], activation=act, dtype=dtype, seed=0)
        loss, grads = m.loss_and_grad(X, y)
        assert np.isfinite(loss)
        assert all(np.isfinite(g).all() for pair in grads for g in pair)
        p = m.predict_proba(X)
        assert np.isfinite(p).all()
        np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)


def test_integer_one_hot_targets_keep_the_logits_dtype():
    z = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    y = np.array([0, 2, 1, 1, 0])
    loss, dz = fb.softmax_cross_entropy(z, np.eye(3, dtype=np.int64)[y])
    assert isinstance(loss, np.float32) and dz.dtype == np.float32
    loss_l, dz_l = fb.softmax_cross_entropy(z, y)
    np.testing.assert_allclose(loss, loss_l, rtol=1e-6)
    np.testing.assert_allclose(dz, dz_l, atol=1e-7)
