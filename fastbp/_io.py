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
    path = v.check_writable_path(path, "path")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_UMASK
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fastbp-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise
    _fsync_dir(directory)


def _naming(exc, path):
    """``exc`` (an OSError met while writing ``path``, which may name only a
    temporary file or nothing) as the same kind of OSError, with the same
    errno, naming ``path`` as the user gave it."""
    if exc.errno is None:
        return OSError(f"cannot write {path!r}: {exc}")
    return OSError(exc.errno, exc.strerror or str(exc), path)


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
    partial = model.__dict__.get("_partial")
    if include_optimizer and partial is not None:
        # an unfinished epoch (a checkpoint at a Ctrl-C or mid-epoch)
        arrays["partial_epoch"] = np.array(json.dumps(partial))
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


#: bounds on the members of a model file, checked on the .npy header before
#: anything is read: a damaged or crafted file cannot make the loader
#: allocate more than these (or than the parameters its widths need)
MAX_LAYERS = 100_000
MAX_TEXT_BYTES = 64 * 2**20
MAX_JSON_DEPTH = 8
MAX_COUNT = 2**62


class _Unfit(Exception):
    """A member's header does not fit what the field needs (the caller says
    what it needed); ``args[0]`` describes what the header declares."""


class _Archive:
    """The members of a .npz (a zip of .npy files), read one at a time.

    Nothing is read until asked for; each read first checks the member's
    .npy header (dtype, shape, declared size against a bound and against
    the member's size in the zip), and reads the whole member so that its
    CRC is checked.  Never unpickles.
    """

    def __init__(self, path, zf):
        self.path = path
        self.zf = zf
        self.members = {}
        for info in zf.infolist():
            if info.filename.endswith(".npy"):
                self.members[info.filename[:-4]] = info

    def __contains__(self, key):
        return key in self.members

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zf.close()

    def array(self, key, max_items, kinds="biuf", max_itemsize=8):
        """Member ``key`` as an array of at most ``max_items`` elements whose
        dtype kind is one of ``kinds``; _Unfit (before reading the data)
        otherwise, a ValueError when the member is damaged."""
        info = self.members[key]
        try:
            return self._read(info, max_items, kinds, max_itemsize)
        except _Unfit:
            raise
        except _READ_ERRORS as exc:
            _fail(self.path, f"damaged or truncated .npz archive: field {key!r} "
                             f"({type(exc).__name__}: {exc})")

    def _read(self, info, max_items, kinds, max_itemsize):
        with self.zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unknown .npy version {version}")
            if any(int(d) < 0 for d in shape):
                raise ValueError(f"negative shape {shape}")
            count = 1
            for d in shape:
                count *= int(d)
            if dtype.hasobject:
                raise _Unfit("Python objects (reading them would need pickle, which is "
                             "never used)", dtype, shape)
            if dtype.kind not in kinds or dtype.itemsize > max_itemsize or count > max_items:
                raise _Unfit(f"dtype {dtype} and shape {shape}", dtype, shape)
            nbytes = count * dtype.itemsize
            if info.file_size != fh.tell() + nbytes:
                raise ValueError(f"member size {info.file_size} does not match its header "
                                 f"({shape}, {dtype})")
            data = fh.read(nbytes)
            if len(data) != nbytes or fh.read(1):  # reading to the end checks the CRC
                raise ValueError("member data has the wrong length")
            return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def open_npz(path):
    """An ``_Archive`` over a .npz file, with clear errors.

    ``path`` is a file path or an open binary file.  A missing file raises
    FileNotFoundError; anything that is not a .npz archive (random bytes, a
    .npy, a pickle, a truncated or corrupted archive) a ValueError.
    """
    if not hasattr(path, "read"):
        path = v.as_path(path, "path")
        if not os.path.exists(path):
            raise FileNotFoundError(f"model file not found: {path!r}")
        if os.path.isdir(path):
            _fail(path, "it is a directory, not a file")
    try:
        if hasattr(path, "read"):
            magic = path.read(6)
            path.seek(-len(magic), 1)
        else:
            with open(path, "rb") as fh:
                magic = fh.read(6)
    except _READ_ERRORS as exc:
        _fail(path, f"not a readable .npz archive ({type(exc).__name__}: {exc})")
    if magic == b"\x93NUMPY":
        _fail(path, "not a .npz archive (it holds a single ndarray)")
    try:
        zf = zipfile.ZipFile(path)
    except _READ_ERRORS as exc:
        _fail(path, f"not a readable .npz archive ({type(exc).__name__}: {exc})")
    return _Archive(path, zf)


def _scalar(path, d, key, kind, default=None):
    """A 0-d field of the file as a Python int/float/str, or a clear error."""
    if key not in d:
        if default is not None:
            return default
        _fail(path, f"missing field {key!r}")
    kinds = {int: "iu", float: "iuf", str: "U"}[kind]
    try:
        a = d.array(key, 1, kinds, MAX_TEXT_BYTES if kind is str else 8)
    except _Unfit as exc:
        _fail(path, f"field {key!r} must be a single {kind.__name__}; got {exc}")
    if a.ndim != 0:
        _fail(path, f"field {key!r} must be a single {kind.__name__}; got dtype {a.dtype} "
                    f"and shape {a.shape}")
    value = a[()]
    if kind is int and not (-MAX_COUNT <= int(value) <= MAX_COUNT):
        _fail(path, f"field {key!r} is out of range: {int(value)}")
    return kind(value)


def _finite_array(path, a, name):
    """The 1-d array ``a`` in native byte order, contiguous, writeable and
    aligned as the model's buffers are (a copy, ``_validation.aligned_copy``),
    after checking that it is finite."""
    a = v.aligned_copy(a.astype(a.dtype.newbyteorder("="), copy=False))
    if not np.isfinite(a).all():
        _fail(path, f"{name} contain NaN or infinity")
    return a


def _float_member(path, d, key, size, name, widths):
    """A 1-D float32/float64 member of ``size`` elements (checked on the header)."""
    try:
        dtype, shape = None, None
        a = d.array(key, size, "f")
        dtype, shape = a.dtype, a.shape
    except _Unfit as exc:
        dtype, shape = exc.args[1], exc.args[2]
    if dtype is None or dtype.kind != "f" or dtype.itemsize not in (4, 8):
        _fail(path, f"{name} have {'Python objects' if dtype is None or dtype.hasobject else 'dtype ' + str(dtype)}; "
                    "expected float32 or float64")
    if shape != (size,):
        shown = widths if len(widths) <= 8 else widths[:8] + ["..."]
        _fail(path, f"{name} have shape {shape}; widths {shown} need ({size},)")
    return _finite_array(path, a, name)


def _json_depth(value, limit):
    """True if the JSON value nests no deeper than ``limit`` (iteratively)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((x, depth + 1) for x in item.values())
        elif isinstance(item, list):
            stack.extend((x, depth + 1) for x in item)
    return True


def _json_field(path, d, key):
    """An optional JSON-object field, parsed, or None when absent."""
    if key not in d:
        return None
    text = _scalar(path, d, key, str)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        _fail(path, f"{key} is not valid JSON ({type(exc).__name__}: "
                    f"{str(exc)[:80] or 'nested too deeply'})")
    if not isinstance(value, dict):
        _fail(path, f"{key} must be a JSON object; got {type(value).__name__}")
    if not _json_depth(value, MAX_JSON_DEPTH):
        _fail(path, f"{key} is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _check_history(path, history):
    for k, vals in history.items():
        if not isinstance(vals, list) or not all(_is_number(x) for x in vals):
            _fail(path, f"history[{k!r}] must be a list of finite numbers")
    return {k: [float(x) for x in vals] for k, vals in history.items()}


def _check_rng_state(path, state):
    """A generator with the saved state, or a ValueError."""
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError, AttributeError) as exc:
        _fail(path, f"bad rng_state ({type(exc).__name__}: {str(exc)[:80]})")
    return rng


def _check_partial(path, p):
    """An unfinished epoch's record (``MLP._partial_record``), checked."""
    ints = ("n", "batch_size", "batches", "correct", "ranks")
    ok = (set(p) == {"rng_state", "loss_sum", *ints}
          and all(isinstance(p[k], int) and not isinstance(p[k], bool) and p[k] >= 0
                  for k in ints)
          and p["n"] >= 0 and p["batch_size"] >= 1 and p["ranks"] >= 1
          and _is_number(p["loss_sum"])
          and (p["rng_state"] is None or isinstance(p["rng_state"], dict)))
    if not ok:
        _fail(path, "bad partial_epoch record")
    if p["rng_state"] is not None:
        _check_rng_state(path, p["rng_state"])
    return p


def _check_optimizer(path, d, optimizer, params, widths):
    if not {"name", "settings", "step"} <= set(optimizer):
        _fail(path, "optimizer field lacks name, settings or step")
    name, settings, step = optimizer["name"], optimizer["settings"], optimizer["step"]
    if not isinstance(name, str) or name.lower() not in ("sgd", "adam"):
        _fail(path, f"unknown optimizer name {name!r}; expected 'SGD' or 'Adam'")
    if not isinstance(settings, dict):
        _fail(path, f"optimizer settings must be a JSON object; got "
                    f"{type(settings).__name__}")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_COUNT:
        _fail(path, f"optimizer step must be an integer in [0, 2**62]; got {step!r}")
    state = []
    for key in ("optimizer_s1", "optimizer_s2"):
        if key not in d:
            _fail(path, f"missing field {key!r} (optimizer state)")
        a = _float_member(path, d, key, params.size, f"{key} values", widths)
        if a.dtype != params.dtype:
            _fail(path, f"{key} must match the parameters' shape and dtype "
                        f"({params.dtype}); got {a.dtype}")
        state.append(a)
    if name.lower() == "adam" and (state[1] < 0).any():
        _fail(path, "optimizer_s2 (Adam's second moments) must be >= 0")
    return {"name": name, "settings": settings, "step": step, "state": tuple(state)}


def check_model_arrays(path, d):
    """Validate the members of a model file (an ``_Archive``) field by field,
    reading each only after the fields it depends on passed; returns the
    fields as Python values and fresh arrays.

    The output kind and its last layer are checked against ``OUTPUT_KINDS``
    (a new output kind is one more row there).
    """
    if "format" not in d:
        _fail(path, f"not a fastbp model file (format tag {FORMAT!r} missing)")
    try:
        tag = d.array("format", 1, "U", 4 * len(FORMAT))
    except _Unfit:
        tag = None
    tag = str(tag) if tag is not None and tag.ndim == 0 else None
    if tag != FORMAT:
        _fail(path, f"not a fastbp model file (format tag {FORMAT!r} missing)")
    version = _scalar(path, d, "format_version", int)
    if version != FORMAT_VERSION:
        _fail(path, f"format version {version} is not supported (expected {FORMAT_VERSION})")
    for key in ("widths", "codes", "output", "alpha", "params"):
        if key not in d:
            _fail(path, f"missing field {key!r}")
    try:
        widths = d.array("widths", MAX_LAYERS + 1, "iu")
    except _Unfit:
        widths = None
    if widths is None or widths.ndim != 1 or widths.size < 2 or (widths < 1).any():
        shown = "an array of another dtype or size" if widths is None else repr(widths)
        _fail(path, f"bad widths {shown}: expected at least 2 positive integers")
    w = [int(x) for x in widths]
    if v.n_params(w) > v.MAX_PARAMS:
        _fail(path, f"bad widths {w[:8]}{'...' if len(w) > 8 else ''}: "
                    f"{v.n_params(w):.3g} parameters, more than {v.MAX_PARAMS:.3g}")
    n = v.n_params(w)
    if n * 4 > v.MEMORY_BYTES:
        _fail(path, f"bad widths {w[:8]}: {n:.3g} parameters do not fit in this machine's "
                    "memory")
    try:
        codes = d.array("codes", len(w) - 1, "iu")
    except _Unfit:
        codes = np.zeros(0)
    if codes.shape != (len(w) - 1,):
        _fail(path, f"codes must have shape ({len(w) - 1},) and an integer dtype")
    codes = [int(c) for c in codes]
    if not all(c in ACTIVATION_NAMES for c in codes[:-1]) or codes[-1] not in ACTIVATION_NAMES:
        _fail(path, f"unknown activation codes {codes[:8]}")
    output = _scalar(path, d, "output", str)
    if output not in OUTPUT_KINDS:
        _fail(path, f"unknown output {output!r}; expected one of "
                    f"{', '.join(map(repr, OUTPUT_KINDS))}")
    last_code, least = OUTPUT_KINDS[output]
    if codes[-1] != last_code or w[-1] < least:
        _fail(path, f"output {output!r} needs a last layer with activation code {last_code} "
                    f"and at least {least} unit(s); got code {codes[-1]} and {w[-1]} unit(s)")
    alpha = _scalar(path, d, "alpha", float)
    if not np.isfinite(alpha) or alpha < 0:
        _fail(path, f"alpha must be finite and >= 0; got {alpha}")
    epochs = _scalar(path, d, "epochs_trained", int, default=0)
    if epochs < 0:
        _fail(path, f"epochs_trained must be >= 0; got {epochs}")
    history = {}
    if "history" in d:
        history = _json_field(path, d, "history")
        history = _check_history(path, history)
    rng_state = _json_field(path, d, "rng_state")
    rng = None if rng_state is None else _check_rng_state(path, rng_state)
    params = _float_member(path, d, "params", n, "parameters", w)
    optimizer = _json_field(path, d, "optimizer")
    if optimizer is not None:
        optimizer = _check_optimizer(path, d, optimizer, params, w)
    partial = _json_field(path, d, "partial_epoch")
    if partial is not None:
        partial = _check_partial(path, partial)
    return {
        "partial_epoch": partial,
        "rng": rng,
        "rng_state": rng_state,
        "optimizer": optimizer,
        "widths": np.array(w, dtype=np.int64),
        "codes": np.array(codes, dtype=np.int64),
        "output": output,
        "alpha": alpha,
        "params": params,
        "epochs_trained": epochs,
        "history": history,
    }


def load_model_file(path):
    """The checked fields of a model file (see ``check_model_arrays``)."""
    with open_npz(path) as archive:
        return check_model_arrays(path, archive)
