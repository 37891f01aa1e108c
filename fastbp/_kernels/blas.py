"""Matrix products for the kernels: NumPy's own OpenBLAS, called directly.

Why not ``np.dot(a, b, out)``: inside compiled code Numba routes it to
SciPy's BLAS through a helper that costs about 3 us per call and, with the
OpenBLAS SciPy ships, ran 10-25 % slower than NumPy's on the layer shapes
of the benchmarks (measured side by side: docs/performance.md).  NumPy
wheels bundle an ILP64 OpenBLAS exporting ``scipy_cblas_sgemm64_`` and
``scipy_cblas_dgemm64_``; we register their addresses under fixed symbol
names with LLVM and call them as external functions.  Calls by *name*
survive Numba's on-disk cache (a raw address would be frozen into it).

When NumPy carries no such library (other builds, or FASTBP_BLAS=numba in
the environment) the same names are bound to small compiled fallbacks that
call ``np.dot``, so kernels behave identically either way.
"""

import ctypes
import glob
import os
import warnings

import llvmlite.binding as ll
import numpy as np
from numba import carray, cfunc, njit, types
from numba.core.errors import NumbaPerformanceWarning

from .config import JIT_INLINE

ROW_MAJOR = 101
NO_TRANS = 111
TRANS = 112

def _args(t):
    """Argument types of cblas_?gemm with 64-bit sizes; pointers as intp."""
    return (
        types.int32, types.int32, types.int32, types.int64, types.int64, types.int64,
        t, types.intp, types.int64, types.intp, types.int64, t, types.intp, types.int64,
    )


_sgemm = types.ExternalFunction("fastbp_cblas_sgemm64", types.void(*_args(types.float32)))
_dgemm = types.ExternalFunction("fastbp_cblas_dgemm64", types.void(*_args(types.float64)))


def _numpy_openblas():
    """ctypes handle of NumPy's bundled ILP64 OpenBLAS, or None."""
    root = os.path.dirname(np.__file__)
    patterns = [
        os.path.join(root, os.pardir, "numpy.libs", "libscipy_openblas64_*"),
        os.path.join(root, ".dylibs", "libscipy_openblas64_*"),
    ]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                lib = ctypes.CDLL(os.path.abspath(path))
                lib.scipy_cblas_sgemm64_, lib.scipy_cblas_dgemm64_  # noqa: B018
                return lib
            except (OSError, AttributeError):
                continue
    return None


def _fallback(t):
    """cblas_?gemm (row-major, alpha=1, beta=0) implemented with np.dot;
    used only when NumPy's OpenBLAS is not found."""
    ptr = types.CPointer(t)
    sig = types.void(types.int32, types.int32, types.int32, types.int64, types.int64,
                     types.int64, t, ptr, types.int64, ptr, types.int64, t, ptr, types.int64)

    @cfunc(sig, cache=True)
    def gemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        # blocks of row-major buffers: rows of lda (ldb, ldc) elements
        A = carray(a, (m, lda))[:, :k] if ta == NO_TRANS else carray(a, (k, lda))[:, :m].T
        B = carray(b, (k, ldb))[:, :n] if tb == NO_TRANS else carray(b, (n, ldb))[:, :k].T
        carray(c, (m, ldc))[:, :n] = np.dot(A, B)

    return gemm


def _register():
    global LIBRARY
    lib = None if os.environ.get("FASTBP_BLAS", "").lower() == "numba" else _numpy_openblas()
    LIBRARY = lib
    if lib is not None:
        s = ctypes.cast(lib.scipy_cblas_sgemm64_, ctypes.c_void_p).value
        d = ctypes.cast(lib.scipy_cblas_dgemm64_, ctypes.c_void_p).value
        backend = "numpy-openblas"
    else:
        with warnings.catch_warnings():
            # the fallback's operands are typed 'A' layout; they are contiguous
            warnings.simplefilter("ignore", NumbaPerformanceWarning)
            s = _fallback(types.float32).address
            d = _fallback(types.float64).address
        backend = "numba-np.dot"
    ll.add_symbol("fastbp_cblas_sgemm64", s)
    ll.add_symbol("fastbp_cblas_dgemm64", d)
    return backend


#: ctypes handle of the OpenBLAS the kernels call, or None (the fallback)
LIBRARY = None
#: which BLAS the kernels call: "numpy-openblas" or "numba-np.dot"
BACKEND = _register()


@njit(**JIT_INLINE)
def matmul(a, b, out):
    """out = a @ b without allocating.

    a (m, k), b (k, n), out (m, n), one dtype (float32 or float64).  a and b
    may each be C-contiguous or a transposed view of a C-contiguous array
    (F-contiguous, as ``x.T`` is); out must be C-contiguous.
    """
    m, k = a.shape
    n = b.shape[1]
    # A row-major operand has unit stride along its rows; otherwise it is the
    # transpose of a row-major (k, m) array, which BLAS reads with TRANS.
    if a.strides[1] == a.itemsize:
        ta, lda = NO_TRANS, max(k, 1)
    else:
        ta, lda = TRANS, max(m, 1)
    if b.strides[1] == b.itemsize:
        tb, ldb = NO_TRANS, max(n, 1)
    else:
        tb, ldb = TRANS, max(k, 1)
    if out.itemsize == 4:
        _sgemm(ROW_MAJOR, ta, tb, m, n, k, np.float32(1.0), a.ctypes.data, lda,
               b.ctypes.data, ldb, np.float32(0.0), out.ctypes.data, max(n, 1))
    else:
        _dgemm(ROW_MAJOR, ta, tb, m, n, k, 1.0, a.ctypes.data, lda,
               b.ctypes.data, ldb, 0.0, out.ctypes.data, max(n, 1))


@njit(**JIT_INLINE)
def gemm(ta, tb, m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc):
    """C = op(A) @ op(B) on blocks of C-contiguous buffers, without allocating.

    op(A) is (m, k) and op(B) (k, n); ``ta``/``tb`` are NO_TRANS or TRANS.
    A starts at element ``a_off`` of the buffer ``a`` with leading dimension
    ``lda`` (row-major), likewise B and C: so a column block of a row-major
    matrix is passed as its first element and the full row length.  This
    is how one thread of a training step multiplies only its own columns
    (network.train_step).  Sizes must be >= 1 and the blocks inside the
    buffers: the callers derive them from the checked widths.
    """
    s = a.itemsize
    if c.itemsize == 4:
        _sgemm(ROW_MAJOR, ta, tb, m, n, k, np.float32(1.0), a.ctypes.data + a_off * s, lda,
               b.ctypes.data + b_off * s, ldb, np.float32(0.0), c.ctypes.data + c_off * s,
               ldc)
    else:
        _dgemm(ROW_MAJOR, ta, tb, m, n, k, 1.0, a.ctypes.data + a_off * s, lda,
               b.ctypes.data + b_off * s, ldb, 0.0, c.ctypes.data + c_off * s, ldc)

