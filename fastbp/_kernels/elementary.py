"""exp, tanh and sigmoid for float32 and float64 that vectorise.

The C library's ``expf``/``tanh`` are opaque calls, so a loop that calls
them runs one element at a time.  The functions here use only ``+ - * /``,
comparisons with selects, and one integer operation (building ``2**n`` from
its exponent bits, ``_pow2``), so LLVM turns a loop over them into SIMD code
under fastbp's fastmath set ``{"nsz"}`` alone: no reassociation or fused
multiply-add, hence the same bits wherever a kernel is compiled.

Use them inside ``@njit`` kernels as ``exp(x)``, ``tanh(x)``,
``sigmoid(x)`` on a float32 or float64 scalar; the float32 or float64
version is picked when the caller is compiled and is inlined there.  Called
from Python they fall back to NumPy.

Method (constants from Stephen L. Moshier's Cephes library, ``expf.c``,
``exp.c``, ``tanhf.c``, ``tanh.c``; public domain):

* exp: ``n = round(x / ln 2)`` by adding and subtracting ``1.5 * 2**p``
  (p = 23 or 52: the sum rounds to an integer), ``r = x - n ln2`` with
  ln 2 split Cody-Waite style into a short high part (``n * hi`` is exact)
  and a low part, so ``|r| <= ln2/2`` to a few ulp;  ``exp(r)`` by Cephes'
  degree-7 polynomial (float32) or its (2,3) Pade form
  ``1 + 2 r P(r^2) / (Q(r^2) - r P(r^2))`` (float64).  The result is
  ``exp(r) * 2**n1 * 2**n2`` with ``n1`` clamped to the normal exponent
  range, so results that overflow give inf and those in the subnormal range
  are rounded once (gradual underflow).  x is clamped first so huge and
  infinite inputs give inf or 0; NaN is passed through by a select.
* tanh: for ``|x| < 0.625`` Cephes' odd polynomial (float32, degree 11) or
  rational function (float64) in ``x**2``, which keeps full relative
  precision near 0 (no ``1 - 2/(e+1)`` cancellation); beyond,
  ``1 - 2 / (exp(2|x|) + 1)`` with the sign of x, |x| clamped first to
  9.5 (float32) or 19.5 (float64), beyond which tanh rounds to +-1, so that
  exp needs no overflow handling; ``x`` itself below 2**-12 or 2**-27
  (which also keeps -0); NaN gives NaN.
* sigmoid: ``e = exp(-|x|)`` never overflows; ``1 / (1 + e)`` for x >= 0
  and ``e / (1 + e)`` for x < 0, which keeps full relative precision for
  very negative x down to the subnormal range.

Both sides of every select are computed; there is no branch.  Divisions
go through ``_div`` (a plain IEEE ``fdiv``: Numba's ``/`` tests for a zero
divisor, and that test kept the loops scalar) and selects through
``_where`` (one ``select`` instruction: with Python's conditional
expressions LLVM did not inline tanh into the loop).

Measured maximum error (tests/test_elementary.py, dense sweeps and the
extremes, against float64 NumPy for float32 and against ``np.longdouble``
(x87 64-bit mantissa) for float64): see the table in that file and in
docs/performance.md; every one is at most 4 ulp.
"""

# NaN is found by `x != x` (no call); selects are written with _where.
# ruff: noqa: PLR0124

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload, register_jitable

from .config import FASTMATH


@intrinsic
def _pow2(typingctx, n):
    """2.0**n, same float type as n, for an integer-valued n in the normal
    exponent range (float32: -126..127, float64: -1022..1023): the biased
    exponent shifted into the float's bits."""
    if not isinstance(n, types.Float):
        return None

    def codegen(context, builder, signature, args):
        (v,) = args
        if signature.return_type.bitwidth == 32:
            ity, bias, shift = ir.IntType(32), 127, 23
        else:
            ity, bias, shift = ir.IntType(64), 1023, 52
        i = builder.fptosi(v, ity)
        i = builder.add(i, ity(bias))
        i = builder.shl(i, ity(shift))
        return builder.bitcast(i, v.type)

    return n(n), codegen


@intrinsic
def _div(typingctx, a, b):
    """a / b for two floats of one type, as a plain IEEE division.

    Numba's ``/`` checks for a zero divisor to raise ZeroDivisionError (its
    default error model), and that branch stops the loop from vectorising.
    Here b = 0 gives inf or NaN as IEEE says; the callers never divide by 0.
    """
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        return builder.fdiv(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def _where(typingctx, cond, a, b):
    """``a if cond else b`` as one select instruction: no branch in Numba's
    IR (whose phi nodes broke IR-level inlining) and nothing for LLVM to
    if-convert before it can vectorise."""
    if not (isinstance(cond, types.Boolean) and isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        c = context.cast(builder, args[0], signature.args[0], types.boolean)
        return builder.select(c, args[1], args[2])

    return a(cond, a, b), codegen


f4 = np.float32
f8 = np.float64

# ---- float32 constants (Cephes expf.c, tanhf.c) ----
_F_MAGIC = f4(12582912.0)  # 1.5 * 2**23
_F_LOG2E = f4(1.44269504088896341)
_F_LN2_HI = f4(0.693359375)  # 355/512: n * hi is exact for |n| < 2**15
_F_LN2_LO = f4(-2.12194440e-4)
_F_XMIN = f4(-104.0)  # exp(x) rounds to 0 below about -103.97
_F_XMAX = f4(89.0)  # exp(x) overflows above about 88.72
_F_NLO = f4(-125.0)
_F_NHI = f4(127.0)
_F_E0 = f4(1.9875691500e-4)
_F_E1 = f4(1.3981999507e-3)
_F_E2 = f4(8.3334519073e-3)
_F_E3 = f4(4.1665795894e-2)
_F_E4 = f4(1.6666665459e-1)
_F_E5 = f4(5.0000001201e-1)
_F_T0 = f4(-5.70498872745e-3)
_F_T1 = f4(2.06390887954e-2)
_F_T2 = f4(-5.37397155531e-2)
_F_T3 = f4(1.33314422036e-1)
_F_T4 = f4(-3.33332819422e-1)
_F_ZERO = f4(0.0)
_F_ONE = f4(1.0)
_F_TWO = f4(2.0)
_F_SMALL = f4(0.625)
_F_TINY = f4(2.0**-12)
_F_SAT = f4(9.5)  # 1 - tanh(9.5) = 1.1e-8 < 2**-25, half an ulp below 1

# ---- float64 constants (Cephes exp.c, tanh.c) ----
_D_MAGIC = f8(6755399441055744.0)  # 1.5 * 2**52
_D_LOG2E = f8(1.4426950408889634073599)
_D_LN2_HI = f8(6.93145751953125e-1)  # 22 significant bits: n * hi exact
_D_LN2_LO = f8(1.42860682030941723212e-6)
_D_XMIN = f8(-746.0)  # exp(x) rounds to 0 below about -745.13
_D_XMAX = f8(710.0)  # exp(x) overflows above about 709.78
_D_NLO = f8(-1021.0)
_D_NHI = f8(1023.0)
_D_P0 = f8(1.26177193074810590878e-4)
_D_P1 = f8(3.02994407707441961300e-2)
_D_P2 = f8(9.99999999999999999910e-1)
_D_Q0 = f8(3.00198505138664455042e-6)
_D_Q1 = f8(2.52448340349684104192e-3)
_D_Q2 = f8(2.27265548208155028766e-1)
_D_Q3 = f8(2.00000000000000000009e0)
_D_TP0 = f8(-9.64399179425052238628e-1)
_D_TP1 = f8(-9.92877231001918586564e1)
_D_TP2 = f8(-1.61468768441708447952e3)
_D_TQ0 = f8(1.12811678491632931402e2)
_D_TQ1 = f8(2.23548839060100448583e3)
_D_TQ2 = f8(4.84406305325125486048e3)
_D_ZERO = f8(0.0)
_D_ONE = f8(1.0)
_D_TWO = f8(2.0)
_D_SMALL = f8(0.625)
_D_TINY = f8(2.0**-27)
_D_SAT = f8(19.5)  # 1 - tanh(19.5) = 2.3e-17 < 2**-54, half an ulp below 1


@register_jitable(fastmath=FASTMATH)
def _exp_parts32(xc):
    """(p, n) with exp(xc) = p * 2**n, p in [0.7, 1.42], for a clamped xc."""
    n = (xc * _F_LOG2E + _F_MAGIC) - _F_MAGIC
    r = (xc - n * _F_LN2_HI) - n * _F_LN2_LO
    z = r * r
    p = (((((_F_E0 * r + _F_E1) * r + _F_E2) * r + _F_E3) * r + _F_E4) * r + _F_E5) * z
    return (p + r) + _F_ONE, n


def _exp32(x):
    xc = _where(x < _F_XMIN, _F_XMIN, x)
    xc = _where(xc > _F_XMAX, _F_XMAX, xc)
    p, n = _exp_parts32(xc)
    n1 = _where(n < _F_NLO, _F_NLO, n)
    n1 = _where(n1 > _F_NHI, _F_NHI, n1)
    y = (p * _pow2(n1)) * _pow2(n - n1)
    return _where(x != x, x, y)


@register_jitable(fastmath=FASTMATH)
def _exp_parts64(xc):
    """(p, n) with exp(xc) = p * 2**n, p in [0.7, 1.42], for a clamped xc."""
    n = (xc * _D_LOG2E + _D_MAGIC) - _D_MAGIC
    r = (xc - n * _D_LN2_HI) - n * _D_LN2_LO
    z = r * r
    px = r * ((_D_P0 * z + _D_P1) * z + _D_P2)
    q = ((_D_Q0 * z + _D_Q1) * z + _D_Q2) * z + _D_Q3
    return _D_ONE + _D_TWO * _div(px, q - px), n


def _exp64(x):
    xc = _where(x < _D_XMIN, _D_XMIN, x)
    xc = _where(xc > _D_XMAX, _D_XMAX, xc)
    p, n = _exp_parts64(xc)
    n1 = _where(n < _D_NLO, _D_NLO, n)
    n1 = _where(n1 > _D_NHI, _D_NHI, n1)
    y = (p * _pow2(n1)) * _pow2(n - n1)
    return _where(x != x, x, y)


def _tanh32(x):
    ax = _where(x < _F_ZERO, -x, x)
    z = x * x
    small = ((((_F_T0 * z + _F_T1) * z + _F_T2) * z + _F_T3) * z + _F_T4) * z * x + x
    # exp(2|x|) on |x| clamped to 9.5, where tanh rounds to 1: no overflow
    # and no underflow, so a single 2**n and no NaN test inside
    a = _where(ax < _F_SAT, ax, _F_SAT)
    p, n = _exp_parts32(a + a)
    big = _F_ONE - _div(_F_TWO, p * _pow2(n) + _F_ONE)
    big = _where(x < _F_ZERO, -big, big)
    y = _where(ax < _F_SMALL, small, big)
    # tanh(x) rounds to x below 2**-12; the select also keeps -0 as -0
    y = _where(ax < _F_TINY, x, y)
    return _where(x != x, x, y)


def _tanh64(x):
    ax = _where(x < _D_ZERO, -x, x)
    z = x * x
    num = (_D_TP0 * z + _D_TP1) * z + _D_TP2
    den = ((z + _D_TQ0) * z + _D_TQ1) * z + _D_TQ2
    small = x + x * _div(z * num, den)
    # exp(2|x|) on |x| clamped to 19.5, where tanh rounds to 1: no overflow
    # and no underflow, so a single 2**n and no NaN test inside
    a = _where(ax < _D_SAT, ax, _D_SAT)
    p, n = _exp_parts64(a + a)
    big = _D_ONE - _div(_D_TWO, p * _pow2(n) + _D_ONE)
    big = _where(x < _D_ZERO, -big, big)
    y = _where(ax < _D_SMALL, small, big)
    # tanh(x) rounds to x below 2**-27; the select also keeps -0 as -0
    y = _where(ax < _D_TINY, x, y)
    return _where(x != x, x, y)


def _sigmoid32(x):
    # e = exp(-|x|): the argument is <= 0, so only the lower clamp and the
    # lower end of the 2**n split are needed; NaN is restored at the end
    m = _where(x > _F_ZERO, -x, x)
    m = _where(m < _F_XMIN, _F_XMIN, m)
    p, n = _exp_parts32(m)
    n1 = _where(n < _F_NLO, _F_NLO, n)
    e = (p * _pow2(n1)) * _pow2(n - n1)
    y = _div(_where(x >= _F_ZERO, _F_ONE, e), _F_ONE + e)
    return _where(x != x, x, y)


def _sigmoid64(x):
    # e = exp(-|x|): the argument is <= 0, so only the lower clamp and the
    # lower end of the 2**n split are needed; NaN is restored at the end
    m = _where(x > _D_ZERO, -x, x)
    m = _where(m < _D_XMIN, _D_XMIN, m)
    p, n = _exp_parts64(m)
    n1 = _where(n < _D_NLO, _D_NLO, n)
    e = (p * _pow2(n1)) * _pow2(n - n1)
    y = _div(_where(x >= _D_ZERO, _D_ONE, e), _D_ONE + e)
    return _where(x != x, x, y)


# The public names: NumPy in Python, the versions above in compiled code.


def exp(x):
    """e**x; float32 or float64 scalar (see the module docstring)."""
    return np.exp(x)


def tanh(x):
    """tanh(x); float32 or float64 scalar (see the module docstring)."""
    return np.tanh(x)


def sigmoid(x):
    """1 / (1 + e**-x) without overflow; float32 or float64 scalar."""
    e = np.exp(-np.abs(x))
    return 1 / (1 + e) if x >= 0 else e / (1 + e)


_OPTS = {"fastmath": FASTMATH}


def _pick(f32, f64):
    def typer(x):
        if x == types.float32:
            return f32
        if x == types.float64:
            return f64
        return None
    return typer


# Each is compiled once per float type and LLVM inlines it into the calling
# loop, which then vectorises.  (Numba-IR inlining, inline="always", gave the
# same machine code but tripled the compile time of bias_activation.)
overload(exp, jit_options=_OPTS)(_pick(_exp32, _exp64))
overload(tanh, jit_options=_OPTS)(_pick(_tanh32, _tanh64))
overload(sigmoid, jit_options=_OPTS)(_pick(_sigmoid32, _sigmoid64))
