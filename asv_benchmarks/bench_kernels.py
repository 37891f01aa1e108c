"""Kernel benchmarks: dense layer forward/backward, softmax cross-entropy,
optimizer update; fastbp beside the NumPy way of writing the same thing."""

from typing import ClassVar

import numpy as np

import fastbp as fb

from .common import Benchmark, make_data, make_layer

DTYPES = ["float32", "float64"]
IMPLS = ["fastbp", "numpy"]


def _np_forward(x, W, b):
    return np.maximum(x @ W + b, 0)


def _np_backward(dh, x, W, h):
    da = dh * (h > 0)
    return da @ W.T, x.T @ da, da.sum(axis=0)


def _np_softmax_ce(z, y):
    n = z.shape[0]
    s = z - z.max(axis=1, keepdims=True)
    e = np.exp(s)
    tot = e.sum(axis=1, keepdims=True)
    loss = np.mean(np.log(tot[:, 0]) - s[np.arange(n), y])
    d = e / tot
    d[np.arange(n), y] -= 1
    return loss, d / n


class DenseSuite(Benchmark):
    """One relu dense layer (width -> width)."""

    param_names: ClassVar[list] = ["impl", "dtype", "batch", "width"]
    params: ClassVar[list] = [IMPLS, DTYPES, [32, 512], [128, 1024]]

    def setup(self, impl, dtype, batch, width):
        self.x, _ = make_data(batch, width, 2, dtype)
        self.W, self.b = make_layer(width, width, dtype)
        self.h = _np_forward(self.x, self.W, self.b)
        self.dh = np.ones_like(self.h)
        if impl == "fastbp":
            self.fwd = lambda: fb.dense_forward(self.x, self.W, self.b, activation="relu")
            self.bwd = lambda: fb.dense_backward(self.dh, self.x, self.W, self.h,
                                                 activation="relu")
        else:
            self.fwd = lambda: _np_forward(self.x, self.W, self.b)
            self.bwd = lambda: _np_backward(self.dh, self.x, self.W, self.h)
        self.fwd()  # warm-up: compile outside the timings
        self.bwd()

    def time_forward(self, *args):
        self.fwd()

    def time_backward(self, *args):
        self.bwd()


class SoftmaxCESuite(Benchmark):
    param_names: ClassVar[list] = ["impl", "dtype", "batch", "classes"]
    params: ClassVar[list] = [IMPLS, DTYPES, [32, 1024], [10, 1000]]

    def setup(self, impl, dtype, batch, classes):
        self.z, self.y = make_data(batch, classes, classes, dtype)
        self.f = fb.softmax_cross_entropy if impl == "fastbp" else _np_softmax_ce
        self.f(self.z, self.y)

    def time_softmax_cross_entropy(self, *args):
        self.f(self.z, self.y)


class OptimizerSuite(Benchmark):
    """In-place update of a flat parameter buffer of n values."""

    param_names: ClassVar[list] = ["impl", "dtype", "optimizer", "n"]
    params: ClassVar[list] = [IMPLS, DTYPES, ["sgd-momentum", "adam"], [10_000, 1_000_000]]

    def setup(self, impl, dtype, optimizer, n):
        rng = np.random.default_rng(0)
        self.p = rng.standard_normal(n).astype(dtype)
        self.g = (rng.standard_normal(n) * 1e-3).astype(dtype)
        self.m = np.zeros_like(self.p)
        self.v = np.zeros_like(self.p)
        self.t = 0
        if impl == "fastbp":
            opt = (fb.SGD(lr=0.01, momentum=0.9) if optimizer == "sgd-momentum"
                   else fb.Adam(lr=1e-3))
            self.f = lambda: opt.step(self.p, self.g)
        elif optimizer == "sgd-momentum":
            self.f = self._np_sgd
        else:
            self.f = self._np_adam
        self.f()

    def _np_sgd(self, lr=0.01, mu=0.9):
        self.m *= mu
        self.m += self.g
        self.p -= lr * self.m

    def _np_adam(self, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
        self.t += 1
        self.m *= b1
        self.m += (1 - b1) * self.g
        self.v *= b2
        self.v += (1 - b2) * self.g * self.g
        mh = self.m / (1 - b1 ** self.t)
        vh = self.v / (1 - b2 ** self.t)
        self.p -= lr * mh / (np.sqrt(vh) + eps)

    def time_update(self, *args):
        self.f()
