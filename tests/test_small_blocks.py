"""Products cut into blocks of rows that OpenBLAS's small kernels take
(``_kernels/blas.py``: ``block_rows``, the IR wrappers ``fastbp_?gemm_blocks``
and their plans): the rule, the plan OpenBLAS permits, and the products
against NumPy, with offsets and leading dimensions as the kernels pass
them, on one OpenBLAS thread (where blocks are used) and on two (where the
product stays whole)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from numba import njit

from fastbp._kernels import blas
from fastbp._kernels.blas import NO_TRANS as N
from fastbp._kernels.blas import TRANS as T
from fastbp._threads import BLAS_SINGLE


def test_block_rows_rule():
    # dW of 784-256-128-10 at batch 64: 48-row blocks (48 * 256 * 64 <= 100**3)
    assert blas.block_rows(T, N, 784, 256, 64) == 48
    assert blas.block_rows(N, N, 200, 100, 64) == 144
    assert blas.block_rows(N, N, 784, 256, 32) == 112
    # B transposed (OpenBLAS's TN kernel after its swap): whole
    assert blas.block_rows(N, T, 784, 256, 64) == 0
    # small enough already, or blocks under MIN_BLOCK_ROWS rows: whole
    assert blas.block_rows(N, N, 100, 100, 64) == 0
    assert blas.block_rows(T, N, 784, 256, 128) == 0  # 16-row blocks
    assert blas.block_rows(N, N, 64, 256, 784) == 0
    assert blas.block_rows(N, N, 48, 10_000, 100) == 0
    for m, n, k in [(784, 256, 64), (1000, 77, 33), (300, 100, 100), (5000, 9, 7)]:
        rows = blas.block_rows(N, N, m, n, k)
        assert rows == 0 or (rows % 16 == 0 and blas.MIN_BLOCK_ROWS <= rows < m
                             and rows * n * k <= blas.SMALL_MNK)


@pytest.mark.skipif(not blas.SMALL_BLOCKS, reason="OpenBLAS without small kernels here")
def test_openblas_permits_the_planned_blocks():
    """The compiled plan asks OpenBLAS's own permit function with its
    column-major arguments: it agrees with the rule where OpenBLAS takes
    such blocks (a swapped argument would make it refuse: 0)."""
    for dt in ("float32", "float64"):
        assert blas.planned_rows(dt, T, N, 784, 256, 64) == 48
        assert blas.planned_rows(dt, N, N, 200, 100, 64) == 144
        assert blas.planned_rows(dt, N, T, 784, 256, 64) == 0
        assert blas.planned_rows(dt, N, N, 100, 100, 64) == 0
        # the IR's rule is block_rows where OpenBLAS permits such blocks
        for ta in (N, T):
            for m in (49, 100, 200, 784, 2000):
                for n in (10, 64, 100, 256, 1000):
                    for k in (16, 32, 64, 200):
                        rule = blas.block_rows(ta, N, m, n, k)
                        assert blas.planned_rows(dt, ta, N, m, n, k) in (rule, 0)
                        if rule and n * rule * k <= blas.SMALL_MNK:
                            assert blas.planned_rows(dt, ta, N, m, n, k) == rule


@njit
def _gemm(ta, tb, m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc):
    blas.gemm(ta, tb, m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc)


SHAPES = [(T, N, 784, 256, 64), (N, N, 200, 100, 64), (T, N, 397, 256, 64),
          (N, N, 250, 100, 64), (N, N, 150, 100, 100), (T, T, 300, 100, 64),
          (N, T, 200, 100, 64)]


@pytest.mark.parametrize("one_thread", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_products_in_blocks_against_numpy(shape, dtype, one_thread):
    """C = op(A) op(B) for blocks inside larger buffers (offsets, leading
    dimensions wider than the block), as network.backward_block passes a
    thread's rows of W: the product of NumPy, and nothing written outside
    C's block."""
    ta, tb, m, n, k = shape
    rng = np.random.default_rng(m + n + k)
    a = rng.standard_normal((m + 5, k + 3) if ta == N else (k + 3, m + 5)).astype(dtype)
    b = rng.standard_normal((k + 2, n + 4) if tb == N else (n + 4, k + 4)).astype(dtype)
    c = np.full((m + 1, n + 7), np.nan, dtype)
    lda, ldb, ldc = a.shape[1], b.shape[1], c.shape[1]
    if one_thread:
        with BLAS_SINGLE:
            _gemm(ta, tb, m, n, k, a, lda + 2, lda, b, ldb + 3, ldb, c, ldc + 4, ldc)
    else:
        _gemm(ta, tb, m, n, k, a, lda + 2, lda, b, ldb + 3, ldb, c, ldc + 4, ldc)
    op_a = a[1:1 + m, 2:2 + k] if ta == N else a[1:1 + k, 2:2 + m].T
    op_b = b[1:1 + k, 3:3 + n] if tb == N else b[1:1 + n, 3:3 + k].T
    ref = op_a.astype(np.float64) @ op_b.astype(np.float64)
    got = c[1:1 + m, 4:4 + n]
    tol = (1e-5 if dtype == np.float32 else 1e-13) * np.abs(ref).max()
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol)
    outside = c.copy()
    outside[1:1 + m, 4:4 + n] = np.nan
    assert np.isnan(outside).all()


@pytest.mark.parametrize("env", [{"FASTBP_SMALL_BLOCKS": "0"}, {"OPENBLAS_CORETYPE": "Haswell"},
                                 {"OPENBLAS_CORETYPE": "Zen"}])
def test_small_blocks_off(env):
    """Off when asked, and on cores whose OpenBLAS kernels have no small
    path (Haswell's permit refuses every product; Zen has none): there the
    kernels call OpenBLAS directly, as before."""
    out = subprocess.run(
        [sys.executable, "-c", "from fastbp._kernels import blas; print(blas.SMALL_BLOCKS)"],
        env=dict(os.environ, **env), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
