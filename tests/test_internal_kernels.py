"""Kernel building blocks the public functions rest on: the BLAS binding,
the finiteness check, the 2-D views of flat buffers, and compile-order
independence of results."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit

from fastbp._kernels import blas, network, optim


@njit
def _mm_transposed(a_t, b, out):
    # a_t.T is an F-contiguous view: matmul must pass it to BLAS as TRANS
    blas.matmul(a_t.T, b, out)


@njit
def _mm_both_transposed(a_t, b_t, out):
    blas.matmul(a_t.T, b_t.T, out)


@njit
def _view2d(buf, offset, rows, cols):
    return network.view2d(buf, offset, rows, cols)


@njit
def _write_through_view(buf, offset, rows, cols):
    v = network.view2d(buf, offset, rows, cols)
    v[rows - 1, cols - 1] = -1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("args", [(0, 3, 4), (5, 2, 3), (12, 0, 4), (2, 2, 5), (0, 0, 0)])
def test_view2d_is_the_numpy_reshape(dtype, args):
    buf = np.arange(12, dtype=dtype)
    off, r, c = args
    v = _view2d(buf, off, r, c)
    np.testing.assert_array_equal(v, buf[off:off + r * c].reshape(r, c))
    assert v.flags.c_contiguous and v.dtype == dtype
    if r * c:
        _write_through_view(buf, off, r, c)
        assert buf[off + r * c - 1] == -1  # a view, not a copy


@pytest.mark.parametrize("args", [(0, 4, 4), (11, 1, 2), (-1, 1, 1), (0, -1, 2), (0, 2, -1)])
def test_view2d_out_of_the_buffer_raises(args):
    with pytest.raises(IndexError, match="view2d"):
        _view2d(np.zeros(12), *args)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 7, 1), (3, 5, 7), (33, 1, 4), (64, 129, 10)])
def test_matmul_against_numpy(dtype, shape):
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    out = np.full((m, n), np.nan, dtype)
    blas.matmul(a, b, out)
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.sqrt(k))
    out[:] = np.nan
    _mm_transposed(np.ascontiguousarray(a.T), b, out)
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.sqrt(k))
    out[:] = np.nan
    _mm_both_transposed(np.ascontiguousarray(a.T), np.ascontiguousarray(b.T), out)
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.sqrt(k))


def test_fallback_blas_gives_same_results():
    """With FASTBP_BLAS=numba the kernels call np.dot instead of NumPy's
    OpenBLAS; training must work and agree closely."""
    code = textwrap.dedent(
        """
        import numpy as np, fastbp as fb
        from fastbp._kernels import blas
        X, y = fb.load_digits(dtype="float64")
        m = fb.MLP([64, 16, 10], dtype="float64", seed=0)
        m.fit(X[:300], y[:300], epochs=2, batch_size=32, optimizer=fb.SGD(lr=0.05))
        print(blas.BACKEND)
        np.save(__import__("sys").argv[1], m.flat_params)
        """
    )
    outs = {}
    for backend in ("numba", "auto"):
        env = dict(os.environ, FASTBP_BLAS=backend)
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fastbp-{backend}-{os.getpid()}.npy")
        res = subprocess.run([sys.executable, "-c", code, path], env=env, capture_output=True, check=False,
                             text=True, timeout=600)
        assert res.returncode == 0, res.stderr
        outs[res.stdout.split()[-1]] = np.load(path)
        os.unlink(path)
    assert "numba-np.dot" in outs
    assert len(outs) == 2
    a, b = outs.values()
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("where", [0, 500, 999])
def test_all_finite_detects(dtype, bad, where):
    x = np.ones(1000, dtype)
    assert optim.all_finite(x)
    x[where] = bad
    assert not optim.all_finite(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_extremes_are_finite(dtype):
    info = np.finfo(dtype)
    x = np.array([info.max, -info.max, info.tiny, info.tiny / 4, -0.0, 0.0], dtype)
    assert optim.all_finite(x)
    assert optim.all_finite(x[:0])


_ORDER_SCRIPT = textwrap.dedent(
    """
    import sys, hashlib, numpy as np, fastbp as fb
    if sys.argv[1] == "layers-first":
        rng = np.random.default_rng(0)
        for dt in (np.float32, np.float64):
            x = rng.standard_normal((5, 4)).astype(dt)
            W = rng.standard_normal((4, 3)).astype(dt)
            h = fb.dense_forward(x, W, None, "relu")
            fb.dense_backward(h, x, W, h, "relu")
            fb.softmax_cross_entropy(h, np.array([0, 1, 2, 0, 1]))
    X, y = fb.load_digits(dtype="float64")
    m = fb.MLP([64, 16, 10], dtype="float64", seed=3)
    m.fit(X[:600], y[:600], epochs=3, batch_size=50, optimizer=fb.SGD(lr=0.01, momentum=0.9))
    print(hashlib.sha256(m.flat_params.tobytes()).hexdigest())
    """
)


def test_results_do_not_depend_on_compile_order():
    """Regression: with reassoc/contract fastmath flags, calling the layer
    functions before fit changed the trained parameters' last bits."""
    digests = set()
    for mode in ("fit-only", "layers-first", "fit-only"):
        res = subprocess.run([sys.executable, "-c", _ORDER_SCRIPT, mode], check=False,
                             capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0, res.stderr
        digests.add(res.stdout.split()[-1])
    assert len(digests) == 1
