"""Whole training step and epoch, fastbp beside a plain NumPy MLP; peak
memory of fit."""

from typing import ClassVar

import fastbp as fb
from fastbp.bench import NumpyMLP

from .common import Benchmark, make_data

IMPLS = ["fastbp", "numpy"]
DTYPES = ["float32", "float64"]


def _widths(width):
    return [784, width, width // 2, 10]


class TrainStepSuite(Benchmark):
    """One step (forward, softmax-CE, backward, SGD momentum) on one batch."""

    param_names: ClassVar[list] = ["impl", "dtype", "batch", "width"]
    params: ClassVar[list] = [IMPLS, DTYPES, [64, 512], [256, 1024]]

    def setup(self, impl, dtype, batch, width):
        widths = _widths(width)
        self.X, self.y = make_data(batch, widths[0], widths[-1], dtype)
        if impl == "fastbp":
            model = fb.MLP(widths, activation="relu", dtype=dtype, seed=0)
            opt = fb.SGD(lr=0.01, momentum=0.9)
            self.f = lambda: model.train_on_batch(self.X, self.y, optimizer=opt)
        else:
            net = NumpyMLP(widths, dtype)
            self.f = lambda: net.step(self.X, self.y)
        self.f()  # warm-up

    def time_train_step(self, *args):
        self.f()


class EpochSuite(Benchmark):
    """One epoch over 4096 rows of synthetic data."""

    param_names: ClassVar[list] = ["impl", "dtype", "batch", "width"]
    params: ClassVar[list] = [IMPLS, ["float32"], [32, 256], [128, 512]]
    n_rows = 4096

    def setup_cache(self):
        return {d: make_data(self.n_rows, 784, 10, d) for d in DTYPES}

    def setup(self, data, impl, dtype, batch, width):
        X, y = data[dtype]
        widths = _widths(width)
        if impl == "fastbp":
            model = fb.MLP(widths, activation="relu", dtype=dtype, seed=0)
            opt = fb.SGD(lr=0.01, momentum=0.9)
            self.f = lambda: model.fit(X, y, epochs=1, batch_size=batch, optimizer=opt)
        else:
            net = NumpyMLP(widths, dtype)

            def epoch():
                for i in range(0, X.shape[0], batch):
                    net.step(X[i:i + batch], y[i:i + batch])
            self.f = epoch
        self.f()  # warm-up

    def time_epoch(self, *args):
        self.f()


class FitMemorySuite(Benchmark):
    """Peak memory of fit: should not grow with the number of epochs."""

    param_names: ClassVar[list] = ["epochs"]
    params: ClassVar[list] = [[1, 5]]

    def setup(self, epochs):
        self.X, self.y = make_data(2048, 64, 10, "float32")
        self.model = fb.MLP([64, 128, 10], activation="relu", dtype="float32", seed=0)
        self.opt = fb.SGD(lr=0.01, momentum=0.9)
        self.model.fit(self.X, self.y, epochs=1, batch_size=32, optimizer=self.opt)

    def peakmem_fit(self, epochs):
        self.model.fit(self.X, self.y, epochs=epochs, batch_size=32, optimizer=self.opt)


class ActivationStepSuite(Benchmark):
    """A training step (epoch path, 8 batches) of tanh and sigmoid networks
    beside the same ReLU network (issue 10: at most 1.25x ReLU)."""

    param_names: ClassVar[list] = ["activation", "network"]
    params: ClassVar[list] = [["relu", "tanh", "sigmoid"], ["64-128-10:32", "784-256-128-10:64"]]

    def setup(self, activation, network):
        net, _, batch = network.partition(":")
        widths = [int(w) for w in net.split("-")]
        batch = int(batch)
        X, y = make_data(8 * batch, widths[0], widths[-1], "float32")
        model = fb.MLP(widths, activation=activation, dtype="float32", seed=0)
        opt = fb.SGD(lr=0.01, momentum=0.9)
        self.f = lambda: model.fit(X, y, epochs=1, batch_size=batch, optimizer=opt)
        self.f()  # warm-up

    def time_epoch_of_8_steps(self, activation, network):
        self.f()
