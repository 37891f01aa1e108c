"""Issue 17's first step, measured and not kept: a register-tiled small GEMM
against OpenBLAS, product by product.

``small_gemm`` below computes C = op(A) @ op(B) from one register tile
written as LLVM vector IR (``tile``): an MR x (NV * V) block of C held in
MR * NV vector accumulators over the k products, each a broadcast element
of A times a vector row of B (``llvm.fma``); B's partial and transposed
panels and A's last rows are copied into zero-padded tiles.  fastbp does
not use it: on Zen 3 (AVX2) it matched OpenBLAS on the large products of
tiny networks and lost on the narrow ones (docs/performance.md, "Issue 17:
a register tile, measured").

This script times it from compiled loops (no Python per call) against
OpenBLAS as the kernels call it (``_kernels.blas.gemm``), interleaved round
by round, after checking it against NumPy, and prints GFLOP/s (medians)
and the ratio of times.  The shapes are those of the products of a training
step: NN (forward X @ W), TN (dW = H^T dA), NT (dH = dA W^T).

    OPENBLAS_NUM_THREADS=1 python benchmarks/small_gemm.py [--rounds 7]
        [--dtype float32] [--shapes "NN:32x128x64,TN:64x128x32"]
"""

import argparse
import time

import llvmlite.binding as ll
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array

from fastbp._kernels.config import JIT

# compiled per run (a benchmark script, not a kernel of the package)
JIT = dict(JIT, cache=False)

NO_TRANS = 111  # CBLAS's values, as blas.py
TRANS = 112


def _vector_bytes():
    """Bytes of the widest vector register of this CPU: 64 with AVX-512,
    else 32 (AVX2; on older CPUs LLVM splits a 32-byte vector in two)."""
    return 64 if ll.get_host_cpu_features().get("avx512f", False) else 32


#: the CPU's vector width in bytes, chosen at import (Numba's on-disk cache
#: keys machine code by CPU name and features, so a cache made on the other
#: kind of machine is not loaded)
VECTOR_BYTES = _vector_bytes()
#: rows of a tile (MR) and vectors per tile row (NV): MR * NV accumulators
#: plus NV rows of B and one broadcast must fit the vector registers, and
#: at least 8 accumulators hide the 4-cycle latency of two FMA pipes.
#: AVX2 (16 registers): 6 x 2 = 12 accumulators, measured best of 6x2, 4x3,
#: 4x2 and 8x1 on Zen 3 (docs/performance.md).  AVX-512 (32 registers):
#: 8 x 2 = 16 accumulators of 16 float32 (not measured: no such machine).
TILE_ROWS, TILE_VECTORS = (6, 2) if VECTOR_BYTES == 32 else (8, 2)


def lanes(itemsize):
    """Elements of one vector register for an element size in bytes."""
    return VECTOR_BYTES // itemsize


@intrinsic
def tile(typingctx, k, a, a_rs, a_cs, b, b_rs, c, c_rs, zero):
    """C[0:MR, 0:NR] = A[0:MR, 0:k] @ B[0:k, 0:NR] (NR = NV * V).

    ``a``, ``b`` and ``c`` are addresses (int64) of elements of ``zero``'s
    float type; A[r, p] is at ``a + (r * a_rs + p * a_cs)`` elements, B[p, j]
    at ``b + p * b_rs + j``, C[r, j] at ``c + r * c_rs + j``.  Requires k >= 1
    and every addressed element inside its buffer."""
    if not isinstance(zero, types.Float):
        return None
    MR, NV = TILE_ROWS, TILE_VECTORS
    V = lanes(zero.bitwidth // 8)
    sig = types.void(k, a, a_rs, a_cs, b, b_rs, c, c_rs, zero)

    def codegen(context, builder, sig, args):
        k_, a_, a_rs_, a_cs_, b_, b_rs_, c_, c_rs_, _ = args
        fty = context.get_value_type(sig.args[8])
        vty = ir.VectorType(fty, V)
        size = zero.bitwidth // 8
        i64, i32 = ir.IntType(64), ir.IntType(32)
        fptr = fty.as_pointer()
        ap, bp, cp = (builder.inttoptr(x, fptr) for x in (a_, b_, c_))
        rows = [builder.gep(ap, [builder.mul(a_rs_, ir.Constant(i64, r))]) for r in range(MR)]
        # accumulators as stack slots of the entry block: LLVM's mem2reg keeps
        # them in registers (checked in the assembly: tests/test_tiles.py)
        accs = [[cgutils.alloca_once_value(builder, ir.Constant(vty, None)) for _ in range(NV)]
                for _ in range(MR)]
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.v{V}f{size * 8}")
        splat = ir.Constant(ir.VectorType(i32, V), [0] * V)
        undef = ir.Constant(vty, ir.Undefined)

        def vector_at(ptr, j):
            ptr = builder.bitcast(builder.gep(ptr, [ir.Constant(i64, j * V)]), vty.as_pointer())
            return ptr

        with cgutils.for_range(builder, k_) as loop:
            p = loop.index
            brow = builder.gep(bp, [builder.mul(p, b_rs_)])
            bv = [builder.load(vector_at(brow, j), align=size) for j in range(NV)]
            pa = builder.mul(p, a_cs_)
            for r in range(MR):
                s = builder.load(builder.gep(rows[r], [pa]))
                sv = builder.shuffle_vector(
                    builder.insert_element(undef, s, ir.Constant(i32, 0)), undef, splat)
                for j in range(NV):
                    acc = accs[r][j]
                    builder.store(builder.call(fma, [sv, bv[j], builder.load(acc)]), acc)
        for r in range(MR):
            crow = builder.gep(cp, [builder.mul(c_rs_, ir.Constant(i64, r))])
            for j in range(NV):
                builder.store(builder.load(accs[r][j]), vector_at(crow, j), align=size)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def raw_vector(typingctx, addr, n, zero):
    """A 1-D C-contiguous array of n elements of ``zero``'s float type at the
    address ``addr``, owning nothing (valid while the memory is)."""
    if not isinstance(zero, types.Float):
        return None
    ret = types.Array(zero, 1, "C")

    def codegen(context, builder, sig, args):
        fty = context.get_value_type(sig.args[2])
        size = context.get_constant(types.intp, context.get_abi_sizeof(fty))
        out = context.make_array(sig.return_type)(context, builder)
        populate_array(out, data=builder.inttoptr(args[0], fty.as_pointer()), shape=[args[1]],
                       strides=[size], itemsize=size, meminfo=None)
        return out._getvalue()

    return ret(addr, n, zero), codegen


@njit(**JIT)
def small_gemm(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, zero):
    """C = op(A) @ op(B) (row-major, like ``blas.gemm``) from register tiles.

    ``a``, ``b``, ``c`` are the addresses (int64) of the first elements of
    A, B and C, of ``zero``'s float type; ``ta`` / ``tb`` are NO_TRANS or
    TRANS; op(A) is (m, k), op(B) (k, n), C (m, n) with row stride ldc.
    Sizes >= 1.  Allocates one scratch buffer (a panel of B, a tile of rows
    of A and a tile of C)."""
    MR = TILE_ROWS
    scratch = np.full(k * (TILE_VECTORS * 16) + MR * k + MR * TILE_VECTORS * 16, zero)
    size = scratch.itemsize
    NR = TILE_VECTORS * (VECTOR_BYTES // size)
    panel = scratch[:k * NR]
    rows = scratch[k * NR:k * NR + MR * k]
    ctile = scratch[k * NR + MR * k:k * NR + MR * k + MR * NR]
    p_panel = np.int64(panel.ctypes.data)
    p_rows = np.int64(rows.ctypes.data)
    p_ctile = np.int64(ctile.ctypes.data)
    if ta == NO_TRANS:
        a_rs, a_cs = lda, 1
    else:
        a_rs, a_cs = 1, lda
    A = raw_vector(a, (m - 1) * a_rs + (k - 1) * a_cs + 1, zero)
    B = raw_vector(b, (k - 1) * ldb + n if tb == NO_TRANS else (n - 1) * ldb + k, zero)
    C = raw_vector(c, (m - 1) * ldc + n, zero)
    m_whole = m - m % MR
    m_left = m - m_whole
    for r in range(m_left):  # the rows past the whole tiles, zero-padded
        for p in range(k):
            rows[r * k + p] = A[(m_whole + r) * a_rs + p * a_cs]
    for j0 in range(0, n, NR):
        nv = min(NR, n - j0)
        if tb == NO_TRANS and nv == NR:
            pb, b_rs = b + j0 * size, ldb
        else:
            if tb == NO_TRANS:
                for p in range(k):
                    for j in range(nv):
                        panel[p * NR + j] = B[p * ldb + j0 + j]
            else:
                for j in range(nv):
                    src = (j0 + j) * ldb
                    for p in range(k):
                        panel[p * NR + j] = B[src + p]
            pb, b_rs = p_panel, NR
        for i0 in range(0, m_whole, MR):
            pa = a + i0 * a_rs * size
            if nv == NR:
                tile(k, pa, a_rs, a_cs, pb, b_rs, c + (i0 * ldc + j0) * size, ldc, zero)
            else:
                tile(k, pa, a_rs, a_cs, pb, b_rs, p_ctile, NR, zero)
                for r in range(MR):
                    for j in range(nv):
                        C[(i0 + r) * ldc + j0 + j] = ctile[r * NR + j]
        if m_left > 0:
            tile(k, p_rows, k, 1, pb, b_rs, p_ctile, NR, zero)
            for r in range(m_left):
                for j in range(nv):
                    C[(m_whole + r) * ldc + j0 + j] = ctile[r * NR + j]


from fastbp._kernels.blas import gemm

DEFAULT = ("NN:32x128x64,NN:32x10x128,TN:128x10x32,NT:32x128x10,TN:64x128x32,"
           "NN:32x64x64,TN:64x64x32,NT:32x64x10,NN:64x256x256,TN:256x256x64,NT:64x256x256,"
           "NN:64x128x784,TN:784x128x64,NN:200x100x64,TN:64x100x200,NT:200x100x10,"
           "NN:200x10x100,TN:100x10x200,NN:32x256x256,TN:256x256x32,NN:16x128x64,"
           "NN:64x512x512,NN:128x128x128")


@njit(nogil=True)
def _loop_tiles(reps, ta, tb, m, n, k, a, lda, b, ldb, c, ldc):
    z = c.dtype.type(0)
    for _ in range(reps):
        small_gemm(ta, tb, m, n, k, np.int64(a.ctypes.data), lda, np.int64(b.ctypes.data),
                   ldb, np.int64(c.ctypes.data), ldc, z)


@njit(nogil=True)
def _loop_blas(reps, ta, tb, m, n, k, a, lda, b, ldb, c, ldc):
    for _ in range(reps):
        gemm(ta, tb, m, n, k, a, 0, lda, b, 0, ldb, c, 0, ldc)


def parse(shapes):
    out = []
    for item in shapes.split(","):
        kind, dims = item.split(":")
        m, n, k = (int(x) for x in dims.split("x"))
        out.append((NO_TRANS if kind[0] == "N" else TRANS,
                    NO_TRANS if kind[1] == "N" else TRANS, m, n, k, kind))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--shapes", default=DEFAULT)
    ap.add_argument("--seconds", type=float, default=0.02, help="per timed sample")
    args = ap.parse_args()
    dt = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    print(f"tile {TILE_ROWS} x {TILE_VECTORS} vectors of {VECTOR_BYTES} bytes, {args.dtype}")
    print(f"{'product':<18}{'tiles GF':>10}{'blas GF':>10}{'tiles/blas':>12}")
    for ta, tb, m, n, k, kind in parse(args.shapes):
        A = rng.standard_normal((m, k) if ta == NO_TRANS else (k, m)).astype(dt)
        B = rng.standard_normal((k, n) if tb == NO_TRANS else (n, k)).astype(dt)
        C = np.empty((m, n), dt)
        lda, ldb = A.shape[1], B.shape[1]
        _loop_tiles(1, ta, tb, m, n, k, A, lda, B, ldb, C, n)
        ref = (A if ta == NO_TRANS else A.T).astype(np.float64) @ (
            B if tb == NO_TRANS else B.T).astype(np.float64)
        err = np.abs(C - ref).max() / np.abs(ref).max()
        assert err < (1e-5 if dt == np.float32 else 1e-13), err
        _loop_blas(1, ta, tb, m, n, k, A, lda, B, ldb, C, n)
        t = time.perf_counter()
        _loop_blas(10, ta, tb, m, n, k, A, lda, B, ldb, C, n)
        reps = max(1, int(args.seconds / ((time.perf_counter() - t) / 10)))
        times = {"tiles": [], "blas": []}
        for _ in range(args.rounds):
            for name, f in (("tiles", _loop_tiles), ("blas", _loop_blas)):
                t = time.perf_counter()
                f(reps, ta, tb, m, n, k, A, lda, B, ldb, C, n)
                times[name].append((time.perf_counter() - t) / reps)
        med = {key: float(np.median(v)) for key, v in times.items()}
        gf = {key: 2.0 * m * n * k / v / 1e9 for key, v in med.items()}
        print(f"{kind} {m}x{n}x{k:<10}{gf['tiles']:>8.1f}{gf['blas']:>10.1f}"
              f"{med['tiles'] / med['blas']:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
