"""The built-in digits data and loading of user data files."""

import os
import warnings
import zipfile
from importlib import resources

import numpy as np

from . import _validation as v

_READ_ERRORS = (zipfile.BadZipFile, EOFError, OSError, ValueError, TypeError, KeyError,
                NotImplementedError, RuntimeError)

__all__ = ["load_data", "load_digits", "read_table", "train_test_split"]


def load_digits(dtype="float32", scale=True):
    """The built-in digits data (1797 images of 8x8 pixels, classes 0-9).

    Parameters
    ----------
    dtype : {"float32", "float64"}
    scale : bool
        Divide the 0-16 pixel values by 16 so features lie in [0, 1].

    Returns
    -------
    X : ndarray, shape (1797, 64), dtype ``dtype``
    y : ndarray, shape (1797,), int64
    """
    dt = v.resolve_dtype(dtype)
    scale = v.as_bool(scale, "scale")
    with (resources.files("fastbp").joinpath("data/digits.npz").open("rb") as fh,
          np.load(fh) as f):
        X, y = f["X"], f["y"]
    X = X.astype(dt)
    if scale:
        X /= dt.type(16)
    return X, y.astype(np.int64)


def train_test_split(X, y, test_size=0.2, seed=0):
    """Shuffle rows with a seeded generator and split them.

    Returns X_train, X_test, y_train, y_test.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim == 0 or y.ndim == 0:
        raise ValueError("X and y must be arrays with one row per sample; got shapes "
                         f"{X.shape} and {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X and y must have the same number of rows; got {X.shape[0]} "
                         f"and {y.shape[0]}")
    test_size = v.as_real(test_size, "test_size", 0.0, 1.0, min_inclusive=False,
                          max_inclusive=False)
    n = X.shape[0]
    seed = v.as_seed(seed)
    n_test = round(n * test_size)
    if n_test < 1 or n_test >= n:
        raise ValueError(f"test_size={test_size} leaves no rows on one side of {n} rows")
    perm = np.random.default_rng(seed).permutation(n)
    te, tr = perm[:n_test], perm[n_test:]
    return X[tr], X[te], y[tr], y[te]


def _column(header, target, ncols, path):
    """Index of the target column from a name or an index (default last)."""
    if target is None:
        return ncols - 1
    if isinstance(target, (bool, np.bool_)):
        raise TypeError(f"target must be a column name or index; got {target!r}")
    if header is not None and target in header:
        return header.index(target)
    try:
        idx = int(target)
    except (TypeError, ValueError):
        raise ValueError(f"target column {target!r} not found in {path}"
                         + (f" (columns: {', '.join(header)})" if header else "")) from None
    if not -ncols <= idx < ncols:
        raise ValueError(f"target column index {idx} out of range for {ncols} columns in {path}")
    return idx % ncols


def _rows(rows, n):
    """``rows`` as a slice of an array of n rows (it may be a function of n)."""
    return rows(n) if callable(rows) else rows


def _npz_rows(path, f, key, rows):
    """Rows ``rows`` of the .npz member ``key``, memory-mapped when the member
    is stored uncompressed (np.savez's default), else read whole and cut."""
    if rows is None:
        return f[key]
    try:
        with zipfile.ZipFile(path) as z:
            info = z.getinfo(key + ".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError("a compressed member is read whole")
        with open(path, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)  # the zip local file header, then name and extra
            start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") \
                + int.from_bytes(local[28:30], "little")
            fh.seek(start)
            version = np.lib.format.read_magic(fh)
            readers = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                raise ValueError("unknown .npy version")
            shape, fortran, dtype = readers[version](fh)
            offset = fh.tell()
        if fortran or dtype.hasobject or not shape:
            raise ValueError("not a plain C-ordered array")
        whole = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
        return np.array(whole[_rows(rows, shape[0])])
    except (KeyError, ValueError, OSError, zipfile.BadZipFile):
        arr = f[key]
        return arr[_rows(rows, arr.shape[0])] if arr.ndim else arr


def read_table(path, rows=None):
    """The raw contents of a data file, with clear errors.

    Returns ``(arrays, None)`` for a ``.npz`` (a dict of its arrays) and
    ``(table, header)`` for a ``.npy`` or ``.csv`` (header: the column names
    of a CSV whose first row is not numeric, else None).  ``rows`` (a slice,
    or a function of the row count giving one) keeps only those rows of every
    array: memory-mapped for ``.npy`` and uncompressed ``.npz`` members, so
    that only they are read.
    """
    path = v.as_path(path, "path")
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path}")
    if os.path.isdir(path):
        raise ValueError(f"path must be a data file; {path} is a directory")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: _npz_rows(path, f, k, rows) for k in f.files}, None
        except _READ_ERRORS as exc:
            raise ValueError(f"cannot read {path} as .npz: {exc}") from None
    if ext == ".npy":
        try:
            if rows is not None:
                whole = np.load(path, mmap_mode="r", allow_pickle=False)
                return np.array(whole[_rows(rows, whole.shape[0])]), None
            return np.load(path, allow_pickle=False), None
        except _READ_ERRORS as exc:
            raise ValueError(f"cannot read {path} as .npy: {exc}") from None
    if ext == ".csv":
        try:
            with open(path, encoding="utf-8") as fh:
                first = fh.readline()
        except UnicodeDecodeError as exc:
            raise ValueError(f"cannot read {path} as UTF-8 text CSV: {exc}") from None
        cells = [c.strip() for c in first.strip().split(",")]
        header = None
        try:
            [float(c) for c in cells]
            skip = 0
        except ValueError:
            header, skip = cells, 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "no data": checked by callers
                table = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)
                return (table if rows is None else table[_rows(rows, len(table))]), header
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read {path} as numeric CSV: {exc}") from None
    raise ValueError(f"unsupported data file type {ext!r} for {path}; "
                     "use .npz, .npy or .csv")


def load_data(path, target=None, rows=None):
    """Load features and targets from a user's file.

    * ``.npz``: arrays ``X`` and ``y`` (or the array named by ``target`` as y
      and the only other array as X);
    * ``.npy``: a 2-D array whose target column is ``target`` (index,
      default the last);
    * ``.csv``: comma-separated numbers, an optional header row; the target
      column is ``target`` (name or index, default the last).

    ``rows`` (a slice, or a function of the row count giving one), if given,
    keeps only those rows; a ``.npy`` file and the uncompressed arrays of a
    ``.npz`` are memory-mapped so that only those rows are read (each MPI
    rank reads its own shard this way).

    Returns
    -------
    X : ndarray (n, d), float64
    y : ndarray (n,)
    """
    path = v.as_path(path, "path")
    if target is not None and not isinstance(target, (str, int, np.integer)) \
            or isinstance(target, (bool, np.bool_)):
        raise TypeError(f"target must be None, a column name or a column index; "
                        f"got {target!r}")
    data, header = read_table(path, rows)
    if isinstance(data, dict):
        arrays = data
        ykey = "y" if target is None else str(target)
        if ykey not in arrays:
            raise ValueError(f"{path} has no array {ykey!r} (arrays: {', '.join(arrays)})")
        others = [k for k in arrays if k != ykey]
        xkey = "X" if "X" in arrays else (others[0] if len(others) == 1 else None)
        if xkey is None:
            raise ValueError(f"{path} must hold an array 'X' beside {ykey!r}; "
                             f"got {', '.join(arrays)}")
        X, y = arrays[xkey], arrays[ykey]
    else:
        if data.ndim != 2 or data.shape[1] < 2:
            raise ValueError(f"{path} must hold a 2-D table with at least 2 columns; "
                             f"got shape {data.shape}")
        col = _column(header, target, data.shape[1], path)
        y = data[:, col]
        X = np.delete(data, col, axis=1)
    X = v.as_array(X, "X")
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X in {path} must be a non-empty 2-D array; got shape {X.shape}")
    y = v.as_array(y, "y")
    if y.ndim not in (1, 2):
        raise ValueError(f"y in {path} must be 1-D (n,) or 2-D (n, k); got shape {y.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"{path}: X has {X.shape[0]} rows but y has {y.shape[0]}")
    for arr, name in ((X, "X"), (y, "y")):
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            shown = where if len(where) > 1 else where[0]
            raise ValueError(f"{name} in {path} must be finite (no NaN or infinity); "
                             f"got {arr[where]} at index {shown}")
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    return X.astype(np.float64), y
