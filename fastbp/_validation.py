"""Argument checking and coercion at the boundary.

Everything the kernels receive passes through here once: floating dtype
chosen, layout made C-contiguous, shapes and values checked, and every
failure reported as a ValueError or TypeError naming the argument.
"""

import numbers

import numpy as np

from ._kernels.activations import ACTIVATION_CODES

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _describe(x):
    if isinstance(x, np.ndarray):
        return f"array of dtype {x.dtype} and shape {x.shape}"
    return f"{type(x).__name__}"


def as_array(x, name):
    """np.asarray(x) with a clear TypeError for what is not numeric."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like of numbers; got {_describe(x)} ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers (bool, int or float); got dtype {arr.dtype}"
        )
    return arr


def resolve_dtype(dtype, name="dtype"):
    """Return np.dtype float32 or float64 for a dtype-like, or raise."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be 'float32' or 'float64'; got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be 'float32' or 'float64'; got {dt}")
    return dt


def work_dtype(*arrays):
    """The floating dtype NumPy would compute in, limited to float32/float64.

    float32 stays float32, float64 stays float64, integers and bools work in
    float64 as they would in NumPy, float16 is computed in float32.
    """
    kinds = [a for a in arrays if a is not None]
    dt = np.result_type(*kinds) if kinds else np.dtype(np.float64)
    if dt.kind in "biu":
        return np.dtype(np.float64)
    if dt == np.float16:
        return np.dtype(np.float32)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"unsupported floating dtype {dt}; use float32 or float64")
    return dt


def as_float(x, name, ndim, dtype, finite=True):
    """C-contiguous array of `dtype` with `ndim` dims; checks finiteness."""
    arr = as_array(x, name)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got {arr.ndim}-D with shape {arr.shape}")
    if arr.dtype.kind == "f" and arr.dtype not in FLOAT_DTYPES and arr.dtype != np.float16:
        raise TypeError(f"{name} has unsupported dtype {arr.dtype}; use float32 or float64")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if finite and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def check_nonempty(arr, name):
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows); at least one row is needed")


def as_labels(y, name, n_rows, n_classes):
    """int64 labels of shape (n_rows,) in [0, n_classes)."""
    arr = as_array(y, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D integer labels; got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{name} has {arr.shape[0]} labels but there are {n_rows} rows")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer class labels; got non-integer values")
    elif arr.dtype.kind == "b":
        raise TypeError(f"{name} must hold integer class labels; got dtype bool")
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi >= n_classes:
            raise ValueError(
                f"{name} must be in [0, {n_classes - 1}] for {n_classes} classes; "
                f"got values from {lo} to {hi}"
            )
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_activation(name, argname="activation"):
    """Kernel code for an activation name."""
    if not isinstance(name, str):
        raise TypeError(f"{argname} must be a string; got {type(name).__name__}")
    try:
        return ACTIVATION_CODES[name.lower()]
    except KeyError:
        known = ", ".join(sorted(ACTIVATION_CODES))
        raise ValueError(f"unknown {argname} {name!r}; expected one of: {known}") from None


def as_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


def as_real(value, name, minimum=None, maximum=None, min_inclusive=True, max_inclusive=True):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    if minimum is not None and (value < minimum or (value == minimum and not min_inclusive)):
        op = ">=" if min_inclusive else ">"
        raise ValueError(f"{name} must be {op} {minimum}; got {value}")
    if maximum is not None and (value > maximum or (value == maximum and not max_inclusive)):
        op = "<=" if max_inclusive else "<"
        raise ValueError(f"{name} must be {op} {maximum}; got {value}")
    return value
