"""Argument checking and coercion at the boundary.

Everything the kernels receive passes through here once: floating dtype
chosen, layout made C-contiguous, shapes and values checked, and every
failure reported as a ValueError or TypeError naming the argument.
"""

import itertools
import numbers
import os
import sys
from typing import NamedTuple

import numpy as np

from ._kernels.activations import ACTIVATION_CODES

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _describe(x):
    """Short description of what a caller passed, for error messages."""
    if x is None:
        return "None"
    if isinstance(x, np.ndarray):
        return f"array of dtype {x.dtype} and shape {x.shape}"
    r = repr(x)
    if len(r) > 60:
        r = r[:57] + "..."
    return f"{type(x).__name__} {r}"


_KIND_NAMES = {
    "c": "complex numbers",
    "O": "Python objects",
    "U": "strings",
    "S": "bytes",
    "M": "datetimes",
    "m": "timedeltas",
    "V": "structured/void records",
}


def _native(dt):
    """The dtype in native byte order (big-endian files load as such)."""
    return dt if dt.isnative else dt.newbyteorder("=")


def as_array(x, name):
    """np.asarray(x) with a clear TypeError for what is not real numbers.

    Bool, integer and floating dtypes pass; complex, strings, bytes, Python
    objects, datetimes and records are refused.  Non-native byte order is
    converted to native so the kernels never see it.
    """
    if x is None:
        raise TypeError(f"{name} must be an array of real numbers; got None")
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be an array of real numbers; got {_describe(x)}")
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError, OverflowError) as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be an array of real numbers; got {_describe(x)} "
                        f"({type(exc).__name__}: {exc})") from None
    kind = arr.dtype.kind
    if kind not in "biuf":
        what = _KIND_NAMES.get(kind, f"dtype {arr.dtype}")
        raise TypeError(f"{name} must hold real numbers (bool, int or float); got {what} "
                        f"(dtype {arr.dtype})")
    if kind == "f" and arr.dtype.itemsize not in (2, 4, 8):
        raise TypeError(f"{name} has unsupported dtype {arr.dtype}; use float32 or float64")
    if not arr.dtype.isnative:
        arr = arr.astype(_native(arr.dtype))
    return arr


def resolve_dtype(dtype, name="dtype"):
    """Return np.dtype float32 or float64 for a dtype-like, or raise."""
    if dtype is None or isinstance(dtype, bool):
        raise TypeError(f"{name} must be 'float32' or 'float64'; got {dtype!r}")
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be 'float32' or 'float64'; got {dtype!r}") from None
    dt = _native(dt)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be 'float32' or 'float64'; got {dt}")
    return dt


def work_dtype(*arrays):
    """The floating dtype NumPy would compute in, limited to float32/float64.

    float32 stays float32, float64 stays float64, integers and bools work in
    float64 as they would in NumPy, float16 is computed in float32.
    """
    kinds = [_native(a.dtype) for a in arrays if a is not None]
    dt = np.result_type(*kinds) if kinds else np.dtype(np.float64)
    if dt.kind in "biu":
        return np.dtype(np.float64)
    if dt == np.float16:
        return np.dtype(np.float32)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"unsupported floating dtype {dt}; use float32 or float64")
    return dt


#: bits of ``ndarray.flags.num`` (NPY_ARRAY_C_CONTIGUOUS, NPY_ARRAY_ALIGNED and
#: NPY_ARRAY_WRITEABLE of NumPy's C API): one integer read tells whether an
#: array is C-contiguous, aligned and writeable, where three flag reads cost
#: three times as much on the per-step paths
C_CONTIGUOUS, ALIGNED, WRITEABLE = 0x1, 0x100, 0x400
CAW = C_CONTIGUOUS | ALIGNED | WRITEABLE


#: arrays of at least this many values are checked through sums of their
#: values (``_sums_finite``): from here on they cost less than the mask
#: (0.9x at 256 K-1 M values, whose mask and data fit the caches; 0.64x at
#: 3.2 M, where each call's fresh mask page-faults), below it the ~10 us of
#: setting up the product outweighs it
SUM_CHECK_MIN = 1 << 18
_SUM_WIDTH = 1024
_ONES = {}

#: arrays of at least this many values have their sums split between the
#: threads the training steps use (Numba's thread count): Python threads,
#: each running OpenBLAS's gemv single-threaded on its share of the rows
#: (the GIL is released meanwhile).  On 2 threads: 0.51 -> 0.44 ms for the
#: 3.2 M float32 values of a 4096 x 784 X, 11.5 -> 5.9 ms for MNIST's
#: training set (docs/performance.md, "Issue 16, seventh round"); below, the
#: hand-off costs about what it saves
SPLIT_SUM_MIN = 1 << 22
#: (the pool of the extra threads, its size, the process that made it: a
#: forked child makes its own, since the parent's threads are not in it)
_POOL = [None, 0, 0]


def all_finite(arr):
    """True if no value of the float array ``arr`` is NaN or infinite.

    Small arrays: ``count_nonzero`` of the ``isfinite`` mask, the same
    answer as ``np.isfinite(arr).all()`` at about two thirds of its cost on
    a batch (``all`` is a ufunc reduction; ``count_nonzero`` is not).  Large
    contiguous float32/float64 arrays: ``_sums_finite`` first, the mask only
    where it finds a non-finite sum."""
    if (arr.size >= SUM_CHECK_MIN and arr.dtype in FLOAT_DTYPES and arr.flags.c_contiguous
            and _sums_finite(arr)):
        return True
    return np.count_nonzero(np.isfinite(arr)) == arr.size


def _sums_finite(arr):
    """True if the sums of every ``_SUM_WIDTH`` consecutive values of ``arr``
    (C-contiguous float32 or float64), and its tail values, are finite.

    A sum that holds a NaN or an infinity is not finite (IEEE arithmetic
    keeps them), so True means every value is finite.  False may be an
    overflow of finite values: the caller then checks value by value.  The
    sums are one matrix-vector product with a vector of ones (OpenBLAS's
    gemv, single-threaded so that no BLAS thread spins into the steps that
    follow): 0.49 ms for the 3.2 M float32 values of a 4096 x 784 X where
    the mask took 0.74-0.77 ms, 12 ms for MNIST's training set where it took
    25 ms (docs/performance.md, "Issue 16, fifth round"); from
    SPLIT_SUM_MIN values on, one product per thread on its share of the
    rows."""
    import numba

    from ._threads import BLAS_SINGLE

    flat = arr.reshape(-1)
    rows = flat.size // _SUM_WIDTH
    ones = _ONES.get(arr.dtype)
    if ones is None:
        ones = _ONES[arr.dtype] = np.ones(_SUM_WIDTH, arr.dtype)
    sums = flat[:rows * _SUM_WIDTH].reshape(rows, _SUM_WIDTH)
    nt = min(numba.get_num_threads(), rows) if flat.size >= SPLIT_SUM_MIN else 1
    with BLAS_SINGLE:
        if nt > 1:
            cuts = [rows * t // nt for t in range(nt + 1)]
            futures = [_pool(nt - 1).submit(_rows_finite, sums[cuts[t]:cuts[t + 1]], ones)
                       for t in range(1, nt)]
            ok = _rows_finite(sums[:cuts[1]], ones)
            # every share finished before BLAS_SINGLE ends (and errors raised)
            results = [f.result() for f in futures]
            ok = ok and all(results)
        else:
            ok = _rows_finite(sums, ones)
    tail = flat[rows * _SUM_WIDTH:]
    return ok and bool(np.isfinite(tail).all())


def _rows_finite(block, ones):
    """Whether every row sum of ``block`` is finite."""
    # inf - inf and overflow set the FPU flags that NumPy turns into
    # warnings; errstate is per thread, so each share sets its own
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.isfinite(block @ ones).all())


def _pool(workers):
    """A pool of at least ``workers`` threads, made on first use (and again
    in a forked child, or for more threads)."""
    pool, size, pid = _POOL
    if pool is None or size < workers or pid != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(workers, thread_name_prefix="fastbp-check")
        _POOL[:] = [pool, workers, os.getpid()]
    return pool


def array_state(a):
    """What can change in place on the ndarray ``a`` without it becoming
    another object: shape (``a.shape = ...``, ``a.resize``), dtype
    (``a.dtype = ...``) and flags (writeable, contiguity after ``a.strides =
    ...``, alignment).  Its data pointer cannot change while its size
    stays, so with the object's identity this fingerprint says whether a
    check made on ``a`` still holds for its layout (not for its values)."""
    return a.shape, a.dtype, a.flags.num


def frozen_int64(values):
    """A read-only int64 copy of ``values`` (1-D) that nobody can make
    writeable again: its memory is an immutable ``bytes`` object, so
    ``a.flags.writeable = True`` raises (an array owning its memory would
    allow it, and a cached check of its values would silently go stale)."""
    data = np.ascontiguousarray(values, dtype=np.int64).tobytes()
    for pad in range(8):  # CPython's bytes data are aligned: pad 0 in practice
        a = np.frombuffer(bytes(pad) + data, dtype=np.int64, offset=pad)
        if a.flags.aligned:
            return a
    raise AssertionError("no aligned int64 view of a bytes object")  # pragma: no cover


def _first_bad(arr):
    """Index and value of the first non-finite element (for messages)."""
    idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
    return idx if len(idx) != 1 else idx[0], arr[idx]


def as_float(x, name, ndim, dtype, finite=True):
    """C-contiguous, aligned, writeable array of `dtype` with `ndim` dims.

    Fortran-ordered, strided, negative-stride, unaligned and read-only input
    is copied once here (never written to), so kernels are compiled for one
    layout only.  With ``finite``, NaN and infinity are refused, also where a
    float64 value overflows the float32 it is converted to.
    """
    if (type(x) is np.ndarray and x.dtype == dtype and x.ndim == ndim
            and (x.flags.num & CAW) == CAW):
        # the common case, already as the kernels want it: only the value check
        if finite and x.size and not all_finite(x):
            where, value = _first_bad(x)
            raise ValueError(f"{name} must be finite; got {value} at index {where} "
                             "(NaN or infinity)")
        return x
    arr = as_array(x, name)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got {arr.ndim}-D with shape {arr.shape}")
    if arr.dtype.kind == "f" and arr.dtype not in FLOAT_DTYPES and arr.dtype != np.float16:
        raise TypeError(f"{name} has unsupported dtype {arr.dtype}; use float32 or float64")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.require(arr, dtype=dtype, requirements="CAW")
    if finite and out.size and not all_finite(out):
        if arr.dtype.kind == "f" and all_finite(arr):
            raise ValueError(f"{name} holds values too large for {np.dtype(dtype)} "
                             f"(max {np.finfo(dtype).max:.3g}); got {np.abs(arr).max():.3g}")
        where, value = _first_bad(arr)
        raise ValueError(f"{name} must be finite; got {value} at index {where} "
                         "(NaN or infinity)")
    return out


def check_nonempty(arr, name):
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: expected at least one row; got shape {arr.shape}")


def check_unit_interval(t, name):
    """Refuse values of the float array ``t`` outside [0, 1] (binary targets)."""
    if t.size:
        lo, hi = t.min(), t.max()
        if lo < 0 or hi > 1:
            raise ValueError(f"{name} must hold 0/1 labels or probabilities in [0, 1]; "
                             f"got values from {lo} to {hi}")


def as_sample_weight(sample_weight, n, name="sample_weight"):
    """float64 row weights of shape (n,), non-negative with a positive sum;
    None gives an empty array, which the kernels read as a plain mean."""
    if sample_weight is None:
        return np.empty(0, dtype=np.float64)
    sw = as_float(sample_weight, name, 1, np.float64)
    if sw.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},); got {sw.shape}")
    if (sw < 0).any():
        raise ValueError(f"{name} must be non-negative; got minimum {sw.min()}")
    with np.errstate(over="ignore"):
        total = sw.sum()
    if not total > 0:
        raise ValueError(f"{name} must have a positive sum; got {total}")
    if not np.isfinite(total):
        raise ValueError(f"{name} must have a finite sum (the weights are normalised by "
                         f"it); got {total} (largest weight {sw.max():.3g})")
    return sw


def check_target_rows(t, name):
    """Target rows (n, c), already finite and non-negative, must each have a
    positive, finite sum: a row of zeros carries no target (its loss and
    gradient would be 0), and a sum that overflows is no distribution."""
    with np.errstate(over="ignore"):
        sums = t.sum(axis=1)  # in t's dtype, as the loss kernels sum
    bad = ~((sums > 0) & np.isfinite(sums))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} target rows must each have a positive, finite sum "
                         f"(probabilities); row {i} sums to {sums[i]}")


def as_labels(y, name, n_rows, n_classes):
    """int64 labels of shape (n_rows,) in [0, n_classes)."""
    arr = as_array(y, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D integer labels of shape ({n_rows},); "
                         f"got {arr.ndim}-D with shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{name} must have one label per row: expected {n_rows}, "
                         f"got {arr.shape[0]}")
    if arr.dtype.kind == "b":
        raise TypeError(f"{name} must hold integer class labels; got dtype bool")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if not bad.any():
            bad = arr != np.round(arr)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{name} must hold integer class labels; got {arr[i]} "
                             f"at index {i}")
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi >= n_classes:
            raise ValueError(
                f"{name} must be class labels in [0, {n_classes - 1}] for {n_classes} "
                f"classes; got values from {lo} to {hi}"
            )
    return np.require(arr, dtype=np.int64, requirements="CAW")


def as_activation(name, argname="activation"):
    """Kernel code for an activation name."""
    if not isinstance(name, str):
        known = ", ".join(sorted(ACTIVATION_CODES))
        raise TypeError(f"{argname} must be an activation name ({known}); "
                        f"got {_describe(name)}")
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


def as_bool(value, name):
    """A Python bool from True/False (numpy bools included); no truthiness."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {_describe(value)}")
    return bool(value)


def as_choice(value, name, choices):
    """``value`` if it is one of the strings ``choices``, else a clear error."""
    listed = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {listed}; got {_describe(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def as_seed(seed, name="seed"):
    """None, a non-negative integer or a numpy Generator, as default_rng takes."""
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be None or a non-negative integer; "
                        f"got {_describe(seed)}")
    if seed < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {seed}")
    return int(seed)


def as_widths(widths, name="widths"):
    """Layer widths as a list of ints: at least two, all >= 1.

    Integral floats (``64.0``) are accepted; bools, fractions, NaN, infinity
    and strings are not.
    """
    expected = f"{name} must be a sequence of positive integers [d_in, ..., d_out]"
    if isinstance(widths, (str, bytes, dict)):
        raise TypeError(f"{expected}; got {_describe(widths)}")
    try:
        items = list(widths)
    except TypeError:
        raise TypeError(f"{expected}; got {_describe(widths)}") from None
    out = []
    for i, d in enumerate(items):
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Real):
            raise TypeError(f"{name}[{i}] must be a positive integer; got {_describe(d)}")
        if not isinstance(d, numbers.Integral) and (not np.isfinite(d) or d != int(d)):
            raise ValueError(f"{name}[{i}] must be a positive integer; got {d!r}")
        if d < 1:
            raise ValueError(f"{name}[{i}] must be >= 1; got {d!r}")
        out.append(int(d))
    if len(out) < 2:
        raise ValueError(f"{name} must list at least 2 sizes (inputs, ..., outputs); "
                         f"got {len(out)}")
    n = n_params(out)
    if n > MAX_PARAMS:
        shown = out if len(out) <= 8 else out[:4] + ["..."] + out[-2:]
        raise ValueError(f"{name} {shown} give {n:.3g} parameters; at most {MAX_PARAMS:.3g} "
                         "are supported")
    return out


#: the most parameters a network may have (2**40: far beyond any memory, and
#: every offset the kernels compute stays far inside int64)
MAX_PARAMS = 2**40


def n_params(widths):
    """Parameter count of layer widths, in Python ints (cannot overflow)."""
    w = [int(d) for d in widths]
    return sum(a * b + b for a, b in itertools.pairwise(w))


def _memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**46


#: physical memory of this machine: no single buffer may ask for more
MEMORY_BYTES = _memory_bytes()


#: bytes: where the model's and the step's buffers start (``zeros``).  Why:
#: the threads of a split step each write their own block of a buffer
#: (rows of W and their gradient and state, columns of the activations and
#: deltas, a slice of the bias gradient), and the blocks start at multiples
#: of 16 values (``_kernels.network.BLOCK_ALIGN``).  On NumPy's 16-byte
#: alignment a cache line straddled each boundary and both cores wrote it:
#: once per row of a column block, in ``delta_cols``'s bias sum once per
#: batch row.  Aligned, 784-256-128-10 b64 on 2 threads ran at 1.11-1.16x
#: the floor instead of 1.16-1.22x (docs/performance.md, "Issue 16, eighth
#: round"; ``delta_cols`` alone on two threads with a shared line 4.1 us,
#: without 1.3 us).
BUFFER_ALIGN = 64


def zeros(n_items, dtype, name, what):
    """np.zeros(n_items, dtype) starting at a multiple of BUFFER_ALIGN
    bytes, for a buffer whose size comes from the argument ``name``; a
    ValueError naming it (never MemoryError or OverflowError) when it
    cannot fit in memory.  ``n_items`` is a Python int computed without
    overflow."""
    nbytes = int(n_items) * np.dtype(dtype).itemsize
    message = (f"{name}: {what} needs {int(n_items):,} values ({nbytes / 2**30:.3g} GiB), "
               f"more than this machine's memory ({MEMORY_BYTES / 2**30:.3g} GiB)")
    if nbytes > MEMORY_BYTES:
        raise ValueError(message)
    try:
        raw = np.zeros(nbytes + BUFFER_ALIGN, dtype=np.uint8)
        skip = -raw.ctypes.data % BUFFER_ALIGN
        return raw[skip:skip + nbytes].view(dtype)
    except MemoryError:
        raise ValueError(message.replace("more than this machine's memory",
                                         "which could not be allocated")) from None


def aligned_copy(a):
    """A writeable copy of the 1-d array ``a`` that starts at a multiple of
    BUFFER_ALIGN bytes (``zeros``)."""
    out = zeros(a.size, a.dtype, "array", "a copy")
    out[...] = a
    return out


def realigned(a):
    """``a`` itself where it is a writeable 1-d array on a multiple of
    BUFFER_ALIGN bytes or not an array at all (the structure checks deal
    with that), else ``aligned_copy(a)`` when writeable; a read-only one
    is left to the copy made before training (``MLP._make_writeable``)."""
    if (type(a) is not np.ndarray or a.ndim != 1 or not a.flags.writeable
            or a.ctypes.data % BUFFER_ALIGN == 0):
        return a
    return aligned_copy(a)


def gradient_buffer(params):
    """A zeroed, aligned gradient buffer for the flat parameters ``params``."""
    return zeros(params.size, params.dtype, "widths", "the gradient buffer")


def as_path(path, name="path"):
    """A str path from str/bytes/os.PathLike, with a clear TypeError."""
    if isinstance(path, (str, bytes, os.PathLike)):
        p = os.fspath(path)
        return os.fsdecode(p)
    raise TypeError(f"{name} must be a file path (str or os.PathLike); got {_describe(path)}")


# -- sparse input ------------------------------------------------------------


class SparseRows(NamedTuple):
    """X as CSR rows, checked and in the form the sparse kernels take.

    data (nnz,) of the model dtype, finite; indices (nnz,) int64 columns in
    [0, shape[1]), no duplicates within a row; indptr (n + 1,) int64,
    non-decreasing from 0 to nnz; shape (n, d).
    """

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple


def is_sparse(x):
    """True for a scipy.sparse matrix or array, without importing SciPy
    (if SciPy's sparse module was never imported, x cannot be one)."""
    mod = sys.modules.get("scipy.sparse")
    return mod is not None and bool(mod.issparse(x))


def _check_int_array(a, name, what):
    a = np.asarray(a)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ValueError(f"{name} is a malformed sparse matrix: {what} must be a 1-D integer "
                         f"array; got dtype {a.dtype} and shape {a.shape}")
    return a


def _check_compressed(name, fmt, data, indices, indptr, n_major, n_minor):
    """Check the structure of a CSR (rows major) or CSC (columns major)
    matrix with NumPy, before any compiled code reads its indices."""
    major, minor = ("row", "column") if fmt == "csr" else ("column", "row")
    bad = f"{name} is a malformed {fmt.upper()} matrix"
    indptr = _check_int_array(indptr, name, "indptr")
    indices = _check_int_array(indices, name, "indices")
    if np.ndim(data) != 1:
        raise ValueError(f"{bad}: data must be 1-D; got shape {np.shape(data)}")
    if indptr.size != n_major + 1:
        raise ValueError(f"{bad}: indptr must have {n_major + 1} entries ({major}s + 1); "
                         f"got {indptr.size}")
    if indices.size != np.size(data):
        raise ValueError(f"{bad}: indices and data must have the same length; got "
                         f"{indices.size} and {np.size(data)}")
    if indptr[0] != 0:
        raise ValueError(f"{bad}: indptr must start at 0; got {indptr[0]}")
    steps = np.diff(indptr)
    if steps.size and (steps < 0).any():
        i = int(np.argmax(steps < 0))
        raise ValueError(f"{bad}: indptr must be non-decreasing; it falls from "
                         f"{indptr[i]} to {indptr[i + 1]} at {major} {i}")
    nnz = int(indptr[-1])
    if nnz > indices.size:
        raise ValueError(f"{bad}: indptr ends at {nnz} but there are only {indices.size} "
                         "stored entries")
    idx = indices[:nnz]
    if nnz and (idx.min() < 0 or idx.max() >= n_minor):
        raise ValueError(f"{bad}: {minor} indices must lie in [0, {n_minor - 1}]; got "
                         f"values from {idx.min()} to {idx.max()}")
    return nnz


def _to_csr(x, name):
    """Any scipy.sparse 2-D matrix or array as CSR, converting other formats
    once; compressed and COO inputs are checked before SciPy converts them
    (their conversion routines trust the indices)."""
    shape = tuple(int(s) for s in x.shape)
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-D; got a sparse {x.format} of shape {shape}")
    fmt = x.format
    if fmt == "csr":
        return x
    if fmt == "csc":
        _check_compressed(name, "csc", x.data, x.indices, x.indptr, shape[1], shape[0])
    elif fmt == "coo":
        row = _check_int_array(x.row, name, "row")
        col = _check_int_array(x.col, name, "col")
        if row.size != col.size or row.size != np.size(x.data):
            raise ValueError(f"{name} is a malformed COO matrix: row, col and data must "
                             f"have one length; got {row.size}, {col.size}, {np.size(x.data)}")
        for idx, what, lim in ((row, "row", shape[0]), (col, "column", shape[1])):
            if idx.size and (idx.min() < 0 or idx.max() >= lim):
                raise ValueError(f"{name} is a malformed COO matrix: {what} indices must lie "
                                 f"in [0, {lim - 1}]; got values from {idx.min()} to "
                                 f"{idx.max()}")
    elif hasattr(x, "check_format"):  # BSR
        try:
            x.check_format(full_check=True)
        except ValueError as exc:
            raise ValueError(f"{name} is a malformed {fmt.upper()} matrix: {exc}") from None
    try:
        out = x.tocsr()
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"{name} could not be converted from {fmt.upper()} to CSR: "
                         f"{exc}") from None
    return out


def _sorted_unique(indices, indptr):
    """True if the columns of every row are strictly increasing."""
    if indices.size < 2:
        return True
    up = np.diff(indices) > 0
    # a step across a row boundary may go down
    ends = indptr[1:-1]
    ends = ends[(ends > 0) & (ends < indices.size)] - 1
    up[ends] = True
    return bool(up.all())


def as_csr(x, name, dtype):
    """A scipy.sparse matrix or array (any format) as checked SparseRows.

    Other formats are converted to CSR once; the structure (indptr
    monotone from 0, indices in range, lengths) is checked with NumPy before
    any compiled code reads it; values are converted to ``dtype`` and must be
    finite; duplicate entries of a row are summed (on a copy, the caller's
    matrix is never modified).  The matrix is never densified.
    """
    x = _to_csr(x, name)
    n, d = (int(s) for s in x.shape)
    nnz = _check_compressed(name, "csr", x.data, x.indices, x.indptr, n, d)
    data = as_array(x.data, f"{name}.data")[:nnz]
    indices = np.asarray(x.indices)[:nnz]
    indptr = np.asarray(x.indptr)
    if not _sorted_unique(indices, indptr):
        sp = sys.modules["scipy.sparse"]
        # csr_matrix copies what it is given here (copy=True) before summing
        y = sp.csr_matrix((data, indices, indptr), shape=(n, d), copy=True)
        y.sum_duplicates()
        data, indices, indptr = y.data, y.indices, y.indptr
    with np.errstate(over="ignore", invalid="ignore"):
        vals = np.require(data, dtype=dtype, requirements="CAW")
    if vals.size and not np.isfinite(vals).all():
        k = int(np.argmax(~np.isfinite(vals)))
        row = int(np.searchsorted(indptr, k, side="right")) - 1
        orig = data[k]
        what = (f"a value too large for {np.dtype(dtype)} ({orig:.3g})"
                if np.isfinite(orig) else f"{orig}")
        raise ValueError(f"{name} must be finite; got {what} at row {row}, column "
                         f"{int(indices[k])} (a stored entry of the sparse matrix)")
    return SparseRows(vals, np.require(indices, np.int64, "CAW"),
                      np.require(indptr, np.int64, "CAW"), (n, d))


def check_writable_path(path, name="path"):
    """Check, before any work, that a file can be written at ``path``: its
    directory exists and is writable and ``path`` is not a directory.

    Raises FileNotFoundError, IsADirectoryError or PermissionError naming
    ``name`` and the path as given; returns the path as a str.
    """
    path = as_path(path, name)
    if path == "" or os.path.isdir(path):
        raise IsADirectoryError(f"{name} {path!r} is a directory; expected a file path")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{name} {path!r}: directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"{name} {path!r}: directory {directory!r} is not writable")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        # atomic writes replace the file, but a read-only target is a sign
        # the user does not mean it to be overwritten
        raise PermissionError(f"{name} {path!r} exists and is not writable")
    return path
