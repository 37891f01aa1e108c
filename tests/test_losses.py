"""fb.softmax_cross_entropy and fb.half_squared_error against the reference:
int labels, one-hot and soft target rows, sample weights, large logits."""

import numpy as np
import pytest
import reference as ref
from reference import assert_close

import fastbp as fb

DTYPES = [np.float32, np.float64]
SHAPES = [(1, 2), (1, 7), (3, 3), (33, 10), (129, 33), (500, 129)]


def logits(shape, dtype, magnitude=1.0, seed=0):
    rng = np.random.default_rng(seed + shape[0] * 131 + shape[1])
    return (rng.standard_normal(shape) * magnitude).astype(dtype)


def soft_targets(shape, dtype, seed=0):
    t = np.random.default_rng(seed).random(shape) + 0.05
    return (t / t.sum(1, keepdims=True)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("magnitude", [1.0, 30.0, 1e4])
@pytest.mark.parametrize("weighted", [False, True])
def test_xent_labels(shape, dtype, magnitude, weighted):
    n, c = shape
    z = logits(shape, dtype, magnitude)
    y = np.random.default_rng(n).integers(0, c, n)
    sw = np.random.default_rng(c).random(n) + 0.1 if weighted else None
    z0 = z.copy()
    loss, dz = fb.softmax_cross_entropy(z, y, sample_weight=sw)
    assert isinstance(loss, dtype) and dz.dtype == dtype and dz.shape == shape
    assert np.isfinite(loss) and np.all(np.isfinite(dz))
    rl, rdz = ref.xent_labels(z, y, sw)
    # loss: a weighted mean of per-row terms of size ~|z|; gradient entries
    # are bounded by the row weight
    assert_close(loss, rl, dtype, c, max(abs(rl), np.abs(z).max() / 8, 1e-3), "loss")
    assert_close(dz, rdz, dtype, c, ref.row_weights(n, sw).max(), "dlogits")
    np.testing.assert_array_equal(z, z0)
    # one-hot target rows give the same answer as the labels
    onehot = np.eye(c, dtype=dtype)[y]
    l2, dz2 = fb.softmax_cross_entropy(z, onehot, sample_weight=sw)
    assert_close(l2, rl, dtype, c, max(abs(rl), np.abs(z).max() / 8, 1e-3), "loss one-hot")
    assert_close(dz2, rdz, dtype, c, ref.row_weights(n, sw).max(), "dlogits one-hot")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_xent_soft_targets(shape, dtype, weighted):
    n, c = shape
    z = logits(shape, dtype, 5.0, seed=1)
    t = soft_targets(shape, dtype)
    sw = np.random.default_rng(c).random(n) + 0.1 if weighted else None
    t0 = t.copy()
    loss, dz = fb.softmax_cross_entropy(z, t, sample_weight=sw)
    assert isinstance(loss, dtype) and dz.dtype == dtype
    rl, rdz = ref.xent_targets(z, t, sw)
    assert_close(loss, rl, dtype, c, max(abs(rl), np.abs(z).max() / 8), "loss")
    assert_close(dz, rdz, dtype, c, ref.row_weights(n, sw).max(), "dlogits")
    np.testing.assert_array_equal(t, t0)
    # rows that do not sum to one (unnormalised targets) stay exact too
    t3 = (t * 3).astype(dtype)
    loss3, dz3 = fb.softmax_cross_entropy(z, t3)
    rl3, rdz3 = ref.xent_targets(z, t3)
    assert_close(loss3, rl3, dtype, c, max(abs(rl3), np.abs(z).max()), "loss x3")
    assert_close(dz3, rdz3, dtype, c, 3.0 / n, "dlogits x3")


@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_extreme_logits_finite(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [0, 0, 1e4]], dtype=dtype)
    y = np.array([1, 2, 0])  # the wrong classes: loss ~ 2e4 / 3 per row, never inf
    loss, dz = fb.softmax_cross_entropy(z, y)
    rl, rdz = ref.xent_labels(z, y)
    assert np.isfinite(loss) and np.all(np.isfinite(dz))
    np.testing.assert_allclose(float(loss), rl, rtol=1e-6)
    np.testing.assert_allclose(dz, rdz, atol=1e-7)
    loss, _ = fb.softmax_cross_entropy(z, np.array([0, 0, 2]))  # right: ~ log(3)/3
    # (lse + max) - z_y loses the bits of one ulp of the 1e4-sized logits
    np.testing.assert_allclose(float(loss), np.log(3) / 3, rtol=1e-12,
                               atol=4 * np.finfo(dtype).eps * 1e4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (1, 1), (7,), (33, 3), (129, 33)])
@pytest.mark.parametrize("weighted", [False, True])
def test_half_squared_error(shape, dtype, weighted):
    rng = np.random.default_rng(len(shape) + shape[0])
    p = rng.standard_normal(shape).astype(dtype)
    t = rng.standard_normal(shape).astype(dtype)
    sw = rng.random(shape[0]) + 0.1 if weighted else None
    p0 = p.copy()
    loss, g = fb.half_squared_error(p, t, sample_weight=sw)
    assert isinstance(loss, dtype) and g.dtype == dtype and g.shape == shape
    rl, rg = ref.half_squared_error(p, t, sw)
    k = p.size // shape[0]
    assert_close(loss, rl, dtype, k, rl, "loss")
    diff = np.abs(p.astype(np.float64) - t)
    assert_close(g, rg, dtype, 1, ref.row_weights(shape[0], sw).max() * diff.max(), "grad")
    np.testing.assert_array_equal(p, p0)
    # large magnitudes
    loss, g = fb.half_squared_error(p * dtype(1e3), t)
    rl, rg = ref.half_squared_error(p * dtype(1e3), t)
    assert_close(loss, rl, dtype, k, rl, "loss 1e3")


def test_integer_sample_weights_are_row_duplication():
    z = logits((6, 4), np.float64)
    y = np.array([0, 1, 2, 3, 0, 1])
    sw = np.array([1, 2, 0, 3, 1, 1])
    loss, dz = fb.softmax_cross_entropy(z, y, sample_weight=sw)
    rows = np.repeat(np.arange(6), sw)
    l2, dz2 = fb.softmax_cross_entropy(z[rows], y[rows])
    np.testing.assert_allclose(loss, l2, rtol=1e-13)
    np.testing.assert_allclose(dz, np.add.reduceat(dz2, np.r_[0, np.cumsum(sw)[:-1]])
                               * (sw > 0)[:, None], atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 2), (32, 10), (7, 3), (65, 33)])
def test_xent_labels_kernel_in_place_and_arg_max(shape, dtype):
    """The kernel (``_kernels.losses.softmax_xent_labels``) with dz the
    logits' own buffer gives what it gives into a separate one, and counts
    the rows whose first arg-max is the label as NumPy's argmax does, ties
    included (its first pass finds the maxima before any row is written)."""
    from fastbp._kernels import losses as k_loss

    n, c = shape
    z = logits(shape, dtype, 3.0)
    z[::3] = np.round(z[::3])  # ties within rows
    z[0] = 1.0  # all tied: the first column is the arg-max
    y = np.random.default_rng(c).integers(0, c, n)
    y[0] = 0
    w = np.full(n, 1.0 / n, dtype)
    dz = np.empty_like(z)
    loss, correct = k_loss.softmax_xent_labels(z, y, w, dz)
    assert correct == int(np.sum(np.argmax(z, axis=1) == y))
    rl, rdz = ref.xent_labels(z, y)
    assert_close(loss, rl, dtype, c, max(abs(rl), 1e-3), "loss")
    assert_close(dz, rdz, dtype, c, 1.0 / n, "dlogits")
    same = z.copy()
    loss2, correct2 = k_loss.softmax_xent_labels(same, y, w, same)
    assert (loss2, correct2) == (loss, correct)
    np.testing.assert_array_equal(same, dz)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 2), (32, 10), (65, 33)])
def test_xent_targets_kernel_in_place(shape, dtype):
    """``_kernels.losses.softmax_xent_targets`` with dz the logits' own
    buffer: the same loss, count and gradient as into a separate buffer,
    both against the reference."""
    from fastbp._kernels import losses as k_loss

    n, c = shape
    z = logits(shape, dtype, 3.0, seed=2)
    t = soft_targets(shape, dtype, seed=3)
    w = np.full(n, 1.0 / n, dtype)
    dz = np.empty_like(z)
    loss, correct = k_loss.softmax_xent_targets(z, t, w, dz)
    assert correct == int(np.sum(np.argmax(z, axis=1) == np.argmax(t, axis=1)))
    rl, rdz = ref.xent_targets(z, t)
    assert_close(loss, rl, dtype, c, max(abs(rl), 1e-3), "loss")
    assert_close(dz, rdz, dtype, c, 1.0 / n, "dlogits")
    same = z.copy()
    assert k_loss.softmax_xent_targets(same, t, w, same) == (loss, correct)
    np.testing.assert_array_equal(same, dz)
