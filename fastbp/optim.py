"""Optimizers: settings plus state, each applied by one fused kernel.

An optimizer object holds its hyper-parameters and, once bound to a model
by ``MLP.fit``, its state buffers (flat, the layout of the parameters).
Fitting again with the same object continues from that state.
"""

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

    def bind(self, params):
        """Make sure the state matches ``params`` (size and dtype)."""
        s = self.state_
        if s is None or s[0].shape != params.shape or s[0].dtype != params.dtype:
            self.state_ = (np.zeros_like(params), np.zeros_like(params))
            self.step_ = 0
        return self.state_

    def reset(self):
        """Forget the state (momentum buffers, step count)."""
        self.state_ = None
        self.step_ = 0

    def step(self, params, grads):
        """Update ``params`` in place from ``grads`` (flat arrays, one dtype)."""
        s1, s2 = self.bind(params)
        self.step_ += 1
        _k.apply_update(self.kind, params, grads, s1, s2, self.hyperparameters(), self.step_)

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._fields)
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (PyTorch's update rule).

    ``v = momentum * v + (1 - dampening) * (g + weight_decay * p)`` (the
    first step sets ``v = g + weight_decay * p``); ``p -= lr * v``, or with
    ``nesterov=True``
    ``p -= lr * (g + weight_decay * p + momentum * v)``.
    """

    kind = _k.SGD
    _fields = ("lr", "momentum", "nesterov", "weight_decay", "dampening")

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
        super().__init__()
        self.lr = v.as_real(lr, "lr", 0.0, min_inclusive=False)
        self.momentum = v.as_real(momentum, "momentum", 0.0, 1.0, max_inclusive=False)
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
