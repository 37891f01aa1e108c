"""Model files: atomic writes and checked reads.

A model file is an uncompressed .npz holding a format tag and version, the
layer widths, activation codes, output kind, L2 strength, the flat
parameter buffer and the training history (as JSON).  Writing goes to a
temporary file in the target directory, is flushed to disk, then renamed
over the target, so an interrupted save never leaves a half-written model.
"""

import json
import os
import struct
import tempfile
import zipfile
import zlib

import numpy as np

from . import _validation as v
from ._kernels.activations import ACTIVATION_NAMES, IDENTITY

FORMAT = "fastbp-mlp"
FORMAT_VERSION = 1

#: output kind -> (activation code its last layer must have, least outputs);
#: the loss applies the softmax or sigmoid, so every last layer is identity
OUTPUT_KINDS = {
    "softmax": (IDENTITY, 2),
    "identity": (IDENTITY, 1),
    "sigmoid": (IDENTITY, 1),
    "exp": (IDENTITY, 1),
}


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: read once at import (reading it means setting it, which is not thread-safe)
_UMASK = _umask()


def atomic_savez(path, **arrays):
    """np.savez to ``path`` through a temporary file and an atomic rename.

    The temporary file lives in the target's directory (a rename within one
    file system is atomic), is flushed and fsync'ed before ``os.replace``
    puts it in place, and the directory is fsync'ed after, so that at every
    moment, even if the process is killed or the machine loses power, the
    target is either absent, the previous file or the complete new one.
    The new file gets the mode of the file it replaces, or the default mode
    under the umask.
    """
    path = v.as_path(path, "path")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_UMASK
    fd, tmp = tempfile.mkstemp(prefix=".fastbp-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _fsync_dir(directory):
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def model_arrays(model, include_optimizer=False):
    """The arrays that describe a model, as saved.

    The generator state is always saved (a resumed ``fit`` shuffles as the
    uninterrupted one would); the optimizer and its state only on request
    (checkpoints), since Adam's state doubles the file.
    """
    arrays = {
        "format": np.array(FORMAT),
        "format_version": np.array(FORMAT_VERSION),
        "widths": model.widths,
        "codes": model.codes,
        "output": np.array(model.output),
        "alpha": np.array(model.alpha),
        "params": model._params,
        "epochs_trained": np.array(model.epochs_trained),
        "history": np.array(json.dumps(model.history)),
        "rng_state": np.array(json.dumps(model._rng.bit_generator.state)),
    }
    opt = model.optimizer
    if include_optimizer and opt is not None and opt.state_ is not None:
        settings = {k: getattr(opt, k) for k in opt._fields}
        arrays["optimizer"] = np.array(json.dumps(
            {"name": type(opt).__name__, "settings": settings, "step": opt.step_}))
        arrays["optimizer_s1"], arrays["optimizer_s2"] = opt.state_
    return arrays


def save_model_file(path, model, include_optimizer=False):
    atomic_savez(path, **model_arrays(model, include_optimizer))


def _fail(path, why):
    shown = os.fspath(path) if isinstance(path, (str, bytes, os.PathLike)) else path
    raise ValueError(f"cannot load model from {shown!r}: {why}")


#: what reading a damaged or foreign archive can raise
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
                TypeError, KeyError, NotImplementedError, RuntimeError, zlib.error,
                struct.error)


def read_npz(path):
    """All arrays of a .npz file as a dict, with clear errors.

    ``path`` is a file path or an open binary file.  A missing file raises
    FileNotFoundError; anything that is not a readable .npz archive (random
    bytes, a .npy, a pickle, a truncated or corrupted archive) a ValueError.
    """
    if not hasattr(path, "read"):
        path = v.as_path(path, "path")
        if not os.path.exists(path):
            raise FileNotFoundError(f"model file not found: {path!r}")
        if os.path.isdir(path):
            _fail(path, "it is a directory, not a file")
    try:
        f = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        _fail(path, f"not a readable .npz archive ({type(exc).__name__}: {exc})")
    if not isinstance(f, np.lib.npyio.NpzFile):
        _fail(path, f"not a .npz archive (it holds a single {type(f).__name__})")
    try:
        with f:
            return {k: f[k] for k in f.files}
    except _READ_ERRORS as exc:
        _fail(path, f"damaged or truncated .npz archive ({type(exc).__name__}: {exc})")


def _scalar(path, d, key, kind, default=None):
    """A 0-d field of the file as a Python int/float/str, or a clear error."""
    if key not in d:
        if default is not None:
            return default
        _fail(path, f"missing field {key!r}")
    a = d[key]
    ok = a.ndim == 0 and (
        (kind is int and a.dtype.kind in "iu")
        or (kind is float and a.dtype.kind in "iuf")
        or (kind is str and a.dtype.kind == "U")
    )
    if not ok:
        _fail(path, f"field {key!r} must be a single {kind.__name__}; got dtype {a.dtype} "
                    f"and shape {a.shape}")
    return kind(a[()])


def check_model_arrays(path, d):
    """Validate the arrays of a model file; returns the fields as Python values."""
    if "format" not in d or d["format"].dtype.kind != "U" or str(d["format"]) != FORMAT:
        _fail(path, f"not a fastbp model file (format tag {FORMAT!r} missing)")
    version = _scalar(path, d, "format_version", int)
    if version != FORMAT_VERSION:
        _fail(path, f"format version {version} is not supported (expected {FORMAT_VERSION})")
    for key in ("widths", "codes", "output", "alpha", "params"):
        if key not in d:
            _fail(path, f"missing field {key!r}")
    widths, codes, params = d["widths"], d["codes"], d["params"]
    if widths.ndim != 1 or widths.size < 2 or widths.dtype.kind not in "iu" or (widths < 1).any():
        _fail(path, f"bad widths {widths!r}: expected at least 2 positive integers")
    if codes.shape != (widths.size - 1,) or codes.dtype.kind not in "iu":
        _fail(path, f"codes must have shape ({widths.size - 1},) and an integer dtype; "
                    f"got {codes.dtype} {codes.shape}")
    if not all(int(c) in ACTIVATION_NAMES for c in codes):
        _fail(path, f"unknown activation codes {codes.tolist()}")
    output = _scalar(path, d, "output", str)
    if output not in OUTPUT_KINDS:
        _fail(path, f"unknown output {output!r}; expected one of "
                    f"{', '.join(map(repr, OUTPUT_KINDS))}")
    last_code, least = OUTPUT_KINDS[output]
    if int(codes[-1]) != last_code or int(widths[-1]) < least:
        _fail(path, f"output {output!r} needs a last layer with activation code {last_code} "
                    f"and at least {least} unit(s); got code {int(codes[-1])} and "
                    f"{int(widths[-1])} unit(s)")
    if params.dtype.kind != "f" or params.dtype.itemsize not in (4, 8):
        _fail(path, f"parameters have dtype {params.dtype}; expected float32 or float64")
    params = params.astype(params.dtype.newbyteorder("="), copy=False)
    w = widths.astype(np.int64)
    expected = int(np.sum(w[:-1] * w[1:] + w[1:]))
    if params.shape != (expected,):
        _fail(path, f"parameters have shape {params.shape}; widths {w.tolist()} need "
                    f"({expected},)")
    if not np.isfinite(params).all():
        _fail(path, "parameters contain NaN or infinity")
    alpha = _scalar(path, d, "alpha", float)
    if not np.isfinite(alpha) or alpha < 0:
        _fail(path, f"alpha must be finite and >= 0; got {alpha}")
    epochs = _scalar(path, d, "epochs_trained", int, default=0)
    if epochs < 0:
        _fail(path, f"epochs_trained must be >= 0; got {epochs}")
    history = {}
    if "history" in d:
        text = _scalar(path, d, "history", str)
        try:
            history = json.loads(text)
        except ValueError as exc:
            _fail(path, f"history is not valid JSON ({exc})")
        if not isinstance(history, dict):
            _fail(path, f"history must be a JSON object; got {type(history).__name__}")
    rng_state = _json_field(path, d, "rng_state")
    optimizer = _json_field(path, d, "optimizer")
    if optimizer is not None:
        if not {"name", "settings", "step"} <= set(optimizer):
            _fail(path, "optimizer field lacks name, settings or step")
        for key in ("optimizer_s1", "optimizer_s2"):
            if key not in d or d[key].shape != params.shape or d[key].dtype != params.dtype:
                _fail(path, f"{key} must match the parameters' shape and dtype")
        optimizer["state"] = (np.require(d["optimizer_s1"], requirements="CAW"),
                              np.require(d["optimizer_s2"], requirements="CAW"))
    return {
        "rng_state": rng_state,
        "optimizer": optimizer,
        "widths": w,
        "codes": codes.astype(np.int64),
        "output": output,
        "alpha": alpha,
        "params": np.require(params, requirements="CAW"),
        "epochs_trained": epochs,
        "history": history,
    }


def _json_field(path, d, key):
    """An optional JSON-object field, parsed, or None when absent."""
    if key not in d:
        return None
    try:
        value = json.loads(_scalar(path, d, key, str))
    except ValueError as exc:
        _fail(path, f"{key} is not valid JSON ({exc})")
    if not isinstance(value, dict):
        _fail(path, f"{key} must be a JSON object; got {type(value).__name__}")
    return value


def load_model_file(path):
    return check_model_arrays(path, read_npz(path))
