"""The MLP model: a network held as data in flat buffers.

``widths`` and activation ``codes`` are small int64 arrays; all weights and
biases live in one contiguous buffer (``model.params`` gives (W, b) views
into it), the gradients in a second buffer of the same layout, and the
activations of a batch in one preallocated workspace.  A whole epoch
(gathering minibatches, forward, loss, backward, optimizer update) is one
compiled call, so Python costs nothing per layer or per batch.
"""

import itertools
import sys
import time
from itertools import starmap
from operator import is_

import numba
import numpy as np

from . import _responsive as _r
from . import _threads
from . import _validation as v
from ._io import load_model_file, save_model_file
from ._kernels import activations as _act
from ._kernels import losses as _loss
from ._kernels import network as _net
from ._kernels import records as _rec
from ._threads import step_threads
from ._warmup import compile_notice, compile_pending
from .optim import Adam, get_optimizer

__all__ = ["MLP", "DivergenceError"]

OUTPUTS = {"softmax": _act.IDENTITY, "identity": _act.IDENTITY, "sigmoid": _act.IDENTITY,
           "exp": _act.IDENTITY}
#: outputs that classify (loss with accuracy; predict gives labels)
CLASSIFIER_OUTPUTS = ("softmax", "sigmoid")
_PREDICT_CHUNK = 4096
_INT64, _UINT64 = np.dtype(np.int64), np.dtype(np.uint64)
_PREDICT_VALUES = 2**24
_PREDICT_FLOPS = 1e9


#: what each kernel status (network.train_step) found not finite
_DIVERGED = {1: "loss", 2: "gradient",
             3: "update (a parameter or optimizer state value would overflow)"}


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or gradient, or a step whose
    update would have made a parameter or optimizer state value non-finite.

    The model keeps the parameters from before the failing step.  The
    attributes ``epoch`` (1-based) and ``step`` (1-based batch within the
    epoch) say where.
    """

    def __init__(self, message, epoch, step):
        super().__init__(message)
        self.epoch = epoch
        self.step = step

    @classmethod
    def from_status(cls, status, epoch, step, batch_size):
        """The error for a kernel status (1: loss, 2: gradient, 3: update)."""
        what = _DIVERGED.get(int(status), f"value (status {status})")
        return cls(f"training diverged: non-finite {what} at epoch {epoch}, step {step} "
                   f"(batch_size={batch_size}); parameters are those before that step. "
                   "Try a smaller learning rate or scaled inputs.", epoch, step)


def _call(fn, *args):
    return fn(*args)


def _committer(opt, i):
    """A commit for ``_responsive.call_committing``: the step count, item i
    of a kernel's result, into ``opt.step_``."""
    def commit(out):
        opt.step_ = int(out[i])
    return commit


def _hidden_codes(activation, n_hidden):
    if isinstance(activation, str):
        return [v.as_activation(activation)] * n_hidden
    try:
        acts = list(activation)
    except TypeError:
        raise TypeError("activation must be a name or a list of names, one per hidden "
                        f"layer; got {type(activation).__name__}") from None
    if len(acts) != n_hidden:
        raise ValueError(f"activation lists one name per hidden layer: expected "
                         f"{n_hidden}, got {len(acts)}")
    return [v.as_activation(a) for a in acts]


def _sparse_kernels():
    """The sparse kernel module, imported on first sparse input only (its
    dispatchers cost ~20-30 ms of import time that dense users need not pay)."""
    from ._kernels import sparse

    return sparse


def _sparse_batch_buffers(X, batch_size):
    """(data, indices, indptr, column pointers, rows, entries) buffers for
    CSR batches of up to batch_size rows of the SparseRows X: room for the
    batch_size longest rows, and for the batch by columns
    (``_kernels.sparse.batch_columns``)."""
    lengths = np.diff(X.indptr)
    k = min(batch_size, lengths.size)
    cap = max(int(np.partition(lengths, lengths.size - k)[lengths.size - k:].sum())
              if k else 0, 1)
    return (np.empty(cap, dtype=X.data.dtype), np.empty(cap, dtype=np.int64),
            np.empty(batch_size + 1, dtype=np.int64), np.empty(X.shape[1] + 1, dtype=np.int64),
            np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.int64))


def _frozen(a):
    """True for an array from ``_validation.frozen_int64`` (its memory an
    immutable bytes object: no one can make it writeable)."""
    return not a.flags.writeable and type(a.base) is bytes


def _entry_point(dispatcher, args):
    """The compiled function ``dispatcher`` runs for ``args`` (already
    compiled for their types), callable without the dispatcher's typing of
    the arguments, or None where Numba offers none (then the dispatcher is
    called).  Its caller must pass arguments of exactly these types: the
    entry point unboxes them as the signature says and checks nothing.

    Why: typing the four records of train_epoch costs its dispatcher 0.9 us
    of train_on_batch's 2.3 us call of an empty epoch; the entry point
    takes 1.3 us (64-128-10, 2026-12-07; tests/test_linking.py keeps it
    honest across Numba releases)."""
    try:
        sig = tuple(map(dispatcher.typeof_pyval, args))
        return dispatcher.overloads[sig].entry_point
    except (AttributeError, KeyError, TypeError):
        return None


def _run_step(epoch, args, opt):
    """(status, loss) of ``epoch(*args)``, one training step, with the
    optimizer's step count taken from its result even when a Ctrl-C arrives
    as it returns (_responsive.call_committing, inline: train_on_batch's
    per-call path)."""
    box = []
    try:
        box.extend(starmap(epoch, (args,)))  # a C call: no signal between the two
    finally:
        if box:
            opt.step_ = int(box[0][4])
    r = box[0]
    return r[0], r[2]


class _BatchCall:
    """What train_on_batch's fast path passes unchanged from call to call,
    kept after a call of the checked path: the checked structure, the
    optimizer, its checked hyper-parameters and bound state and the
    workspace, as train_epoch's records (_kernels/records.py), and what
    they rest on.

    ``holds`` compares what ``MLP._check_structure``,
    ``Optimizer._cached_hp`` and ``Optimizer._cached_state`` compare, at
    once: the model's and optimizer's current objects (by identity) and the
    layouts of the arrays this record holds (the same arrays while the
    identities match).  One comparison instead of the three calls: 2.6 of
    train_on_batch's 5.1 us of Python went to them (issue 16, item 5;
    docs/performance.md).
    """

    __slots__ = ("cap", "ck", "d_in", "dtype", "entry", "flops_per_row", "hp", "labels_ok",
                 "n_params", "net", "opt", "opt_head", "order", "pack_per_row", "saved",
                 "state", "ws", "ws_record")

    def __init__(self, model, ck, opt, hp, ws):
        self.ck, self.opt, self.hp, self.ws = ck, opt, hp, ws
        self.state = opt.state_
        self.dtype, self.d_in = ck.dtype, ck.widths[0]
        self.labels_ok = model.output == "softmax"  # int64 labels go to the kernel as they are
        self.cap = ws["order"].size
        self.order = ws["order"]
        self.flops_per_row = ws["flops_per_row"]
        self.pack_per_row = ws["pack_per_row"]
        self.n_params = model._params.size
        self.net = _rec.network(model._params, model._grads, ck.w, ck.c, ck.alpha)
        # the optimizer record but its step count, which each call appends
        self.opt_head = _rec.optimizer(opt.kind, hp, *self.state, 0)[:-1]
        self.ws_record = _rec.workspace(ws)
        # the compiled epoch for the calls with int64 labels, found after the
        # first such call (_entry_point)
        self.entry = None
        self.saved = self._snapshot(model)

    def _snapshot(self, model):
        """(the model's and optimizer's objects, the layouts of the arrays
        held here)."""
        ck, opt = self.ck, self.opt
        w, c, p = ck.w, ck.c, ck.p
        a, b = self.state
        # the layouts of the arrays a user can reach (model.widths, codes,
        # flat_params, opt.state_); the gradient buffer is never handed out
        # (loss_and_grad returns views of another), so its identity suffices
        return ((model.widths, model.codes, model._params, model._grads, model.output,
                 model.dtype, model.alpha, model._ws, opt.state_) + opt._settings(opt),
                (w.shape, w.dtype, w.flags.num, c.shape, c.dtype, c.flags.num,
                 p.shape, p.dtype, p.flags.num, a.shape, a.dtype, a.flags.num,
                 b.shape, b.dtype, b.flags.num))

    def holds(self, model):
        """True while nothing this record rests on has changed (see the
        class docstring): the model's and optimizer's objects are the same
        (by identity: a user's array or a dtype must not be compared by
        value) and the arrays held here have their layouts still (the same
        arrays while the identities hold).  ``model.optimizer`` must be
        ``self.opt``."""
        objects, layouts = self._snapshot(model)
        saved_objects, saved_layouts = self.saved
        return layouts == saved_layouts and all(map(is_, objects, saved_objects))


class _Checked:
    """What ``MLP._check_structure`` checked (the objects, and the layout of
    the arrays), with what the per-step paths derive from it once: the
    widths as a tuple of Python ints and empty arrays for the kernels'
    unused label, target and weight arguments (zero-size: never written)."""

    __slots__ = ("alpha", "c", "dtype", "g", "layout", "no_labels", "no_targets",
                 "no_weights", "output", "p", "w", "widths", "writeable")

    def __init__(self, model, w, c, p, g):
        self.w, self.c, self.p, self.g = w, c, p, g
        self.output, self.dtype, self.alpha = model.output, model.dtype, model.alpha
        self.layout = (v.array_state(w) + v.array_state(c) + v.array_state(p)
                       + v.array_state(g))
        # both buffers writeable when checked: while the layout (flags
        # included) stays the same, _make_writeable has nothing to do
        self.writeable = bool(p.flags.writeable and g.flags.writeable)
        self.widths = tuple(int(d) for d in w)
        self.no_labels = np.empty(0, dtype=np.int64)
        self.no_targets = np.empty((0, self.widths[-1]), dtype=p.dtype)
        self.no_weights = np.empty(0, dtype=np.float64)


class MLP:
    """Multi-layer perceptron trained by backpropagation.

    Parameters
    ----------
    widths : sequence of int
        Layer widths ``[d_0, d_1, ..., d_L]``: input features, hidden widths,
        outputs.  At least two entries, all >= 1.
    activation : str or sequence of str
        Hidden-layer activation ("relu", "tanh", "sigmoid", "identity"), one
        for all or one per hidden layer.
    output : {"softmax", "sigmoid", "identity", "exp"}
        "softmax": classification with mean cross-entropy (``d_L`` classes);
        "sigmoid": binary (``d_L == 1``) or multilabel (``d_L`` labels)
        classification, one sigmoid unit per label with binary cross-entropy
        averaged over rows and summed over labels (scikit-learn's logistic
        output);
        "identity": regression with half squared error;
        "exp": regression of non-negative targets (counts, rates) with the
        Poisson loss and a log link, predictions ``exp(output)``
        (scikit-learn's ``MLPRegressor(loss="poisson")``).
    dtype : {"float32", "float64"}
        Dtype of parameters and of all work.
    seed : int or None
        Seeds initialisation and shuffling; the same seed gives the same
        parameters after the same calls.
    alpha : float
        L2 penalty: the loss gains ``alpha / (2 n_batch) * sum(W**2)``, with
        n_batch the total sample weight of the batch when weights are given.

    Weights are drawn uniformly from ``[-r, r]``: He's ``r = sqrt(6 / d_in)``
    for ReLU layers, Glorot's ``r = sqrt(6 / (d_in + d_out))`` otherwise and
    ``r = sqrt(2 / (d_in + d_out))`` for sigmoid layers (scikit-learn's
    choice).  The output layer, whose code is identity (the loss applies the
    softmax or sigmoid), gets Glorot's bound whatever the output, as
    scikit-learn's output layer does unless its hidden activation is
    logistic.  Biases start at zero.
    """

    def __init__(self, widths, activation="relu", output="softmax", dtype="float32",
                 seed=None, alpha=0.0):
        w = v.as_widths(widths)
        output = v.as_choice(output, "output", tuple(OUTPUTS))
        if output == "softmax" and w[-1] < 2:
            raise ValueError(f"a softmax output needs at least 2 classes; got widths[-1]={w[-1]}")
        codes = _hidden_codes(activation, len(w) - 2) + [OUTPUTS[output]]
        # the buffers' layout hangs on them: read-only for good
        self.widths = v.frozen_int64(w)
        self.codes = v.frozen_int64(codes)
        self.output = output
        self.dtype = v.resolve_dtype(dtype)
        self.alpha = v.as_real(alpha, "alpha", 0.0)
        self.seed = v.as_seed(seed)
        self._rng = np.random.default_rng(self.seed)
        self._params = v.zeros(self.n_params, self.dtype, "widths", "the parameter buffer")
        self._grads = v.gradient_buffer(self._params)
        self._ws_key = None
        self._ws = None
        self.optimizer = None
        self.history = {}
        self.epochs_trained = 0
        self._partial = None
        self.initialize()

    # -- structure ---------------------------------------------------------
    @property
    def n_layers(self):
        return self.widths.size - 1

    @property
    def n_params(self):
        return v.n_params(self.widths.tolist())

    @property
    def activations(self):
        """Activation name of each layer (the last is the output's)."""
        names = [_act.ACTIVATION_NAMES[int(c)] for c in self.codes[:-1]]
        return names + [self.output]

    def _layout(self):
        off = 0
        for k in range(self.n_layers):
            d_in, d_out = int(self.widths[k]), int(self.widths[k + 1])
            yield off, off + d_in * d_out, d_in, d_out
            off += d_in * d_out + d_out

    def _views(self, flat):
        return [(flat[w:b].reshape(d_in, d_out), flat[b:b + d_out])
                for w, b, d_in, d_out in self._layout()]

    @property
    def params(self):
        """List of (W, b) per layer: views into the flat parameter buffer,
        W of shape (d_in, d_out), b of shape (d_out,).  Writing into them
        changes the model."""
        return self._views(self._params)

    @property
    def flat_params(self):
        """The flat parameter buffer itself (1-D view)."""
        return self._params

    def initialize(self):
        """Draw fresh weights from the model's generator; zero the biases."""
        for (W, b), code in zip(self.params, self.codes):
            d_in, d_out = W.shape
            if code == _act.RELU:
                r = np.sqrt(6.0 / d_in)
            elif code == _act.SIGMOID:
                r = np.sqrt(2.0 / (d_in + d_out))
            else:
                r = np.sqrt(6.0 / (d_in + d_out))
            W[...] = self._rng.uniform(-r, r, size=W.shape)
            b[...] = 0
        self.optimizer = None
        self.epochs_trained = 0
        self.history = {}
        self._partial = None

    @property
    def partial_epoch(self):
        """Where an interrupted epoch stands, or None after a complete one.

        A dict with "epoch" (1-based), "steps" (batches trained in it) and
        "rows".  The parameters, optimizer state and step count are those
        after these steps; ``history`` covers complete epochs only.  The
        next ``fit`` with the same data and ``batch_size`` trains the rest
        of this epoch first (the same rows in the same order), so that an
        interrupted and continued run equals an uninterrupted one.
        """
        p = self.__dict__.get("_partial")
        if p is None:
            return None
        return {"epoch": self.epochs_trained + 1, "steps": p["batches"],
                "rows": min(p["n"], p["batches"] * p["batch_size"])}

    def _partial_record(self, rng_state, n, batch_size, state, ranks=1):
        """What a continued fit needs of an unfinished epoch: the generator's
        state before the epoch's shuffle (None without shuffling), its size
        and batch size, and the batches done with their loss and
        right-answer sums (over all ranks for a data-parallel fit on
        ``ranks`` processes, whose ``n`` is this rank's)."""
        return {"rng_state": rng_state, "n": int(n), "batch_size": int(batch_size),
                "batches": int(state.done), "loss_sum": float(state.loss_sum),
                "correct": int(state.correct), "ranks": ranks}

    def _take_partial(self, n, batch_size, shuffle, ranks=1):
        """The unfinished epoch to continue, if it was over n rows with this
        batch size, shuffling and number of ranks; it is dropped either way."""
        p = self.__dict__.get("_partial")
        self._partial = None
        if p is None or p["n"] != n or p["batch_size"] != batch_size or \
                (p["rng_state"] is not None) != shuffle or p["ranks"] != ranks or \
                (ranks == 1 and p["batches"] > -(-n // batch_size)):
            return None
        return p

    # -- data --------------------------------------------------------------
    def _check_structure(self):
        """The model's own arrays as the kernels need them.  ``widths``,
        ``codes``, ``output``, ``alpha`` and ``dtype`` are plain attributes a
        user can reassign; an inconsistent change is a ValueError here, not
        a read out of bounds in a kernel.

        Returns a ``_Checked`` record (widths as Python ints, empty arrays
        for the kernels' unused arguments).  After a full check, ``widths``
        and ``codes`` are replaced by read-only copies that cannot be made
        writeable again (``_validation.frozen_int64``), and the record keeps
        the checked objects themselves (not their ids, which a new object may
        reuse once the old one is freed) and the layout of the four arrays
        (``_validation.array_state``).  The next call compares identities and
        layouts only, and checks in full again after any reassignment (even
        of an equal value) or in-place change of shape, dtype or flags.
        """
        w, c, p, g = self.widths, self.codes, self._params, self._grads
        ck = self.__dict__.get("_checked")
        if (ck is not None and ck.w is w and ck.c is c and ck.p is p and ck.g is g
                and ck.output is self.output and ck.dtype is self.dtype
                and ck.alpha is self.alpha
                # _validation.array_state of the four, inline (a per-step path)
                and ck.layout == (w.shape, w.dtype, w.flags.num, c.shape, c.dtype,
                                  c.flags.num, p.shape, p.dtype, p.flags.num, g.shape,
                                  g.dtype, g.flags.num)):
            return ck
        self.__dict__.pop("_checked", None)
        arrays_ok = all(isinstance(a, np.ndarray) and a.flags.c_contiguous
                        and a.flags.aligned for a in (w, c, p, g))
        ok = (arrays_ok and w.dtype == np.int64 and w.ndim == 1 and w.size >= 2
              and bool((w >= 1).all()) and c.dtype == np.int64 and c.shape == (w.size - 1,)
              and self.output in OUTPUTS and int(c[-1]) == OUTPUTS[self.output]
              and all(int(x) in _act.ACTIVATION_NAMES for x in c[:-1])
              and p.dtype == self.dtype and p.dtype in v.FLOAT_DTYPES
              and p.shape == (v.n_params(w.tolist()),) and g.shape == p.shape
              and g.dtype == p.dtype)
        if not ok:
            raise ValueError("the model's widths, codes, output, dtype or parameter buffer "
                             "were changed and no longer agree; build a new MLP instead")
        self.alpha = v.as_real(self.alpha, "alpha", 0.0)
        self.dtype = p.dtype  # equal already; the dtype object itself, for identity
        if not _frozen(w):
            self.widths = w = v.frozen_int64(w)
        if not _frozen(c):
            self.codes = c = v.frozen_int64(c)
        self._checked = ck = _Checked(self, w, c, p, g)
        return ck

    def _make_writeable(self):
        """Training writes the parameter and gradient buffers in place; a
        model unpickled from a read-only memory map gets its own copies."""
        if not self._params.flags.writeable:
            self._tob = None  # train_on_batch's record holds the old buffers
            self._params = v.aligned_copy(self._params)
        if not self._grads.flags.writeable:
            self._grads = v.gradient_buffer(self._params)

    def _check_X(self, X, name="X", ck=None):
        """X as the kernels take it: a C-contiguous array of the model dtype,
        or, for scipy.sparse input (any format), checked CSR ``SparseRows``
        (never densified).  ``ck``: the caller's ``_check_structure()``
        record, if it has one already."""
        if ck is None:
            ck = self._check_structure()
        if type(X) is np.ndarray:
            if (X.dtype is ck.dtype and X.ndim == 2 and (X.flags.num & v.CAW) == v.CAW
                    and X.shape[0] and X.shape[1] == ck.widths[0] and v.all_finite(X)):
                return X  # as the kernels take it: what follows would pass unchanged
        elif isinstance(X, v.SparseRows):  # checked already (fit's validation data)
            return X
        elif v.is_sparse(X):
            return self._check_sparse_X(X, name)
        X = v.as_float(X, name, 2, self.dtype)
        v.check_nonempty(X, name)
        if X.shape[1] != self.widths[0]:
            raise ValueError(f"{name} must have {self.widths[0]} columns (widths[0]); "
                             f"got shape {X.shape}")
        return X

    def _check_sparse_X(self, X, name):
        """scipy.sparse X (any format) as checked CSR SparseRows."""
        X = v.as_csr(X, name, self.dtype)
        if X.shape[0] == 0:
            raise ValueError(f"{name} is empty: expected at least one row; got shape "
                             f"{X.shape}")
        if X.shape[1] != self.widths[0]:
            raise ValueError(f"{name} must have {self.widths[0]} columns (widths[0]); "
                             f"got sparse shape {X.shape}")
        return X

    def _check_y(self, y, n, name="y", ck=None):
        """Returns (loss_kind, y_int, y_f) for the kernels.  ``ck`` as for
        ``_check_X``."""
        if ck is None:
            ck = self._check_structure()
        d_out = ck.widths[-1]
        empty_f, empty_i = ck.no_targets, ck.no_labels
        if (self.output == "softmax" and type(y) is np.ndarray and y.dtype is _INT64
                and y.ndim == 1 and y.shape[0] == n and (y.flags.num & v.CAW) == v.CAW
                and n and int(np.maximum.reduce(y.view(_UINT64))) < d_out):
            # int64 labels as the kernels take them, all in [0, d_out): seen
            # as unsigned, a negative label is above any class count, so one
            # maximum checks both bounds (as_labels would pass y unchanged)
            return _net.XENT_LABELS, y, empty_f
        ya = v.as_array(y, name)
        if self.output == "sigmoid":
            if ya.ndim == 1 and d_out == 1:
                ya = ya.reshape(-1, 1)
            if ya.ndim != 2 or ya.shape != (n, d_out):
                also = f" or ({n},) with 0/1 labels" if d_out == 1 else " (indicator matrix)"
                raise ValueError(f"{name} must have shape ({n}, {d_out}){also} for a sigmoid "
                                 f"output with {d_out} unit(s); got shape {ya.shape}")
            t = v.as_float(ya, name, 2, self.dtype)
            v.check_unit_interval(t, name)
            return _net.SIGMOID_XENT, empty_i, t
        if self.output == "softmax":
            if ya.ndim == 1:
                return _net.XENT_LABELS, v.as_labels(ya, name, n, d_out), empty_f
            t = v.as_float(ya, name, 2, self.dtype)
            if t.shape != (n, d_out):
                raise ValueError(f"{name} as target rows must have shape ({n}, {d_out}); "
                                 f"got {t.shape}")
            if (t < 0).any():
                raise ValueError(f"{name} target rows must be non-negative probabilities")
            v.check_target_rows(t, name)
            return _net.XENT_TARGETS, empty_i, t
        if ya.ndim == 1 and d_out == 1:
            ya = ya.reshape(-1, 1)
        t = v.as_float(ya, name, 2, self.dtype)
        if t.shape != (n, d_out):
            raise ValueError(f"{name} must have shape ({n}, {d_out})"
                             f"{f' or ({n},)' if d_out == 1 else ''}; got {ya.shape}")
        if self.output == "exp":
            if (t < 0).any():
                raise ValueError(f"{name} must be non-negative for the Poisson loss (output="
                                 f"'exp'); got minimum {t.min()}")
            return _net.POISSON, empty_i, t
        return _net.SQUARED_ERROR, empty_i, t

    def _workspace(self, cap, name="batch_size", dense_x=True):
        """Buffers for batches of up to ``cap`` rows, reused between calls
        (without the dense input batch ``xb`` when X is sparse).  Sizes are
        Python ints; one too large for memory is a ValueError naming ``name``
        (the argument that set ``cap``)."""
        # widths as bytes: exact for the checked int64 widths, and ten times
        # cheaper than a tuple of NumPy integers
        key = (cap, self.dtype, self.widths.tobytes(), dense_x)
        if self._ws_key != key:
            self._tob = None  # train_on_batch's record holds the old workspace
            w = [int(d) for d in self.widths]
            dt = self.dtype
            what = f"the workspace for {cap} rows"
            self._ws = None
            self._ws_key = None
            self._ws = {
                "acts": v.zeros(cap * sum(w[1:]), dt, name, what),
                "delta_a": v.zeros(cap * max(w[1:]), dt, name, what),
                "delta_b": v.zeros(cap * max(w[1:]), dt, name, what),
                "rw": v.zeros(cap, dt, name, what),
                "xb": v.zeros(cap * w[0] if dense_x else 0, dt, name, what),
                "yb_int": v.zeros(cap, np.int64, name, what),
                "yb_f": v.zeros(cap * w[-1], dt, name, what),
                "swb": v.zeros(cap, np.float64, name, what),
                # the second parameter and optimizer-state buffers: a short
                # epoch's steps keep their old values there, a longer one its
                # copy to go back to (_kernels.network.train_epoch)
                "p_next": v.zeros(self.n_params, dt, "widths", "the parameter buffer"),
                "s1_next": v.zeros(self.n_params, dt, "widths", "the parameter buffer"),
                "s2_next": v.zeros(self.n_params, dt, "widths", "the parameter buffer"),
                # the step's per-thread L2 sums and update severities
                "scratch": v.zeros(2 * numba.config.NUMBA_NUM_THREADS, dt, name, what),
                # product flops of a step per batch row, and what each thread
                # of a split step packs per batch row (_threads.step_threads)
                "flops_per_row": _r.flops_per_row(w),
                "pack_per_row": _threads.pack_per_row(w),
                # rows in order: train_on_batch is an epoch of one batch
                "order": np.arange(cap),
            }
            self._ws_key = key
        return self._ws

    # -- training ----------------------------------------------------------
    def fit(self, X, y, epochs=10, batch_size=32, optimizer=None, validation_data=None,
            shuffle=True, sample_weight=None, progress=False, checkpoint=None,
            checkpoint_every=1, comm=None):
        """Train with minibatch gradient descent.

        Parameters
        ----------
        X : array_like or scipy.sparse matrix/array, shape (n, d_0)
            Dense input, or sparse rows (CSR; other formats are converted to
            CSR once): the first layer then runs as sparse kernels and X is
            never densified.  The same holds for every method taking X.
        y : array_like
            Softmax output: integer labels (n,) or target rows (n, d_L).
            Sigmoid output: a 0/1 indicator matrix or probabilities
            (n, d_L), or 0/1 labels (n,) when d_L == 1.
            Regression: targets (n, d_L), or (n,) when d_L == 1.
        epochs : int
            Passes over the data.
        batch_size : int
            Rows per step (the last batch of an epoch may be smaller).
        optimizer : Optimizer, str or None
            ``fb.SGD(...)``, ``fb.Adam(...)``, "sgd" or "adam".  None keeps
            the optimizer (and its state) of the previous ``fit``, or makes
            ``Adam()`` the first time.
        validation_data : tuple (X_val, y_val), optional
            Evaluated after every epoch.
        shuffle : bool
            Shuffle rows each epoch with the model's seeded generator.
        sample_weight : array_like, shape (n,), optional
            Row weights: each batch loss is the weighted mean.
        progress : bool
            Show a tqdm progress bar over the rows of the whole fit, updated
            within each epoch (at least every 0.5 s on a long one): rows
            done, rate, ETA, the epoch's running loss and accuracy; the
            validation figures when each epoch ends.  Off, it costs nothing.
        checkpoint : str or path, optional
            Save the model with its optimizer state and generator state to
            this file (atomically) every ``checkpoint_every`` epochs (or
            seconds), and when a Ctrl-C stops the fit.  After an
            interruption, ``model = MLP.load(checkpoint)`` and
            ``model.fit(X, y, epochs=total - model.epochs_trained, ...)`` with
            the same data and batch size reach the same parameters as the
            uninterrupted run (a checkpoint written inside an epoch holds
            where that epoch stands; the fit finishes it first).
        checkpoint_every : int, str or datetime.timedelta
            Epochs between checkpoints, or a time between them for long
            epochs: "30s", "10min", "2h" (checked between slices of an
            epoch, so a checkpoint may fall inside one).
        comm : mpi4py communicator, optional
            Data-parallel training over the ranks of ``comm`` (e.g.
            ``MPI.COMM_WORLD``): X, y, sample_weight and validation_data are
            this rank's shard, ``batch_size`` is per rank, and each step
            equals one step over the union of the ranks' batches.  Rank 0
            writes the checkpoints.  See ``fastbp.distributed`` and
            docs/distributed.md.

        Returns
        -------
        history : dict of lists
            Per epoch: "loss" (training loss, L2 term included, averaged over
            the epoch's batches while training), "accuracy" for
            classification (all labels of a row right, for a sigmoid
            output), and "val_loss" / "val_accuracy" with validation
            data.  The same lists accumulate in ``model.history``.

        Raises
        ------
        DivergenceError
            If a step's loss or gradient is not finite; the parameters stay
            as they were before that step.
        KeyboardInterrupt
            On Ctrl-C, within a fraction of a second (each epoch runs as
            compiled calls on slices of whole batches of about 0.1 s, which
            train exactly as one call would).  The model keeps the
            parameters, optimizer state and step count of the last complete
            step; ``history`` covers complete epochs, ``partial_epoch`` says
            how many steps of the interrupted one were taken, and the next
            ``fit`` on the same data and batch size trains the rest of it
            first.  With ``checkpoint``, that state is written before the
            exception propagates.
        """
        self._tob = None  # train_on_batch's record: the next call checks in full
        if comm is not None:
            from . import distributed

            return distributed.fit(self, X, y, comm, epochs=epochs, batch_size=batch_size,
                                   optimizer=optimizer, validation_data=validation_data,
                                   shuffle=shuffle, sample_weight=sample_weight,
                                   progress=progress, checkpoint=checkpoint,
                                   checkpoint_every=checkpoint_every)
        ck = self._check_structure()
        X = self._check_X(X, ck=ck)
        n = X.shape[0]
        kind, y_int, y_f = self._check_y(y, n, ck=ck)
        sw = v.as_sample_weight(sample_weight, n)
        epochs = v.as_positive_int(epochs, "epochs")
        shuffle = v.as_bool(shuffle, "shuffle")
        if not isinstance(progress, _r.Progress):  # a bar the CLI shares between fits
            progress = v.as_bool(progress, "progress")
        every_e, every_s = _r.parse_every(checkpoint_every)
        if checkpoint is not None:
            # reported now, not after the first epoch
            checkpoint = v.check_writable_path(checkpoint, "checkpoint")
        batch_size = min(v.as_positive_int(batch_size, "batch_size"), n)
        if validation_data is not None:
            try:
                Xv, yv = validation_data
            except (TypeError, ValueError):
                raise TypeError("validation_data must be a tuple (X_val, y_val)") from None
            Xv = self._check_X(Xv, "validation_data[0]")
            self._check_y(yv, Xv.shape[0], "validation_data[1]")
        opt = self._resolve_optimizer(optimizer)
        hp = opt._checked_hp(self.dtype)  # the optimizer's own array: the kernels only read it
        self._make_writeable()
        s1, s2 = opt.bind(self._params)
        sparse = isinstance(X, v.SparseRows)
        ws = self._workspace(batch_size, dense_x=not sparse)
        if sparse:
            sb = _sparse_batch_buffers(X, batch_size)
            train_epoch_sparse = _sparse_kernels().train_epoch_sparse
        classify = self.output in CLASSIFIER_OUTPUTS
        history = {"loss": []}
        if classify:
            history["accuracy"] = []
        if validation_data is not None:
            history["val_loss"] = []
            if classify:
                history["val_accuracy"] = []

        # A first fit in a fresh environment compiles for seconds: say so
        # before the wait, and start the bar after the first slice so that
        # its rate and ETA measure training, not compilation.
        compiling = progress is True and compile_pending(self.dtype)
        if compiling:
            print(compile_notice(self.dtype), file=sys.stderr, flush=True)
        nb = -(-n // batch_size)
        slicer = self._slicer(batch_size)
        partial = self._take_partial(n, batch_size, shuffle)
        own_bar = progress is True
        bar = progress if isinstance(progress, _r.Progress) else None
        total_rows = epochs * n - (0 if partial is None else
                                   min(n, partial["batches"] * batch_size))
        last_save = [time.monotonic()]
        first_epoch = self.epochs_trained + 1
        perm = None

        commit = _committer(opt, 4)

        if sparse:
            nt, guard = self._sparse_threads(batch_size)

            def call(a, b, loss_sum):
                with guard:
                    out = _r.call_committing(train_epoch_sparse, (
                        _rec.sparse_data(X.data, X.indices, X.indptr, y_int, y_f, sw, kind),
                        perm[a:b], batch_size, self._net_record(),
                        _rec.optimizer(opt.kind, hp, s1, s2, opt.step_), _rec.workspace(ws),
                        sb, loss_sum, nt), commit)
                return out[0], out[1], out[2], out[3]
        else:
            def call(a, b, loss_sum):
                # the threads are chosen for the epoch's batches (rows=n), as
                # for one call over the whole epoch
                out = self._dense_epoch(X, y_int, y_f, sw, perm[a:b], batch_size, kind,
                                        opt, hp, ws, rows=n, loss_sum=loss_sum)
                return out[0], out[1], out[2], out[3]

        def save_checkpoint(state=None):
            # mid-epoch (state given): the file also holds where the epoch stands
            self._partial = None if state is None else self._partial_record(
                rng_state, n, batch_size, state)
            try:
                self.save(checkpoint, include_optimizer=True)
            finally:
                self._partial = None
            last_save[0] = time.monotonic()

        state = rows_shown = None

        def report(rows):
            nonlocal bar, rows_shown
            if progress is not False:
                if bar is None:  # after the first slice, which may have compiled
                    bar = _r.Progress(total_rows, epochs, initial=rows - rows_shown,
                                      first_epoch=first_epoch)
                    bar.start_epoch(self.epochs_trained + 1)
                    rows_shown = rows
                seen = state.done * batch_size if state.done < nb else n
                bar.advance(rows - rows_shown, state.loss_sum / max(1, seen),
                            state.correct / max(1, seen) if classify else None)
                rows_shown = rows
            if every_s is not None and time.monotonic() - last_save[0] >= every_s \
                    and state.done < nb:
                save_checkpoint(state)

        try:
            with _r.deferred():
                for _ in range(epochs):
                    state = _r.EpochState()
                    if partial is not None:
                        if partial["rng_state"] is not None:
                            self._rng.bit_generator.state = partial["rng_state"]
                        state = _r.EpochState(partial["batches"], partial["loss_sum"],
                                              partial["correct"])
                        partial = None
                    rows_shown = min(n, state.done * batch_size)
                    rng_state = self._rng.bit_generator.state if shuffle else None
                    perm = self._rng.permutation(n) if shuffle else np.arange(n)
                    if bar is not None:
                        bar.start_epoch(self.epochs_trained + 1)
                    try:
                        status, batch = _r.run_epoch(call, n, batch_size, slicer, state,
                                                     report)
                        if status != 0:
                            raise DivergenceError.from_status(
                                status, self.epochs_trained + 1, batch + 1, batch_size)
                        scores = None
                        if validation_data is not None:
                            # NumPy's OpenBLAS single-threaded here too when the
                            # steps run on several threads: its woken threads
                            # would spin for ~0.1 s into the next epoch, on the
                            # cores the steps use
                            with step_threads()[1]:
                                scores = self.evaluate(Xv, yv)
                    except KeyboardInterrupt:
                        # the last complete step, and where the epoch stands
                        try:
                            if checkpoint is not None:
                                save_checkpoint(state)
                        finally:
                            self._partial = self._partial_record(rng_state, n,
                                                                 batch_size, state)
                        raise
                    # one epoch's bookkeeping, with no check in between
                    self.epochs_trained += 1
                    history["loss"].append(state.loss_sum / n)
                    if classify:
                        history["accuracy"].append(state.correct / n)
                    if scores is not None:
                        history["val_loss"].append(scores["loss"])
                        if classify:
                            history["val_accuracy"].append(scores["accuracy"])
                    for k, vals in history.items():
                        self.history.setdefault(k, []).append(vals[-1])
                    if checkpoint is not None and (
                            (every_e is not None and self.epochs_trained % every_e == 0)
                            or (every_s is not None
                                and time.monotonic() - last_save[0] >= every_s)):
                        save_checkpoint()
                    if bar is not None:
                        bar.end_epoch({k: vals[-1] for k, vals in history.items()})
        finally:
            if bar is not None and own_bar:
                bar.close()
        return history

    def _dense_epoch(self, X, y_int, y_f, sw, perm, batch_size, kind, opt, hp, ws,
                     rows=None, loss_sum=0.0, check_inputs=False):
        """The compiled epoch over the rows ``perm`` of dense X (checked), with
        the optimizer ``opt`` (bound: its state matches the parameters), its
        hyper-parameters ``hp`` and the workspace ``ws``; returns what
        ``_kernels.network.train_epoch`` does, with the step count committed
        to ``opt.step_`` (even when a Ctrl-C is raised as the call returns:
        ``_responsive.call_committing``).  The steps use the Numba threads of
        the calling thread, with NumPy's OpenBLAS single-threaded meanwhile
        when there are several (``_threads.step_threads``), chosen for
        batches of ``min(batch_size, rows)`` rows (rows: the epoch's, when
        ``perm`` is a slice of it; default ``perm.size``).  ``loss_sum``: the
        epoch's loss sum so far, which the kernel adds to.  ``check_inputs``:
        the kernel checks X and the labels of each batch (statuses BAD_X,
        BAD_LABEL), for callers that did not."""
        s1, s2 = opt.state_
        rows = perm.size if rows is None else rows
        m = min(batch_size, rows)
        nt, guard = step_threads(m * ws["flops_per_row"], m * ws["pack_per_row"],
                                 self._params.size)
        if nt < -1:
            nt = self._batch_scratch(ws, nt)[0]
        with guard:
            return _r.call_committing(_net.train_epoch, (
                _rec.data(X, y_int, y_f, sw, kind), perm, batch_size, self._net_record(),
                _rec.optimizer(opt.kind, hp, s1, s2, opt.step_), _rec.workspace(ws), nt,
                float(loss_sum), check_inputs), _committer(opt, 4))

    def _batch_scratch(self, ws, nt):
        """For a step split by the rows of its batch between -nt threads
        (nt < -1, ``_threads.step_threads``): make the workspace's
        ``scratch`` hold a gradient buffer per extra thread
        (``_kernels.network.batch_scratch_size``), allocated on the first
        such step.  Returns (the threads to use, whether ``scratch`` was
        reallocated: a record holding the old one is then out of date).
        Where the buffers would take more than an eighth of this machine's
        memory the step is split by blocks of W instead (nt = -nt), which
        needs none."""
        need = _net.batch_scratch_size(-nt, self._params.size)
        if ws["scratch"].size >= need:
            return nt, False
        if need * self.dtype.itemsize > v.MEMORY_BYTES // 8:
            return -nt, False
        ws["scratch"] = v.zeros(need, self.dtype, "batch_size",
                                f"the gradient buffers of {-nt} threads")
        return nt, True

    def _slicer(self, batch_size):
        """The ``_responsive.Slicer`` of this model's epochs of ``batch_size``
        rows, kept for the last batch size used, so that a fit called one
        epoch at a time (scikit-learn's loop, a user's) starts its epochs
        with slices of the size measured before (not a first slice of
        ``FIRST_FLOPS`` each time)."""
        key = (batch_size, self.widths.tobytes())
        cached = self.__dict__.get("_slicers")
        if cached is None or cached[0] != key:
            cached = self._slicers = (key, _r.Slicer(batch_size, self.widths))
        return cached[1]

    def _net_record(self):
        """The network record of the step and epoch kernels (records.py)."""
        return _rec.network(self._params, self._grads, self.widths, self.codes, self.alpha)

    def _resolve_optimizer(self, optimizer):
        if optimizer is not None:
            self.optimizer = get_optimizer(optimizer)
        elif self.optimizer is None:
            self.optimizer = Adam()
        return self.optimizer

    def train_on_batch(self, X, y, optimizer=None, sample_weight=None):
        """One training step (forward, loss, backward, update) on all rows of
        X as a single batch, in one compiled call.

        Arguments as in ``fit``.  Returns the batch loss (L2 term included).
        Raises DivergenceError (parameters unchanged) on a non-finite loss or
        gradient.  The step is one compiled call: a Ctrl-C during it is
        raised when it returns, with the step applied and counted.

        Calls after the first, without ``optimizer`` or ``sample_weight``
        and with X already a C-contiguous, writeable array of the model's
        dtype, take a fast path (about 4 us of Python per call at 64-128-10
        b32, docs/performance.md): the compiled step checks the values of X
        and of int64 labels as it reads them, with the same errors.
        """
        fast = self.__dict__.get("_tob")
        if (fast is not None and optimizer is None and sample_weight is None
                and type(X) is np.ndarray and X.dtype is fast.dtype and X.ndim == 2
                and (X.flags.num & v.CAW) == v.CAW and 0 < X.shape[0] <= fast.cap
                and X.shape[1] == fast.d_in and self.optimizer is fast.opt
                and type(fast.opt.step_) is int and fast.opt.step_ >= 0
                and fast.holds(self)):
            return self._train_on_batch_fast(X, y, fast)
        ck = self._check_structure()  # cached: see its docstring (and Optimizer's)
        X = self._check_X(X, ck=ck)
        n = X.shape[0]
        kind, y_int, y_f = self._check_y(y, n, ck=ck)
        sw = (ck.no_weights if sample_weight is None
              else v.as_sample_weight(sample_weight, n))
        opt = self._resolve_optimizer(optimizer)
        hp = opt._checked_hp(self.dtype)
        if not ck.writeable:
            self._make_writeable()
        opt.bind(self._params)  # checks the state; _dense_epoch reads it
        if isinstance(X, v.SparseRows):
            return self._train_on_sparse_batch(X, kind, y_int, y_f, sw, opt)
        ws = self._workspace(max(n, self._ws_key[0]) if self._ws_key else n, "X")
        # an epoch of one batch over the rows in order: the same compiled
        # step as fit, and the epoch adopts the step's second buffer (a
        # Ctrl-C during it is raised after it, the step counted: _dense_epoch)
        status, _, loss, _, _ = self._dense_epoch(X, y_int, y_f, sw, ws["order"][:n], n,
                                                  kind, opt, hp, ws)
        if status != 0:
            raise DivergenceError.from_status(status, self.epochs_trained + 1, 1, n)
        if ck.writeable:  # else the parameters were copied: the next call checks again
            self._tob = _BatchCall(self, ck, opt, hp, ws)
        return loss / n

    def _train_on_batch_fast(self, X, y, fast):
        """train_on_batch after a first call with the same model structure,
        optimizer and workspace (``_BatchCall``, which the caller found
        to hold): X (checked by the caller but for its values) and int64
        labels go to the epoch kernel as they are, and the kernel checks
        their values as it gathers them (issue 16, item 5: the Python checks
        and calls around the step cost 22 us at 64-128-10 b32, more than
        half the step)."""
        n = X.shape[0]
        ck, opt = fast.ck, fast.opt
        labels = (type(y) is np.ndarray and y.dtype is _INT64 and y.ndim == 1
                  and y.shape[0] == n and fast.labels_ok and (y.flags.num & v.CAW) == v.CAW)
        if labels:
            kind, y_int, y_f = _net.XENT_LABELS, y, ck.no_targets
        else:
            try:
                kind, y_int, y_f = self._check_y(y, n, ck=ck)
            except (TypeError, ValueError):
                self._check_X(X, ck=ck)  # the checked path reports a bad X first
                raise
        if n * fast.flops_per_row < 2 * _threads.PARALLEL_MIN_FLOPS:
            nt, guard = 1, None  # step_threads' first rule, without its call
        else:
            nt, guard = step_threads(n * fast.flops_per_row, n * fast.pack_per_row,
                                     fast.n_params)
            if nt < -1:
                nt, grown = self._batch_scratch(fast.ws, nt)
                if grown:
                    fast.ws_record = _rec.workspace(fast.ws)
        # the data record (records.data), inline: a Python call less per step
        args = ((X, y_int, y_f, ck.no_weights, kind), fast.order[:n], n, fast.net,
                fast.opt_head + (opt.step_,), fast.ws_record, nt, 0.0, True)
        # with int64 labels every argument has the same Numba type from call
        # to call (X and y as checked above, the rest held by ``fast``), so
        # the compiled epoch is called directly, without the dispatcher
        # typing four records each time (_entry_point)
        entry = fast.entry if labels else None
        if guard is None:
            box = []
            try:  # _run_step, inline: a Python call less per step
                box.extend(starmap(entry or _net.train_epoch, (args,)))
            finally:
                if box:
                    opt.step_ = int(box[0][4])
            status, _, loss, _, _ = box[0]
        else:
            with guard:
                status, loss = _run_step(entry or _net.train_epoch, args, opt)
        if labels and entry is None:
            fast.entry = _entry_point(_net.train_epoch, args)
        if status != 0:
            if status >= _net.BAD_X:  # the checks of the slow path raise its errors
                self._check_X(X, ck=ck)
                self._check_y(y, n, ck=ck)
                raise ValueError("X or y holds a value the step cannot take")  # not reached
            raise DivergenceError.from_status(status, self.epochs_trained + 1, 1, n)
        return loss / n

    def _sparse_threads(self, batch_size):
        """``_threads.sparse_threads`` for steps of ``batch_size`` rows of
        sparse X: (threads of each step's update, the BLAS guard)."""
        w = [int(d) for d in self.widths]
        tail = 6.0 * batch_size * sum(a * b for a, b in itertools.pairwise(w[1:]))
        return _threads.sparse_threads(tail, self._params.size)

    def _train_on_sparse_batch(self, X, kind, y_int, y_f, sw, opt):
        """train_on_batch for SparseRows X: the sparse epoch kernel over all
        rows in order as one batch (one step, the same update)."""
        n = X.shape[0]
        s1, s2 = opt.bind(self._params)
        ws = self._workspace(max(n, self._ws_key[0]) if self._ws_key else n,
                             dense_x=False)
        sb = _sparse_batch_buffers(X, n)
        nt, guard = self._sparse_threads(n)
        with guard:
            status, _, _, _, _, loss = _r.call_committing(
                _sparse_kernels().train_epoch_sparse, (
                    _rec.sparse_data(X.data, X.indices, X.indptr, y_int, y_f, sw, kind),
                    np.arange(n), n, self._net_record(),
                    _rec.optimizer(opt.kind, opt._checked_hp(self.dtype), s1, s2, opt.step_),
                    _rec.workspace(ws), sb, 0.0, nt), _committer(opt, 4))
        if status != 0:
            raise DivergenceError.from_status(status, self.epochs_trained + 1, 1, n)
        return float(loss)

    def loss_and_grad(self, X, y, sample_weight=None):
        """Loss over all rows of X and its gradient, without updating.

        One compiled call over all rows (cutting it into row chunks would
        sum the gradient in another order, not bit-identically); a long one
        runs in a worker thread so that Ctrl-C raises KeyboardInterrupt at
        once, the abandoned call finishing in the background.

        Returns
        -------
        loss : float
            Mean loss over the rows, L2 term included.
        grads : list of (dW, db)
            Gradients laid out like ``params`` (fresh arrays).
        """
        X = self._check_X(X)
        n = X.shape[0]
        kind, y_int, y_f = self._check_y(y, n)
        sw = v.as_sample_weight(sample_weight, n)
        w, dt = [int(d) for d in self.widths], self.dtype
        what = f"the workspace for all {n} rows"
        big = n * max(w[1:])
        acts = v.zeros(n * sum(w[1:]), dt, "X", what)
        delta_a = v.zeros(big, dt, "X", what)
        delta_b = v.zeros(big, dt, "X", what)
        grads = np.empty_like(self._params)
        # One compiled call over all rows (cut into row chunks it would sum
        # the gradient in another order: not bit-identical).  A long one
        # runs in a worker thread so that Ctrl-C is raised at once; it
        # writes only the fresh arrays above, which it then keeps.
        run = _r.in_thread if n * _r.flops_per_row(w) > _r.THREAD_FLOPS else _call
        if isinstance(X, v.SparseRows):
            loss, _ = run(_sparse_kernels().loss_and_grad_sparse,
                          self._params, grads, self.widths, self.codes, kind, self.alpha,
                          X.data, X.indices, X.indptr, y_int, y_f, sw,
                          acts, delta_a, delta_b, np.empty(n, dt))
            return float(loss), self._views(grads)
        loss, _ = run(_net.loss_and_grad,
                      self._params, grads, self.widths, self.codes, kind, self.alpha, X,
                      y_int, y_f, sw, acts, delta_a, delta_b, np.empty(n, dt))
        return float(loss), self._views(grads)

    # -- lean paths for callers that loop (fastbp.sklearn) --------------------
    def _prepare_data(self, X, y, sample_weight=None):
        """Check dense X, y and sample weights once for repeated lean calls.

        Returns the tuple ``(X, loss_kind, y_int, y_f, sw)`` that
        ``_run_epoch`` and ``_full_loss_grad`` take, so that a loop over
        epochs or function evaluations does not check the whole X again.
        """
        X = self._check_X(X)
        n = X.shape[0]
        kind, y_int, y_f = self._check_y(y, n)
        return X, kind, y_int, y_f, v.as_sample_weight(sample_weight, n)

    def _run_epoch(self, data, batch_size, optimizer, shuffle=True):
        """One epoch of ``fit`` over data from ``_prepare_data``; no history.

        ``batch_size`` (int, 1..n) and ``optimizer`` (an Optimizer) are taken
        as given.  Returns the epoch's mean training loss (float).  Raises
        DivergenceError as ``fit`` does.
        """
        X, kind, y_int, y_f, sw = data
        n = X.shape[0]
        self.optimizer = optimizer
        optimizer.bind(self._params)  # checks the state; _dense_epoch reads it
        ws = self._workspace(batch_size)
        perm = self._rng.permutation(n) if shuffle else np.arange(n)
        hp = optimizer.hyperparameters()

        def call(a, b, loss_sum):
            return self._dense_epoch(X, y_int, y_f, sw, perm[a:b], batch_size, kind,
                                     optimizer, hp, ws, rows=n, loss_sum=loss_sum)[:4]

        state = _r.EpochState()
        status, batch = _r.run_epoch(call, n, batch_size, self._slicer(batch_size), state)
        if status != 0:
            raise DivergenceError.from_status(status, self.epochs_trained + 1, batch + 1,
                                              batch_size)
        self.epochs_trained += 1
        return state.loss_sum / n

    def _full_loss_grad(self, data):
        """Loss (L2 term included) over all rows of data from
        ``_prepare_data``, with its gradient written into the model's own
        flat gradient buffer (``self._grads``); full-batch workspaces are
        kept between calls.  Returns the loss (float)."""
        X, kind, y_int, y_f, sw = data
        n = X.shape[0]
        w, dt = self.widths, self.dtype
        key = (n, dt, tuple(w))
        if getattr(self, "_full_ws_key", None) != key:
            big = n * int(w[1:].max())
            self._full_ws = (np.empty(n * int(w[1:].sum()), dt), np.empty(big, dt),
                             np.empty(big, dt), np.empty(n, dt))
            self._full_ws_key = key
        acts, da, db, rw = self._full_ws
        args = (self._params, self._grads, w, self.codes, kind, self.alpha, X, y_int, y_f,
                sw, acts, da, db, rw)
        if n * _r.flops_per_row(w) <= _r.THREAD_FLOPS:
            loss, _ = _net.loss_and_grad(*args)
            return float(loss)
        try:
            loss, _ = _r.in_thread(_net.loss_and_grad, *args)
        except KeyboardInterrupt:
            # the abandoned worker still writes these: new ones for the model
            self._grads = v.gradient_buffer(self._params)
            self._full_ws = self._full_ws_key = None
            raise
        return float(loss)

    # -- inference ---------------------------------------------------------
    def forward(self, X):
        """Raw network outputs (logits for classification), shape (n, d_L)."""
        X = self._check_X(X)
        n = X.shape[0]
        out = np.empty((n, int(self.widths[-1])), dtype=self.dtype)
        per_row = sum(int(d) for d in self.widths[1:])
        # rows per chunk: at most _PREDICT_CHUNK, and activations of at most
        # _PREDICT_VALUES values, however wide the layers
        # and, so that Ctrl-C and progress are seen between chunks, at most
        # _PREDICT_FLOPS of work (but at least 64 rows)
        cap = max(1, min(n, _PREDICT_CHUNK, _PREDICT_VALUES // per_row,
                         max(64, int(3 * _PREDICT_FLOPS // _r.flops_per_row(self.widths)))))
        acts = v.zeros(cap * per_row, self.dtype, "widths", "the activations of one row")
        if isinstance(X, v.SparseRows):
            forward_sparse = _sparse_kernels().forward_sparse
            for s in range(0, n, cap):
                e = min(s + cap, n)
                # indptr[s:e + 1] addresses rows s .. e - 1 in place (no copy)
                out[s:e] = forward_sparse(self._params, self.widths, self.codes,
                                          X.data, X.indices, X.indptr[s:e + 1], acts)
                _r.check()
        else:
            for s in range(0, n, cap):
                out[s:s + cap] = _net.forward(self._params, self.widths, self.codes,
                                              X[s:s + cap], acts)
                _r.check()
        if not np.isfinite(out).all():
            row = int(np.argmax(~np.isfinite(out).all(axis=1)))
            values = X.data if isinstance(X, v.SparseRows) else X
            big = np.abs(values).max() if values.size else 0.0
            raise ValueError(f"X: the network's outputs overflow to infinity or NaN (first "
                             f"at row {row}, largest |X| {big:.3g}); scale the "
                             "inputs as the training data were")
        return out

    def predict_proba(self, X):
        """Probabilities (classification only).

        Softmax output: class probabilities, shape (n, d_L).  Sigmoid output
        with one unit: ``[1 - p, p]``, shape (n, 2), as scikit-learn's binary
        classifier; with d_L > 1 units: the d_L label probabilities, shape
        (n, d_L).
        """
        if self.output not in CLASSIFIER_OUTPUTS:
            raise ValueError("predict_proba needs a softmax output (or a sigmoid one); this "
                             "model regresses")
        z = self.forward(X)
        if self.output == "softmax":
            _loss.softmax_rows(z)
            return z
        _act.activate(z, _act.SIGMOID)
        if z.shape[1] == 1:
            return np.hstack([1 - z, z])
        return z

    def predict(self, X):
        """Class labels (n,) for a softmax output; for a sigmoid output 0/1
        labels ``p > 0.5``, shape (n,) with one unit, else (n, d_L) (int64);
        outputs for regression ((n,) when there is one output, else
        (n, d_L))."""
        z = self.forward(X)
        if self.output == "softmax":
            return np.argmax(z, axis=1)
        if self.output == "sigmoid":
            _act.activate(z, _act.SIGMOID)
            labels = (z > 0.5).astype(np.int64)
            return labels[:, 0] if labels.shape[1] == 1 else labels
        if self.output == "exp":
            np.exp(z, out=z)
        return z[:, 0] if z.shape[1] == 1 else z

    def evaluate(self, X, y, sample_weight=None, comm=None):
        """Loss (without the L2 term) and, for classification, accuracy.

        With an mpi4py communicator ``comm``, each rank passes its shard and
        every rank gets the global figures (weighted over all ranks' rows).

        Returns
        -------
        dict with "loss" and, for classification, "accuracy" (for a sigmoid
        output the share of rows whose labels are all right, as
        scikit-learn's multilabel accuracy).
        """
        if comm is not None:
            from . import distributed

            return distributed.evaluate(self, X, y, sample_weight, comm)
        z = self.forward(X)
        n = z.shape[0]
        kind, y_int, y_f = self._check_y(y, n)
        sw = v.as_sample_weight(sample_weight, n)
        w = np.empty(n, dtype=self.dtype)
        _loss.row_weights(n, sw, w)
        dz = np.empty_like(z)
        loss, correct = _net.output_loss(kind, z, y_int, y_f, w, dz)
        scores = {"loss": float(loss)}
        if self.output in CLASSIFIER_OUTPUTS:
            if sw.size and kind == _net.SIGMOID_XENT:
                _act.activate(z, _act.SIGMOID)
                hit = ((z > 0.5) == (y_f > 0.5)).all(axis=1)
                scores["accuracy"] = float(np.sum(sw * hit) / sw.sum())
            elif sw.size:
                hit = np.argmax(z, 1) == (y_int if kind == _net.XENT_LABELS
                                          else np.argmax(y_f, 1))
                scores["accuracy"] = float(np.sum(sw * hit) / sw.sum())
            else:
                scores["accuracy"] = correct / n
        return scores

    def score(self, X, y):
        """Accuracy for classification (all labels of a row right, for a
        sigmoid output), R^2 for regression."""
        if self.output in CLASSIFIER_OUTPUTS:
            return self.evaluate(X, y)["accuracy"]
        pred = self.forward(X).astype(np.float64)
        if self.output == "exp":
            np.exp(pred, out=pred)
        _, _, t = self._check_y(y, pred.shape[0])
        t = t.astype(np.float64)
        ss_res = ((t - pred) ** 2).sum(0)
        ss_tot = ((t - t.mean(0)) ** 2).sum(0)
        return float(np.mean(1 - ss_res / np.where(ss_tot == 0, 1, ss_tot)))

    # -- files -------------------------------------------------------------
    def save(self, path, include_optimizer=False):
        """Write the model to a .npz file atomically (temporary file, rename).

        The file holds the architecture, parameters, history and generator
        state; with ``include_optimizer`` also the optimizer and its state,
        so that ``MLP.load`` followed by ``fit`` continues exactly as an
        uninterrupted ``fit`` would (checkpoints are written this way).
        """
        save_model_file(path, self, include_optimizer)

    @classmethod
    def load(cls, path):
        """Read a model written by ``save``; checks format, shapes and dtype."""
        meta = load_model_file(path)
        model = cls.__new__(cls)
        model.widths = meta["widths"]
        model.codes = meta["codes"]
        model.output = meta["output"]
        model.dtype = meta["params"].dtype
        model.alpha = meta["alpha"]
        model.seed = None
        model._rng = meta["rng"] if meta["rng"] is not None else np.random.default_rng()
        model._params = meta["params"]
        model._grads = v.gradient_buffer(model._params)
        model._ws_key = None
        model._ws = None
        model.optimizer = None
        opt = meta["optimizer"]
        if opt is not None:
            try:
                # built through the constructor, so file settings are checked
                kind = type(get_optimizer(opt["name"].lower()))
                model.optimizer = kind(**opt["settings"])
            except (ValueError, TypeError) as exc:
                raise ValueError(f"cannot load model from {path!r}: bad optimizer "
                                 f"({exc})") from None
            model.optimizer.state_ = opt["state"]
            model.optimizer.step_ = opt["step"]
        model.history = meta["history"]
        model.epochs_trained = meta["epochs_trained"]
        model._partial = meta["partial_epoch"]
        return model

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_checked", None)  # a check of this process's objects; a copy checks afresh
        state.pop("_tob", None)  # holds this model's buffers: a copy must not write them
        state.pop("_slicers", None)  # a time measured in this process
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        # an unpickled copy's buffers start where the unpickler put them: the
        # parameters and gradient aligned again, and the workspace made anew,
        # as a new model's are (_validation.BUFFER_ALIGN); no view of them
        # has been handed out yet.  (Read-only ones are copied, aligned, by
        # _make_writeable before training.)
        for key in ("_params", "_grads"):
            if key in state:
                setattr(self, key, v.realigned(state[key]))
        self._ws = self._ws_key = None

    def __repr__(self):
        acts = self.activations
        hidden = acts[0] if len(set(acts[:-1])) == 1 and acts[:-1] else acts[:-1]
        return (f"MLP({self.widths.tolist()}, activation={hidden!r}, output={self.output!r}, "
                f"dtype='{self.dtype}')")
