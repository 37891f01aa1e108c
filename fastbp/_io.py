"""Model files: atomic writes and checked reads.

A model file is an uncompressed .npz holding a format tag and version, the
layer widths, activation codes, output kind, L2 strength, the flat
parameter buffer and the training history (as JSON).  Writing goes to a
temporary file in the target directory, is flushed to disk, then renamed
over the target, so an interrupted save never leaves a half-written model.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

from ._kernels.activations import ACTIVATION_NAMES

FORMAT = "fastbp-mlp"
FORMAT_VERSION = 1


def atomic_savez(path, **arrays):
    """np.savez to ``path`` through a temporary file and an atomic rename."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastbp-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def model_arrays(model):
    """The arrays that describe a model, as saved."""
    return dict(
        format=np.array(FORMAT),
        format_version=np.array(FORMAT_VERSION),
        widths=model.widths,
        codes=model.codes,
        output=np.array(model.output),
        alpha=np.array(model.alpha),
        params=model._params,
        epochs_trained=np.array(model.epochs_trained),
        history=np.array(json.dumps(model.history)),
    )


def save_model_file(path, model):
    atomic_savez(path, **model_arrays(model))


def _fail(path, why):
    raise ValueError(f"cannot load model from {os.fspath(path)!r}: {why}")


def read_npz(path):
    """All arrays of a .npz file as a dict, with clear errors."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if not isinstance(f, np.lib.npyio.NpzFile):
                _fail(path, "not a .npz archive")
            return {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith("cannot load model"):
            raise
        _fail(path, f"not a readable .npz archive ({type(exc).__name__}: {exc})")


def check_model_arrays(path, d):
    """Validate the arrays of a model file; returns the fields as Python values."""
    if "format" not in d or str(d["format"]) != FORMAT:
        _fail(path, "not a fastbp model file (format tag missing)")
    version = int(d.get("format_version", -1))
    if version != FORMAT_VERSION:
        _fail(path, f"format version {version} is not supported (expected {FORMAT_VERSION})")
    for key in ("widths", "codes", "output", "alpha", "params"):
        if key not in d:
            _fail(path, f"missing field {key!r}")
    widths, codes, params = d["widths"], d["codes"], d["params"]
    if widths.ndim != 1 or widths.size < 2 or widths.dtype.kind not in "iu" or (widths < 1).any():
        _fail(path, f"bad widths {widths!r}")
    if codes.shape != (widths.size - 1,) or codes.dtype.kind not in "iu":
        _fail(path, f"codes must have shape ({widths.size - 1},); got {codes.shape}")
    if not all(int(c) in ACTIVATION_NAMES for c in codes):
        _fail(path, f"unknown activation codes {codes.tolist()}")
    output = str(d["output"])
    if output not in ("softmax", "identity"):
        _fail(path, f"unknown output {output!r}")
    if params.dtype not in (np.float32, np.float64):
        _fail(path, f"parameters have dtype {params.dtype}; expected float32 or float64")
    w = widths.astype(np.int64)
    expected = int(np.sum(w[:-1] * w[1:] + w[1:]))
    if params.shape != (expected,):
        _fail(path, f"parameters have shape {params.shape}; widths {w.tolist()} need "
                    f"({expected},)")
    if not np.isfinite(params).all():
        _fail(path, "parameters contain NaN or infinity")
    history = json.loads(str(d["history"])) if "history" in d else {}
    return dict(
        widths=w,
        codes=codes.astype(np.int64),
        output=output,
        alpha=float(d["alpha"]),
        params=np.ascontiguousarray(params),
        epochs_trained=int(d.get("epochs_trained", 0)),
        history=history,
    )


def load_model_file(path):
    return check_model_arrays(path, read_npz(path))
