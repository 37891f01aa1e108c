"""Optimizers: settings plus state, each applied by one fused kernel.

An optimizer object holds its hyper-parameters and, once bound to a model
by ``MLP.fit``, its state buffers (flat, the layout of the parameters).
Fitting again with the same object continues from that state.
"""

import operator
import weakref
from itertools import starmap

import numpy as np

from . import _validation as v
from ._kernels import optim as _k

__all__ = ["SGD", "Adam", "get_optimizer"]


class Optimizer:
    kind = -1

    def __init__(self):
        self.state_ = None  # (s1, s2) buffers, created by bind()
        self.step_ = 0

    def hyperparameters(self):
        """float64 array as the update kernel reads it."""
        raise NotImplementedError

    #: settings that must stay > 0 once cast to the parameters' dtype
    _POSITIVE = ("lr",)

    def checked_hyperparameters(self, dtype):
        """``hyperparameters()`` after checking the settings again, as the
        constructor does: they are plain attributes a user may have changed
        (``opt.lr = "0.1"`` must not reach a kernel).  A positive setting
        that rounds to 0 in ``dtype`` (``lr=1e-50`` in float32: no training
        at all; ``eps=1e-50``: 0/0 for a zero gradient), or is infinite
        there, is refused.  Returns a fresh array."""
        return self._checked_hp(v.resolve_dtype(dtype)).copy()

    def _checked_hp(self, dtype):
        """``checked_hyperparameters`` for the per-step paths: the array is
        the optimizer's own (the kernels only read it; do not write it).

        The full check runs once per change of settings: the setting objects
        it passed (and normalised to plain floats and bools) are kept, and
        the next call compares the current attributes to them by identity
        only, which is exact (an assignment, even of an equal value, makes
        the check run again) and costs no float comparisons.  ``dtype``
        must be a NumPy dtype; it is compared by identity too (an equal but
        distinct dtype object only costs a full check).
        """
        hp = self._cached_hp(dtype)
        if hp is not None:
            return hp
        self.__dict__.pop("_checked", None)
        settings = {k: getattr(self, k) for k in self._fields}
        fresh = type(self)(**settings)  # the constructor's checks, its messages
        info = np.finfo(dtype)
        tiny, big = float(info.tiny), float(info.max)
        for k in self._POSITIVE:
            value = getattr(fresh, k)
            if value < tiny or value > big:
                what = "rounds to 0" if value < tiny else "overflows"
                raise ValueError(f"{k}={settings[k]!r} {what} in {info.dtype}; use "
                                 f"{tiny:.3g} <= {k} <= {big:.3g}")
        # the checked values as the constructor normalised them (float, bool):
        # immutable, so that identity implies the same value
        for k in self._fields:
            setattr(self, k, getattr(fresh, k))
        hp = self.hyperparameters()
        self._checked = (dtype, self._settings(self), hp)
        return hp

    def _cached_hp(self, dtype):
        """The array of the last full check of ``_checked_hp`` while it still
        holds (the same dtype object and setting objects), else None.
        Changes nothing."""
        ck = self.__dict__.get("_checked")
        if (ck is not None and ck[0] is dtype
                and all(map(operator.is_, self._settings(self), ck[1]))):
            return ck[2]
        return None

    def _cached_state(self, params):
        """The state tuple ``bind(params)`` checked last while that check
        still holds (the same objects, layouts and a valid ``step_``), else
        None.  Changes nothing: train_on_batch's fast path asks this and
        takes the checked path, in its order of checks, when it is None."""
        s = self.state_
        ck = self.__dict__.get("_bound")
        if (ck is not None and s is ck[0] and params is ck[1]()
                and type(self.step_) is int and self.step_ >= 0):
            a, b = s
            # _validation.array_state of the three, inline (a per-step path)
            if ck[2] == (a.shape, a.dtype, a.flags.num, b.shape, b.dtype, b.flags.num,
                         params.shape, params.dtype, params.flags.num):
                return s
        return None

    def bind(self, params):
        """Make sure the state matches ``params`` (size and dtype).

        A state of another size or dtype (the optimizer was used with another
        model) is replaced by a fresh one.  A state of the right size that
        the kernels could not use safely (read-only, non-contiguous, sharing
        memory with the parameters, a bad step count) is refused with a
        ValueError rather than overwritten silently.  (Values are not read
        here: a state value that makes an update non-finite is caught by the
        update check; ``MLP.load`` checks the values of a loaded state.)

        After a full check, the state tuple and ``params`` (the objects; params
        by weak reference) and the layout of the three arrays (``_validation.array_state``) are
        kept: while they are the same, the next call only checks ``step_``.
        Any reassignment of ``state_`` or change of an array's flags, shape
        or dtype runs the full check again.
        """
        s = self._cached_state(params)
        if s is not None:
            return s
        s = self.state_
        self.__dict__.pop("_bound", None)
        if s is None or not _same_buffer_kind(s, params):
            # aligned as the parameters are (_validation.BUFFER_ALIGN)
            self.state_ = (v.zeros(params.size, params.dtype, "params", "the optimizer state"),
                           v.zeros(params.size, params.dtype, "params", "the optimizer state"))
            self.step_ = 0
        else:
            check_state(self, params)
        s = self.state_
        # a tuple cannot change its items: the tuple's identity fixes the
        # arrays.  params by weak reference: the optimizer must not keep a
        # dropped model's buffer alive, and a dead reference (None) cannot
        # match a new array that reuses the freed one's id
        self._bound = (s, weakref.ref(params), v.array_state(s[0]) + v.array_state(s[1])
                       + v.array_state(params))
        return s

    def reset(self):
        """Forget the state (momentum buffers, step count)."""
        self.state_ = None
        self.step_ = 0

    def step(self, params, grads):
        """Update ``params`` in place from ``grads``.

        Parameters
        ----------
        params : ndarray, 1-D, float32 or float64
            The flat parameter buffer: C-contiguous and writeable (it is
            updated in place).
        grads : array_like, shape of ``params``
            Gradients, converted once to the dtype of ``params``; must be
            finite.

        Raises
        ------
        TypeError, ValueError
            Bad buffers (checked before any kernel runs).
        FloatingPointError
            The update would make a parameter or state value non-finite
            (learning rate too large); nothing is changed.
        """
        params, grads = check_step_buffers(params, grads)
        hp = self._checked_hp(params.dtype)
        s1, s2 = self.bind(params)
        box = []
        try:  # one compiled call: the check, then the update if it passes
            box.extend(starmap(_k.checked_update,
                               ((self.kind, params, grads, s1, s2, hp, self.step_ + 1),)))
        finally:
            # counted with the update it made, even if a Ctrl-C arrives as
            # the call returns (a C call puts the status in box: no signal
            # between the two)
            if box and box[0] == _k.UPDATE_OK:
                self.step_ += 1
        if box[0] == _k.BAD_GRADIENT:
            raise ValueError("grads must be finite; got NaN or infinity")
        if box[0] == _k.BAD_UPDATE:
            raise FloatingPointError("the update would make a parameter or optimizer state "
                                     "value non-finite (learning rate too large?); params "
                                     "and state are unchanged")

    def __getstate__(self):
        state = self.__dict__.copy()
        # caches of checks on objects of this process; a copy checks afresh
        state.pop("_checked", None)
        state.pop("_bound", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        # aligned again as bind() makes them (_validation.BUFFER_ALIGN)
        s = state.get("state_")
        if type(s) is tuple:
            self.state_ = tuple(v.realigned(a) for a in s)

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._fields)
        return f"{type(self).__name__}({args})"


def check_step_buffers(params, grads):
    """``params`` as the update kernels need it (checked, never copied: it is
    updated in place) and ``grads`` converted to its dtype and layout."""
    f32, f64 = v.FLOAT_DTYPES
    if (type(params) is np.ndarray and type(grads) is np.ndarray and params.ndim == 1
            and (params.dtype is f32 or params.dtype is f64) and grads.dtype is params.dtype
            and grads.shape == params.shape and (params.flags.num & v.CAW) == v.CAW
            and (grads.flags.num & v.CAW) == v.CAW):
        # the common case, both already as the kernels take them: the checks
        # below would pass and as_float would not copy
        return params, grads
    if not isinstance(params, np.ndarray):
        raise TypeError(f"params must be a NumPy array (the flat parameter buffer); "
                        f"got {v._describe(params)}")
    if params.dtype not in v.FLOAT_DTYPES:
        raise TypeError(f"params must have dtype float32 or float64 (native byte order); "
                        f"got {params.dtype}")
    if params.ndim != 1:
        raise ValueError(f"params must be a 1-D array (the flat parameter buffer); got "
                         f"{params.ndim}-D with shape {params.shape}")
    if not params.flags.writeable:
        raise ValueError("params must be writeable: it is updated in place; got a "
                         "read-only array")
    if not (params.flags.c_contiguous and params.flags.aligned):
        raise ValueError("params must be a contiguous, aligned array: it is updated in "
                         "place; got a strided view")
    grads = v.as_float(grads, "grads", 1, params.dtype, finite=False)
    if grads.shape != params.shape:
        raise ValueError(f"grads must have the shape of params {params.shape}; got "
                         f"{grads.shape}")
    return params, grads


def _same_buffer_kind(state, params):
    """True if ``state`` is a pair of arrays of the size and dtype of params."""
    return (isinstance(state, tuple) and len(state) == 2
            and all(isinstance(a, np.ndarray) and a.shape == params.shape
                    and a.dtype == params.dtype for a in state))


def check_state(opt, params):
    """ValueError unless ``opt.state_`` and ``opt.step_`` can be handed to the
    update kernel with ``params``."""
    step = opt.step_
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"optimizer step_ must be a non-negative integer; got {step!r}")
    opt.step_ = int(step)
    for i, a in enumerate(opt.state_):
        name = f"optimizer state_[{i}]"
        if not (a.flags.c_contiguous and a.flags.aligned and a.flags.writeable):
            raise ValueError(f"{name} must be a contiguous, writeable array")
        if np.may_share_memory(a, params):
            raise ValueError(f"{name} must not share memory with the parameters")
    if np.may_share_memory(opt.state_[0], opt.state_[1]) and opt.kind == _k.ADAM:
        raise ValueError("optimizer state_[0] and state_[1] must not share memory")


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (PyTorch's update rule).

    ``v = momentum * v + (1 - dampening) * (g + weight_decay * p)`` (the
    first step sets ``v = g + weight_decay * p``); ``p -= lr * v``, or with
    ``nesterov=True``
    ``p -= lr * (g + weight_decay * p + momentum * v)``.
    """

    kind = _k.SGD
    _fields = ("lr", "momentum", "nesterov", "weight_decay", "dampening")
    _settings = operator.attrgetter(*_fields)  # the settings' current objects, as a tuple

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
        super().__init__()
        self.lr = v.as_real(lr, "lr", 0.0, min_inclusive=False)
        # [0, 1] as scikit-learn allows (PyTorch takes any momentum >= 0, but
        # above 1 the velocity grows geometrically with a constant gradient)
        self.momentum = v.as_real(momentum, "momentum", 0.0, 1.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be True or False; got {nesterov!r}")
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True needs momentum > 0; got momentum=0")
        self.weight_decay = v.as_real(weight_decay, "weight_decay", 0.0)
        self.dampening = v.as_real(dampening, "dampening", 0.0, 1.0)

    def hyperparameters(self):
        return np.array([self.lr, self.momentum, self.dampening, self.weight_decay,
                         float(self.nesterov)])


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba, 2015)."""

    kind = _k.ADAM
    _fields = ("lr", "beta1", "beta2", "eps", "weight_decay")
    _settings = operator.attrgetter(*_fields)
    _POSITIVE = ("lr", "eps")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__()
        self.lr = v.as_real(lr, "lr", 0.0, min_inclusive=False)
        self.beta1 = v.as_real(beta1, "beta1", 0.0, 1.0, max_inclusive=False)
        self.beta2 = v.as_real(beta2, "beta2", 0.0, 1.0, max_inclusive=False)
        self.eps = v.as_real(eps, "eps", 0.0, min_inclusive=False)
        self.weight_decay = v.as_real(weight_decay, "weight_decay", 0.0)

    def hyperparameters(self):
        return np.array([self.lr, self.beta1, self.beta2, self.eps, self.weight_decay])


_OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def get_optimizer(optimizer):
    """An Optimizer instance from an instance, a class or a name."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        return optimizer()
    if isinstance(optimizer, str):
        try:
            return _OPTIMIZERS[optimizer.lower()]()
        except KeyError:
            raise ValueError(f"unknown optimizer {optimizer!r}; expected one of: "
                             f"{', '.join(_OPTIMIZERS)} or an Optimizer instance") from None
    raise TypeError(f"optimizer must be a name ('sgd', 'adam') or an Optimizer; "
                    f"got {type(optimizer).__name__}")
