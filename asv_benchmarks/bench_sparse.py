"""Sparse X: fit on a TF-IDF-like CSR problem (20,000 columns, density 0.4 %),
fastbp on the CSR matrix, fastbp on the densified array and scikit-learn's
MLPClassifier on the CSR matrix; one hidden layer of 100 ReLU units, Adam,
batch 200 (fastbp.bench.sparse_fit times the same side by side)."""

import warnings
from typing import ClassVar

import fastbp as fb
from fastbp.bench import SPARSE_CLASSES, SPARSE_HIDDEN, tfidf_like

from .common import Benchmark


class SparseFitSuite(Benchmark):
    """One epoch of fit (a fresh model each time)."""

    param_names: ClassVar[list] = ["impl"]
    params: ClassVar[list] = [["fastbp-sparse", "fastbp-dense", "sklearn-sparse"]]
    n_rows = 4000
    n_cols = 20000
    epochs = 1
    number = 1
    repeat = (1, 5, 60.0)
    timeout = 600

    def setup_cache(self):
        return tfidf_like(self.n_rows, self.n_cols, dtype="float32")

    def setup(self, data, impl):
        X, y = data
        widths = [X.shape[1], SPARSE_HIDDEN, SPARSE_CLASSES]
        if impl.startswith("fastbp"):
            Xi = X.toarray() if impl == "fastbp-dense" else X

            def run():
                m = fb.MLP(widths, activation="relu", dtype="float32", seed=0, alpha=1e-4)
                m.fit(Xi, y, epochs=self.epochs, batch_size=200, optimizer=fb.Adam(lr=1e-3))
        else:
            try:
                from sklearn.exceptions import ConvergenceWarning
                from sklearn.neural_network import MLPClassifier
            except ImportError:
                raise NotImplementedError("scikit-learn is not installed") from None

            def run():
                clf = MLPClassifier(hidden_layer_sizes=(SPARSE_HIDDEN,), solver="adam",
                                    batch_size=200, learning_rate_init=1e-3, alpha=1e-4,
                                    max_iter=self.epochs, shuffle=True, random_state=0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    clf.fit(X, y)
        self.f = run
        self.f()  # warm-up (compiles fastbp's sparse kernels outside the timing)

    def time_fit(self, *args):
        self.f()
