"""fb.dense_forward / dense_backward / activation / activation_grad / softmax
against the NumPy reference (tests/reference.py), every activation x dtype x
shape, plus layouts, input immutability and dtype rules."""

import numpy as np
import pytest
import reference as ref
from reference import assert_close

import fastbp as fb

DTYPES = [np.float32, np.float64]
# (n, d_in, d_out): batch 1, odd widths, a larger one
SHAPES = [(1, 1, 1), (1, 7, 3), (3, 33, 7), (7, 129, 33), (64, 300, 129)]


def data(shape, dtype, scale=1.0, seed=0):
    n, d_in, d_out = shape
    rng = np.random.default_rng(seed + 1000 * n + d_in + 7 * d_out)
    x = (rng.standard_normal((n, d_in)) * scale).astype(dtype)
    W = (rng.standard_normal((d_in, d_out)) / np.sqrt(d_in)).astype(dtype)
    b = rng.standard_normal(d_out).astype(dtype)
    return x, W, b


def pre_scale(x, W, b):
    """Elementwise bound on the size of terms summed in x @ W + b."""
    return np.abs(x.astype(np.float64)) @ np.abs(W.astype(np.float64)) + np.abs(b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("magnitude", [1.0, 3e3])
def test_dense_forward_matches_reference(shape, dtype, magnitude):
    x, W, b = data(shape, dtype, magnitude)
    x0, W0, b0 = x.copy(), W.copy(), b.copy()
    k = shape[1]
    a = fb.dense_forward(x, W, b, activation="identity")
    assert a.dtype == dtype and a.shape == (shape[0], shape[2])
    # the pre-activation: error relative to the sum of |terms|
    assert_close(a, ref.dense_pre(x, W, b), dtype, k, pre_scale(x, W, b), "x@W+b")
    for name in ref.ACTIVATIONS:
        h = fb.dense_forward(x, W, b, activation=name)
        assert h.dtype == dtype
        assert np.all(np.isfinite(h))
        # g applied to the same pre-activation: elementwise, a few ulps
        g = ref.act(a, name)
        assert_close(h, g, dtype, 1, np.abs(g) + np.finfo(dtype).tiny, name)
        # and against the whole reference with the error of a propagated
        # (|g'| <= 1 for every activation here)
        assert_close(h, ref.dense_forward(x, W, b, name), dtype, k,
                     pre_scale(x, W, b), name)
        if magnitude > 1 and name in ("sigmoid", "tanh"):
            lo = -1.0 if name == "tanh" else 0.0
            assert h.min() >= lo and h.max() <= 1.0
    for got, orig in ((x, x0), (W, W0), (b, b0)):
        np.testing.assert_array_equal(got, orig)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ref.ACTIVATIONS)
def test_dense_backward_matches_reference(shape, dtype, name):
    x, W, b = data(shape, dtype, seed=1)
    n, d_in, d_out = shape
    h = ref.dense_forward(x, W, b, name).astype(dtype)
    dh = np.random.default_rng(5).standard_normal((n, d_out)).astype(dtype)
    copies = [a.copy() for a in (dh, x, W, h)]
    dx, dW, db = fb.dense_backward(dh, x, W, h, activation=name)
    for got, want in ((dx, (n, d_in)), (dW, (d_in, d_out)), (db, (d_out,))):
        assert got.dtype == dtype and got.shape == want
    rdx, rdW, rdb = ref.dense_backward(dh, x, W, h, name)
    da = np.abs(dh.astype(np.float64) * ref.act_grad(h, name))
    assert_close(dx, rdx, dtype, d_out, da @ np.abs(W.T.astype(np.float64)) + 1e-30, "dx")
    assert_close(dW, rdW, dtype, n, np.abs(x.T.astype(np.float64)) @ da + 1e-30, "dW")
    assert_close(db, rdb, dtype, n, da.sum(0) + 1e-30, "db")
    for got, orig in zip((dh, x, W, h), copies):
        np.testing.assert_array_equal(got, orig)


def test_dense_backward_identity_without_h():
    x, W, _ = data((4, 5, 3), np.float64)
    dh = np.ones((4, 3))
    dx, dW, db = fb.dense_backward(dh, x, W)
    rdx, rdW, rdb = ref.dense_backward(dh, x, W, dh, "identity")
    np.testing.assert_allclose(dx, rdx, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dW, rdW, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(db, rdb, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ref.ACTIVATIONS)
@pytest.mark.parametrize("shape", [(1,), (1, 1), (3, 7), (33, 129), (2, 3, 5)])
def test_activation_and_grad(name, dtype, shape):
    rng = np.random.default_rng(len(shape))
    a = rng.standard_normal(shape).astype(dtype) * dtype(4)
    a.flat[0] = dtype(-1e4)  # saturation / large magnitudes
    a.flat[-1] = dtype(1e4) if a.size > 1 else a.flat[-1]
    a0 = a.copy()
    h = fb.activation(a, name)
    assert h.dtype == dtype and h.shape == a.shape
    g = ref.act(a, name)
    assert_close(h, g, dtype, 4, np.abs(g) + np.finfo(dtype).tiny, name)
    gp = fb.activation_grad(h, name)
    assert gp.dtype == dtype and gp.shape == a.shape
    rg = ref.act_grad(h, name)
    # 1 - h*h and h*(1 - h) cancel: their error is absolute (relative to 1)
    assert_close(gp, rg, dtype, 4, np.abs(rg) + 1.0, name + "'")
    np.testing.assert_array_equal(a, a0)
    assert np.all(np.isfinite(h)) and np.all(np.isfinite(gp))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (5, 7), (33, 129)])
@pytest.mark.parametrize("magnitude", [1.0, 1e4])
def test_softmax(shape, dtype, magnitude):
    z = (np.random.default_rng(shape[1]).standard_normal(shape) * magnitude).astype(dtype)
    z0 = z.copy()
    p = fb.softmax(z)
    assert p.dtype == dtype and p.shape == shape
    assert np.all(np.isfinite(p))
    rp = ref.softmax(z)
    assert_close(p, rp, dtype, shape[1], np.abs(rp) + np.finfo(dtype).tiny, "softmax")
    np.testing.assert_allclose(p.sum(1), 1, rtol=10 * np.finfo(dtype).eps * shape[1])
    np.testing.assert_array_equal(z, z0)


# -- layouts -------------------------------------------------------------------
def layouts(a):
    """Same values in other memory layouts: Fortran order, a strided view,
    a negative-stride view."""
    big = np.zeros((a.shape[0] * 2, a.shape[1] * 3), dtype=a.dtype)
    big[::2, ::3] = a
    flipped = np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1]
    yield "F", np.asfortranarray(a)
    yield "strided", big[::2, ::3]
    yield "negative", flipped


@pytest.mark.parametrize("dtype", DTYPES)
def test_layouts_give_same_results(dtype):
    x, W, b = data((9, 13, 5), dtype, seed=3)
    h = fb.dense_forward(x, W, b, "tanh")
    dh = np.random.default_rng(2).standard_normal(h.shape).astype(dtype)
    back = fb.dense_backward(dh, x, W, h, "tanh")
    y = np.arange(9) % 5
    loss, dz = fb.softmax_cross_entropy(h, y)
    for (kind, xl), (_, Wl), (_, hl), (_, dhl) in zip(layouts(x), layouts(W), layouts(h),
                                                      layouts(dh)):
        assert not xl.flags.c_contiguous, kind
        assert np.array_equal(fb.dense_forward(xl, Wl, b, "tanh"), h), kind
        for got, want in zip(fb.dense_backward(dhl, xl, Wl, hl, "tanh"), back):
            assert np.array_equal(got, want), kind
        l2, dz2 = fb.softmax_cross_entropy(hl, y)
        assert l2 == loss and np.array_equal(dz2, dz), kind
        assert np.array_equal(fb.activation(xl, "sigmoid"), fb.activation(x, "sigmoid"))
        assert np.array_equal(fb.activation_grad(hl, "tanh"), fb.activation_grad(h, "tanh"))
        assert np.array_equal(fb.softmax(hl), fb.softmax(h)), kind
        l3, g3 = fb.half_squared_error(hl, dhl)
        l4, g4 = fb.half_squared_error(h, dh)
        assert l3 == l4 and np.array_equal(g3, g4), kind
    # a strided bias and a transposed weight matrix
    bs = np.repeat(b, 2)[::2]
    assert np.array_equal(fb.dense_forward(x, np.ascontiguousarray(W.T).T, bs, "tanh"), h)


# -- dtype rules ---------------------------------------------------------------
def test_float32_stays_float32_everywhere():
    x, W, b = data((4, 6, 3), np.float32)
    h = fb.dense_forward(x, W, b, "relu")
    assert h.dtype == np.float32
    assert all(a.dtype == np.float32 for a in fb.dense_backward(h, x, W, h, "relu"))
    loss, dz = fb.softmax_cross_entropy(h, np.array([0, 1, 2, 0]))
    assert isinstance(loss, np.float32) and dz.dtype == np.float32
    loss, dz = fb.softmax_cross_entropy(h, np.eye(3, dtype=np.float32)[[0, 1, 2, 0]])
    assert isinstance(loss, np.float32) and dz.dtype == np.float32
    loss, g = fb.half_squared_error(h, h + 1)
    assert isinstance(loss, np.float32) and g.dtype == np.float32
    assert fb.activation(x, "tanh").dtype == np.float32
    assert fb.activation_grad(h, "tanh").dtype == np.float32
    assert fb.softmax(h).dtype == np.float32


def test_mixed_dtypes_give_float64():
    x, W, b = data((4, 6, 3), np.float32)
    W64 = W.astype(np.float64)
    h = fb.dense_forward(x, W64, b, "tanh")
    assert h.dtype == np.float64
    np.testing.assert_allclose(h, ref.dense_forward(x, W64, b, "tanh"), rtol=1e-12,
                               atol=1e-14)
    assert fb.dense_forward(x, W, b.astype(np.float64)).dtype == np.float64
    assert all(a.dtype == np.float64 for a in
               fb.dense_backward(h, x, W, h.astype(np.float32), "tanh"))
    h32 = h.astype(np.float32)
    _, dz = fb.softmax_cross_entropy(h32, np.eye(3)[[0, 1, 2, 0]])
    assert dz.dtype == np.float64
    assert fb.half_squared_error(h32, h)[1].dtype == np.float64
    # integers work in float64, as in NumPy
    assert fb.dense_forward(np.ones((2, 6), dtype=np.int64), W64).dtype == np.float64


# -- a few bad inputs (the full table lives in test_bad_input.py) --------------
def test_bad_input_names_the_argument():
    x, W, b = data((4, 6, 3), np.float64)
    with pytest.raises(ValueError, match="W"):
        fb.dense_forward(x, W[:5], b)
    with pytest.raises(ValueError, match="b"):
        fb.dense_forward(x, W, b[:2])
    x_nan = x.copy()
    x_nan[1, 2] = np.nan
    with pytest.raises(ValueError, match="x"):
        fb.dense_forward(x_nan, W, b)
    with pytest.raises(ValueError, match="x"):
        fb.dense_forward(x[:0], W, b)
    with pytest.raises(ValueError, match="activation|sigmoidal"):
        fb.dense_forward(x, W, b, activation="sigmoidal")
    with pytest.raises(ValueError, match="y"):
        fb.softmax_cross_entropy(x, np.array([0, 1, 6, 0]))
    with pytest.raises(ValueError, match="y"):
        fb.softmax_cross_entropy(x, np.array([0, -1, 2, 0]))
    with pytest.raises(ValueError, match="dh"):
        fb.dense_backward(np.ones((4, 2)), x, W, None)
    with pytest.raises((TypeError, ValueError), match="x"):
        fb.dense_forward(np.array([["a"] * 6] * 4), W, b)
