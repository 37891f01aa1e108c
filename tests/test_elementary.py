"""fastbp's own exp, tanh and sigmoid (fastbp/_kernels/elementary.py).

Error in ulp of the result's dtype, over a dense sweep and the extremes,
against float64 NumPy (for float32) and ``np.longdouble`` (x87 extended,
64-bit mantissa, for float64).  Measured maximum, with 1 million points per
sweep (``FASTBP_ULP_POINTS=1000000 python -m pytest -s tests/test_elementary.py
-k ulp`` prints them; the default run uses 200 000), the larger of two
runs with different point sets:

=========  =======  =======
function   float32  float64
=========  =======  =======
exp        0.96     1.67
tanh       1.29     1.35
sigmoid    2.23     2.53
=========  =======  =======

The tests allow 4 ulp.  They also check that the activation loops really
vectorise: the assembly holds packed (``ps``/``pd``) divisions and
the LLVM IR no call to exp/tanh (C library or LLVM intrinsic).
"""

import os
import re

import numpy as np
import pytest
from numba import njit

from fastbp._kernels.activations import TANH, activate
from fastbp._kernels.config import JIT
from fastbp._kernels.elementary import exp, sigmoid, tanh

MAX_ULP = 4.0


@njit
def _apply(x, out, which):
    if which == 0:
        for i in range(x.size):
            out[i] = exp(x[i])
    elif which == 1:
        for i in range(x.size):
            out[i] = tanh(x[i])
    else:
        for i in range(x.size):
            out[i] = sigmoid(x[i])


def _reference(x, which):
    """Naive reference in a wider type."""
    wide = np.float64 if x.dtype == np.float32 else np.longdouble
    xw = x.astype(wide)
    with np.errstate(over="ignore"):
        if which == 0:
            return np.exp(xw)
        if which == 1:
            return np.tanh(xw)
        e = np.exp(-np.abs(xw))
        return np.where(xw >= 0, 1 / (1 + e), e / (1 + e))


def _ulp_error(y, ref):
    """|y - ref| in units of the last place of ref rounded to y's dtype;
    inf where a non-finite result disagrees with the rounded reference."""
    with np.errstate(over="ignore"):
        rounded = ref.astype(y.dtype)
    finite = np.isfinite(rounded)
    err = np.zeros(y.shape)
    spacing = np.spacing(np.abs(rounded[finite])).astype(ref.dtype)
    err[finite] = np.abs(y[finite].astype(ref.dtype) - ref[finite]) / spacing
    same = (y == rounded) | (np.isnan(y) & np.isnan(rounded))
    err[~finite & ~same] = np.inf
    return err


def _points(dtype, lo, hi, n):
    fi = np.finfo(dtype)
    rng = np.random.default_rng(0)
    special = [0.0, -0.0, fi.tiny, -fi.tiny, fi.smallest_subnormal, -fi.smallest_subnormal,
               fi.max, -fi.max, np.inf, -np.inf, 0.625, -0.625, 2.0**-12, -(2.0**-27),
               88.72, 88.73, -87.33, -103.97, -104.0, 709.78, 709.79, -708.4, -745.1, -745.2]
    with np.errstate(over="ignore"):
        pts = np.concatenate([
            np.linspace(lo, hi, n), rng.uniform(lo, hi, n),
            np.geomspace(fi.tiny, 20, n // 4), -np.geomspace(fi.tiny, 20, n // 4),
            np.array(special),
        ]).astype(dtype)
    return pts


RANGES = {
    # (function index, name): float32 range, float64 range
    (0, "exp"): ((-110.0, 90.0), (-750.0, 712.0)),
    (1, "tanh"): ((-20.0, 20.0), (-40.0, 40.0)),
    (2, "sigmoid"): ((-110.0, 110.0), (-750.0, 750.0)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("func", list(RANGES))
def test_max_error_within_4_ulp(dtype, func):
    which, name = func
    lo, hi = RANGES[func][dtype == np.float64]
    x = _points(dtype, lo, hi, int(os.environ.get("FASTBP_ULP_POINTS", "200000")))
    y = np.empty_like(x)
    _apply(x, y, which)
    err = _ulp_error(y, _reference(x, which))
    worst = int(np.argmax(err))
    print(f"{name} {dtype.__name__}: max {err[worst]:.3f} ulp at x={x[worst]!r} ({x.size} points)")
    assert err[worst] <= MAX_ULP, f"{name} {dtype.__name__}: {err[worst]} ulp at x={x[worst]!r}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(dtype):
    t = dtype
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30], dtype)
    out = np.empty((3, x.size), dtype)
    for which in range(3):
        _apply(x, out[which], which)
    e, th, s = out
    assert np.isnan(e[0]) and np.isnan(th[0]) and np.isnan(s[0])
    assert e[1] == np.inf and e[2] == 0 and e[3] == 1 and e[4] == 1
    assert e[5] == np.inf and e[6] == 0
    assert th[1] == 1 and th[2] == -1 and th[5] == 1 and th[6] == -1
    assert th[3] == 0 and not np.signbit(th[3])
    assert th[4] == 0 and np.signbit(th[4])  # tanh(-0) = -0
    assert s[1] == 1 and s[2] == 0 and s[3] == t(0.5) and s[5] == 1 and s[6] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_keeps_relative_precision_far_left(dtype):
    # where exp(x) is a normal float, sigmoid(x) ~ exp(x) to full precision
    fi = np.finfo(dtype)
    lo = np.log(fi.tiny) + 1
    x = np.linspace(lo, -30, 5001).astype(dtype)
    y = np.empty_like(x)
    _apply(x, y, 2)
    assert np.all(y >= fi.tiny)
    assert _ulp_error(y, _reference(x, 2)).max() <= MAX_ULP


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradual_underflow_of_exp(dtype):
    # results in the subnormal range are off by at most one subnormal step
    fi = np.finfo(dtype)
    x = np.linspace(np.log(fi.smallest_subnormal), np.log(fi.tiny), 3001).astype(dtype)
    y = np.empty_like(x)
    _apply(x, y, 0)
    ref = _reference(x, 0)
    step = float(fi.smallest_subnormal)
    assert np.max(np.abs(y.astype(ref.dtype) - ref)) <= step


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_loops_vectorise(dtype):
    # a fresh, uncached copy of the kernel: a cache-loaded one has no assembly
    fresh = njit(**dict(JIT, cache=False))(activate.py_func)
    a = np.linspace(-3, 3, 64, dtype=dtype).reshape(4, 16)
    fresh(a, TANH)
    asm = fresh.inspect_asm(fresh.signatures[0])
    suffix = "ps" if dtype == np.float32 else "pd"
    # only tanh and sigmoid divide: a packed division means their loops vectorised
    assert re.search(rf"\bv?div{suffix}\s+[^\n]*%[xyz]mm", asm), "no packed division"
    called = set(re.findall(r"call [^@]*@([\w.]+)", fresh.inspect_llvm(fresh.signatures[0])))
    assert not {n for n in called if "tanh" in n or "exp" in n}, called
