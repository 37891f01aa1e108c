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


#: OpenBLAS takes its small-matrix kernels, which neither pack the operands
#: nor clear C first, for products of m * n * k up to 100**3 (its
#: ``kernel/x86_64/sgemm_small_kernel_permit_skylakex.c``, 0.3.31; the
#: wrapper asks the permit function itself before it splits)
SMALL_MNK = 1_000_000
#: a product is split by rows of C only into blocks of at least this many
#: rows (multiples of 16): smaller blocks lost to the whole product
#: (NN 128x256x100 float32: 32-row blocks 111 GFLOP/s, whole 122;
#: docs/performance.md, "Issue 17: mid-size products in OpenBLAS's small kernels")
MIN_BLOCK_ROWS = 48


def block_rows(ta, tb, m, n, k):
    """Rows of C per block when the row-major product op(A) (m, k) @ op(B)
    (k, n) is cut into blocks that fit OpenBLAS's small kernels, or 0 to
    leave it whole: only with B not transposed (OpenBLAS's NN and NT
    kernels, after its swap of a row-major call; its TN kernel is not
    permitted at these sizes), only above SMALL_MNK, and only into blocks
    of MIN_BLOCK_ROWS rows or more."""
    if tb != NO_TRANS or m <= MIN_BLOCK_ROWS or m * n * k <= SMALL_MNK:
        return 0
    rows = SMALL_MNK // (n * k) // 16 * 16
    return rows if MIN_BLOCK_ROWS <= rows < m else 0


def _blocks_module():
    """LLVM IR of the wrappers that stand for cblas_?gemm where OpenBLAS has
    small kernels (``fastbp_?gemm_blocks``) and of their plans
    (``fastbp_?gemm_rows``); see ``_register``.

    ``fastbp_?gemm_rows(ta, tb, m, n, k, alpha, beta)``: ``block_rows``
    (written again in IR; tests/test_small_blocks.py checks that the two
    agree), then OpenBLAS's own permit for such a block (0 if it refuses: the
    product stays whole).  OpenBLAS swaps a row-major call into a
    column-major one: transa from tb, transb from ta, M = n, N = m.
    ``fastbp_?gemm_blocks``: cblas_?gemm's arguments (pointers as int64);
    with one OpenBLAS thread and a plan of r rows, the product as blocks
    of r rows of C (and of op(A)), else the whole call.

    Written as IR and compiled by llvmlite, not by Numba: a Numba cfunc
    compiled in 0.7 s of CPU on a cold start and made every import of
    fastbp start Numba's compiler (0.4 -> 0.8 s), where this takes a few
    milliseconds and nothing is cached."""
    from llvmlite import ir

    i32, i64 = ir.IntType(32), ir.IntType(64)
    mod = ir.Module(name="fastbp_blocks")

    def const(v):
        return ir.Constant(i64, v)

    for t, fty, size in (("s", ir.FloatType(), 4), ("d", ir.DoubleType(), 8)):
        gemm_ty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, fty, i64, i64,
                                                  i64, i64, fty, i64, i64])
        raw = ir.Function(mod, gemm_ty, f"fastbp_openblas_{t}gemm64")
        permit = ir.Function(mod, ir.FunctionType(i32, [i32, i32, i64, i64, i64, fty, fty]),
                             f"fastbp_{t}gemm_permit")
        threads = mod.globals.get("fastbp_openblas_threads") or ir.Function(
            mod, ir.FunctionType(i32, []), "fastbp_openblas_threads")

        plan = ir.Function(mod, ir.FunctionType(i64, [i32, i32, i64, i64, i64, fty, fty]),
                           f"fastbp_{t}gemm_rows")
        ta, tb, m, n, k, alpha, beta = plan.args
        b = ir.IRBuilder(plan.append_basic_block("entry"))
        whole = plan.append_basic_block("whole")
        sized = plan.append_basic_block("sized")
        asked = plan.append_basic_block("asked")
        nk = b.mul(n, k)
        big = b.icmp_signed(">", b.mul(m, nk), const(SMALL_MNK))
        ok = b.and_(b.and_(b.icmp_signed("==", tb, ir.Constant(i32, NO_TRANS)),
                           b.icmp_signed(">", m, const(MIN_BLOCK_ROWS))), big)
        b.cbranch(ok, sized, whole)
        b.position_at_end(sized)
        rows = b.mul(b.sdiv(b.sdiv(const(SMALL_MNK), nk), const(16)), const(16))
        fits = b.and_(b.icmp_signed(">=", rows, const(MIN_BLOCK_ROWS)),
                      b.icmp_signed("<", rows, m))
        b.cbranch(fits, asked, whole)
        b.position_at_end(asked)
        transb = b.zext(b.icmp_signed("==", ta, ir.Constant(i32, TRANS)), i32)
        yes = b.call(permit, [ir.Constant(i32, 0), transb, n, rows, k, alpha, beta])
        b.ret(b.select(b.icmp_signed("!=", yes, ir.Constant(i32, 0)), rows, const(0)))
        b.position_at_end(whole)
        b.ret(const(0))

        blocks = ir.Function(mod, gemm_ty, f"fastbp_{t}gemm_blocks")
        (order, ta, tb, m, n, k, alpha, a, lda, bb, ldb, beta, c, ldc) = blocks.args
        b = ir.IRBuilder(blocks.append_basic_block("entry"))
        check = blocks.append_basic_block("check")
        split = blocks.append_basic_block("split")
        loop = blocks.append_basic_block("loop")
        done = blocks.append_basic_block("done")
        whole = blocks.append_basic_block("whole")
        one = b.and_(b.icmp_signed("==", order, ir.Constant(i32, ROW_MAJOR)),
                     b.icmp_signed("==", b.call(threads, []), ir.Constant(i32, 1)))
        b.cbranch(one, check, whole)
        b.position_at_end(check)
        rows = b.call(plan, [ta, tb, m, n, k, alpha, beta])
        b.cbranch(b.icmp_signed(">", rows, const(0)), split, whole)
        b.position_at_end(split)
        # op(A)'s rows: rows of A (lda apart), or columns of a transposed A
        a_step = b.select(b.icmp_signed("==", ta, ir.Constant(i32, NO_TRANS)),
                          b.mul(lda, const(size)), const(size))
        b.branch(loop)
        b.position_at_end(loop)
        i0 = b.phi(i64)
        i0.add_incoming(const(0), split)
        left = b.sub(m, i0)
        cnt = b.select(b.icmp_signed("<", left, rows), left, rows)
        b.call(raw, [order, ta, tb, cnt, n, k, alpha, b.add(a, b.mul(i0, a_step)), lda, bb,
                     ldb, beta, b.add(c, b.mul(b.mul(i0, ldc), const(size))), ldc])
        nxt = b.add(i0, rows)
        i0.add_incoming(nxt, loop)
        b.cbranch(b.icmp_signed("<", nxt, m), loop, done)
        b.position_at_end(done)
        b.ret_void()
        b.position_at_end(whole)
        b.call(raw, [order, ta, tb, m, n, k, alpha, a, lda, bb, ldb, beta, c, ldc])
        b.ret_void()
    return mod


def _compile_blocks():
    """(engine, {name: address}) of ``_blocks_module`` compiled for the
    generic x86-64 target (the wrappers only branch and call); the engine
    must stay alive while the addresses are used."""
    ll.initialize_native_target()
    ll.initialize_native_asmprinter()
    mod = ll.parse_assembly(str(_blocks_module()))
    mod.verify()
    machine = ll.Target.from_default_triple().create_target_machine(opt=2)
    engine = ll.create_mcjit_compiler(mod, machine)
    engine.finalize_object()
    names = [f"fastbp_{t}gemm_{w}" for t in "sd" for w in ("rows", "blocks")]
    return engine, {name: engine.get_function_address(name) for name in names}


def _small_kernel_permits(lib):
    """(sgemm, dgemm) addresses of OpenBLAS's small-kernel permit functions
    for the core it runs on, or None where it has no small kernels.

    NumPy's OpenBLAS (built for several cores) exports one permit per
    kernel family, named after the core (``sgemm_small_matrix_permit_SKYLAKEX``);
    a core without such a function (Zen) or whose permit refuses even a
    64 x 64 x 64 product (Haswell's refuses all) has none."""
    try:
        get = lib.scipy_openblas_get_corename64_
        get.restype = ctypes.c_char_p
        core = (get() or b"").decode().upper()
        found = []
        for t, real in (("s", ctypes.c_float), ("d", ctypes.c_double)):
            permit = getattr(lib, f"{t}gemm_small_matrix_permit_{core}")
            permit.restype = ctypes.c_int
            permit.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                               ctypes.c_int64, real, real]
            if permit(0, 0, 64, 64, 64, 1.0, 0.0) == 0:
                return None
            found.append(ctypes.cast(permit, ctypes.c_void_p).value)
        return tuple(found)
    except (AttributeError, UnicodeDecodeError):
        return None


def _register():
    global LIBRARY, SMALL_BLOCKS, _BLOCKS
    lib = None if os.environ.get("FASTBP_BLAS", "").lower() == "numba" else _numpy_openblas()
    LIBRARY = lib
    SMALL_BLOCKS = False
    if lib is not None:
        s = ctypes.cast(lib.scipy_cblas_sgemm64_, ctypes.c_void_p).value
        d = ctypes.cast(lib.scipy_cblas_dgemm64_, ctypes.c_void_p).value
        backend = "numpy-openblas"
        permits = (None if os.environ.get("FASTBP_SMALL_BLOCKS", "1") == "0"
                   else _small_kernel_permits(lib))
        if permits is not None:
            ll.add_symbol("fastbp_openblas_sgemm64", s)
            ll.add_symbol("fastbp_openblas_dgemm64", d)
            ll.add_symbol("fastbp_openblas_threads", ctypes.cast(
                lib.scipy_openblas_get_num_threads64_, ctypes.c_void_p).value)
            ll.add_symbol("fastbp_sgemm_permit", permits[0])
            ll.add_symbol("fastbp_dgemm_permit", permits[1])
            _BLOCKS = _compile_blocks()
            s = _BLOCKS[1]["fastbp_sgemm_blocks"]
            d = _BLOCKS[1]["fastbp_dgemm_blocks"]
            SMALL_BLOCKS = True
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
#: True where the kernels' products go through ``fastbp_?gemm_blocks``
#: (_blocks_module: OpenBLAS with small kernels; FASTBP_SMALL_BLOCKS=0 in
#: the environment turns them off)
SMALL_BLOCKS = False
#: the compiled wrappers (engine, {name: address}) while SMALL_BLOCKS
_BLOCKS = None
#: which BLAS the kernels call: "numpy-openblas" or "numba-np.dot"
BACKEND = _register()


def planned_rows(dtype, ta, tb, m, n, k):
    """Rows of C per block that the kernels' ``dtype`` products of these
    arguments (alpha 1, beta 0) run in on one OpenBLAS thread, 0 for the
    whole product (``fastbp_?gemm_rows``); None where SMALL_BLOCKS is off."""
    if not SMALL_BLOCKS:
        return None
    t = "s" if np.dtype(dtype) == np.float32 else "d"
    real = ctypes.c_float if t == "s" else ctypes.c_double
    plan = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int32, ctypes.c_int32, ctypes.c_int64,
                            ctypes.c_int64, ctypes.c_int64, real, real)(
        _BLOCKS[1][f"fastbp_{t}gemm_rows"])
    return plan(ta, tb, m, n, k, 1.0, 0.0)


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

