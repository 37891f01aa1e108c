"""scikit-learn compatible estimators backed by fastbp's compiled training loop.

``MLPClassifier`` and ``MLPRegressor`` take the constructor parameters of
scikit-learn's ``sklearn.neural_network`` estimators that make sense here and
expose fitted attributes with the same names.  Each training iteration is one
compiled call (``fb.MLP.fit(..., epochs=1)``) that reuses one optimizer object,
so its state (momentum, Adam moments) carries over between iterations and
between ``partial_fit`` calls.

scikit-learn is an optional dependency: it is imported only by this module.

Differences from scikit-learn:

* ``learning_rate`` must be ``"constant"`` ("invscaling"/"adaptive" are
  refused); the SGD update is PyTorch's momentum rule, which equals
  scikit-learn's for a constant learning rate.
* The classifier always uses a softmax output, also for two classes: the last
  entry of ``coefs_`` has ``n_classes`` columns and ``out_activation_`` is
  ``"softmax"``; ``predict_proba`` returns ``(n, 2)`` for binary problems as
  scikit-learn does.  Multilabel targets are not supported.
* ``dtype``: ``None`` (default) works in float32 when ``X`` is float32 and in
  float64 otherwise, as scikit-learn does; pass ``"float32"`` for speed.
"""

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import (
    check_classification_targets,
)
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

from .network import MLP
from .optim import SGD, Adam

__all__ = ["MLPClassifier", "MLPRegressor"]

_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}


class _BaseMLP(BaseEstimator):
    _output = None  # "softmax" or "identity"

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, max_iter=200, shuffle=True, random_state=None,
                 tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 dtype=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype

    # -- parameters ------------------------------------------------------------
    def _check_params(self):
        hs = self.hidden_layer_sizes
        hs = [hs] if np.isscalar(hs) else list(hs)
        if any(int(h) != h or h < 1 for h in hs):
            raise ValueError(f"hidden_layer_sizes must be positive integers; got {self.hidden_layer_sizes!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}; got {self.activation!r}")
        if self.solver not in ("sgd", "adam"):
            raise ValueError(f"solver must be 'sgd' or 'adam'; got {self.solver!r}")
        if self.learning_rate != "constant":
            raise ValueError("fastbp supports only learning_rate='constant'; "
                             f"got {self.learning_rate!r}")
        if not self.learning_rate_init > 0:
            raise ValueError(f"learning_rate_init must be > 0; got {self.learning_rate_init!r}")
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0; got {self.alpha!r}")
        if int(self.max_iter) != self.max_iter or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer; got {self.max_iter!r}")
        if int(self.n_iter_no_change) != self.n_iter_no_change or self.n_iter_no_change < 1:
            raise ValueError(f"n_iter_no_change must be a positive integer; got {self.n_iter_no_change!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1); got {self.validation_fraction!r}")
        if not (0 <= self.beta_1 < 1 and 0 <= self.beta_2 < 1):
            raise ValueError("beta_1 and beta_2 must be in [0, 1)")
        if not 0 <= self.momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1]; got {self.momentum!r}")
        if self.dtype not in (None, "float32", "float64", np.float32, np.float64):
            raise ValueError(f"dtype must be None, 'float32' or 'float64'; got {self.dtype!r}")
        return [int(h) for h in hs]

    def _work_dtype(self, X):
        if self.dtype is not None:
            return np.dtype(self.dtype)
        return np.dtype(np.float32) if X.dtype == np.float32 else np.dtype(np.float64)

    def _make_optimizer(self):
        if self.solver == "sgd":
            return SGD(lr=self.learning_rate_init, momentum=self.momentum,
                       nesterov=bool(self.nesterovs_momentum and self.momentum > 0))
        return Adam(lr=self.learning_rate_init, beta1=self.beta_1, beta2=self.beta_2,
                    eps=self.epsilon)

    def _batch(self, n):
        if self.batch_size == "auto":
            return min(200, n)
        bs = int(self.batch_size)
        if bs < 1 or bs > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                          "It is going to be clipped", stacklevel=3)
        return int(np.clip(bs, 1, n))

    # -- fitted attributes -------------------------------------------------------
    @property
    def coefs_(self):
        """Weight matrices, one (d_in, d_out) view per layer."""
        if not hasattr(self, "_model"):
            raise AttributeError("coefs_ exists only after fit")
        return [W for W, _ in self._model.params]

    @property
    def intercepts_(self):
        """Bias vectors, one (d_out,) view per layer."""
        if not hasattr(self, "_model"):
            raise AttributeError("intercepts_ exists only after fit")
        return [b for _, b in self._model.params]

    @property
    def model_(self):
        """The underlying ``fastbp.MLP``."""
        if not hasattr(self, "_model"):
            raise AttributeError("model_ exists only after fit")
        return self._model

    # -- training ----------------------------------------------------------------
    def _initialize(self, X, n_out, hidden):
        rs = check_random_state(self.random_state)
        self._rs = rs
        self._model = MLP([X.shape[1], *hidden, n_out], activation=_ACTIVATIONS[self.activation],
                          output=self._output, dtype=self._work_dtype(X),
                          seed=int(rs.randint(np.iinfo(np.int32).max)), alpha=self.alpha)
        self._optimizer = self._make_optimizer()
        self.n_layers_ = len(hidden) + 2
        self.n_outputs_ = n_out
        self.out_activation_ = self._output
        self.loss_curve_ = []
        self.t_ = 0
        self.n_iter_ = 0
        self._no_improvement_count = 0
        self.best_loss_ = np.inf
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _sync_settings(self):
        # parameters that may change between fits (set_params + warm_start)
        self._model.alpha = float(self.alpha)
        opt = self._optimizer
        if self.solver == "sgd" and isinstance(opt, SGD):
            opt.lr = float(self.learning_rate_init)
            opt.momentum = float(self.momentum)
            opt.nesterov = bool(self.nesterovs_momentum and self.momentum > 0)
        elif self.solver == "adam" and isinstance(opt, Adam):
            opt.lr = float(self.learning_rate_init)
        else:
            self._optimizer = self._make_optimizer()

    def _fit_loop(self, X, y, sample_weight, incremental):
        model = self._model
        n = X.shape[0]
        early = self.early_stopping and not incremental
        Xv = yv = None
        if early:
            strat = y if self._output == "softmax" else None
            idx = np.arange(n)
            try:
                tr, va = train_test_split(idx, random_state=self._rs, test_size=self.validation_fraction,
                                          stratify=strat)
            except ValueError:
                tr, va = train_test_split(idx, random_state=self._rs, test_size=self.validation_fraction)
            if len(va) < 2:
                raise ValueError(f"The validation set is too small with validation_fraction="
                                 f"{self.validation_fraction} and {n} samples")
            Xv, yv = X[va], y[va]
            X, y = X[tr], y[tr]
            if sample_weight is not None:
                sample_weight = sample_weight[tr]
            n = X.shape[0]
        bs = self._batch(n)
        iters = 1 if incremental else int(self.max_iter)
        best_params = None
        for it in range(iters):
            h = model.fit(X, y, epochs=1, batch_size=bs, optimizer=self._optimizer,
                          shuffle=self.shuffle, sample_weight=sample_weight)
            loss = float(h["loss"][0])
            self.n_iter_ += 1
            self.t_ += n
            self.loss_curve_.append(loss)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
            if incremental:
                if self.best_loss_ is not None and loss < self.best_loss_:
                    self.best_loss_ = loss
                return
            if early:
                score = self._validation_score(Xv, yv)
                self.validation_scores_.append(score)
                if self.verbose:
                    print(f"Validation score: {score:f}")
                if score < self.best_validation_score_ + self.tol:
                    self._no_improvement_count += 1
                else:
                    self._no_improvement_count = 0
                if score > self.best_validation_score_:
                    self.best_validation_score_ = score
                    best_params = model.flat_params.copy()
            else:
                if loss > self.best_loss_ - self.tol:
                    self._no_improvement_count += 1
                else:
                    self._no_improvement_count = 0
                self.best_loss_ = min(self.best_loss_, loss)
            if self._no_improvement_count > self.n_iter_no_change:
                what = "Validation score" if early else "Training loss"
                if self.verbose:
                    print(f"{what} did not improve more than tol={self.tol} for "
                          f"{self.n_iter_no_change} consecutive epochs. Stopping.")
                break
        else:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                          "and the optimization hasn't converged yet.", ConvergenceWarning,
                          stacklevel=3)
        if early and best_params is not None:
            model.flat_params[...] = best_params

    def _fit(self, X, y, sample_weight, incremental):
        hidden = self._check_params()
        first = not hasattr(self, "_model") or (not incremental and not self.warm_start)
        X, y = self._validate_xy(X, y, reset=first, incremental=incremental)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        yt = self._encode_y(y, first and not incremental)
        if first:
            self._initialize(X, self._n_out(yt), hidden)
        else:
            if self._n_out(yt) != self.n_outputs_:
                raise ValueError(f"y has {self._n_out(yt)} outputs but the estimator was fitted "
                                 f"with {self.n_outputs_}")
            self._sync_settings()
            self._no_improvement_count = 0
            if self.early_stopping and not incremental:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
        self._fit_loop(X, yt, sample_weight, incremental)
        return self

    def _forward(self, X):
        check_is_fitted(self, "_model")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self._model.forward(X)

    def fit(self, X, y, sample_weight=None):
        """Fit the model to ``X`` and ``y`` (``max_iter`` epochs at most)."""
        return self._fit(X, y, sample_weight, incremental=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


def expected_failed_checks(estimator=None):
    """Checks of ``sklearn.utils.estimator_checks`` these estimators are known
    to fail, with the reason; pass as ``expected_failed_checks`` to
    ``check_estimator`` / ``parametrize_with_checks`` (scikit-learn >= 1.6)."""
    return dict(_XFAIL)


_XFAIL = {
    "check_sample_weight_equivalence_on_dense_data":
        "stochastic minibatch training: weight 2 is not the same as a duplicated row "
        "(different batches), as for scikit-learn's own MLP",
    "check_sample_weight_equivalence_on_sparse_data": "sparse input is not supported",
}


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier (softmax output, cross-entropy loss).

    Parameters follow ``sklearn.neural_network.MLPClassifier``; see the module
    docstring for the differences.  ``dtype`` picks float32 or float64 work
    (None: float32 for float32 input, else float64).
    """

    _output = "softmax"

    def _validate_xy(self, X, y, reset, incremental):
        X, y = validate_data(self, X, y, reset=reset, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        return X, y

    def _encode_y(self, y, new_classes):
        if new_classes:
            self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError("MLPClassifier needs samples of at least 2 classes in the data; "
                             f"got only one class ({self.classes_[0]!r})")
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(f"y contains labels not in classes_ {self.classes_!r}: {unknown[:5]!r}; "
                             "warm_start and partial_fit need the classes of the first call")
        return np.searchsorted(self.classes_, y).astype(np.int64)

    def _n_out(self, yt):
        return len(self.classes_)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over ``X``, ``y``; ``classes`` is required on the first call."""
        if classes is None:
            if not hasattr(self, "classes_"):
                raise ValueError("classes must be passed on the first call to partial_fit")
        elif not hasattr(self, "classes_") or not hasattr(self, "_model"):
            self.classes_ = np.unique(np.asarray(classes))
            if hasattr(self, "_model"):
                del self._model
        elif not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"classes={classes!r} differs from the classes of the first "
                             f"partial_fit call, {self.classes_!r}")
        return self._fit(X, y, sample_weight, incremental=True)

    def predict_proba(self, X):
        """Class probabilities, shape (n, n_classes) (also (n, 2) for binary)."""
        z = self._forward(X)
        z = z - z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    def predict_log_proba(self, X):
        """Natural log of ``predict_proba``, computed stably."""
        z = self._forward(X).astype(np.float64, copy=False)
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def predict(self, X):
        """Predicted class labels, shape (n,)."""
        z = self._forward(X)
        return self.classes_[np.argmax(z, axis=1)]

    def _validation_score(self, Xv, yv):
        return float(np.mean(np.argmax(self._model.forward(Xv), axis=1) == yv))


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor (identity output, half squared error).

    Parameters follow ``sklearn.neural_network.MLPRegressor``; see the module
    docstring for the differences.
    """

    _output = "identity"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _validate_xy(self, X, y, reset, incremental):
        X, y = validate_data(self, X, y, reset=reset, multi_output=True, y_numeric=True,
                             dtype=[np.float64, np.float32])
        if reset:
            self._y_1d = y.ndim == 1
        return X, y

    def _encode_y(self, y, new_classes):
        return y.reshape(-1, 1) if y.ndim == 1 else y

    def _n_out(self, yt):
        return yt.shape[1]

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``X``, ``y``, continuing from the current state."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predictions, shape (n,) when fitted on 1-D ``y``, else (n, n_outputs)."""
        z = self._forward(X)
        return z[:, 0].copy() if self._y_1d else z

    def _validation_score(self, Xv, yv):
        p = self._model.forward(Xv).astype(np.float64)
        t = yv.astype(np.float64)
        ss_res = ((t - p) ** 2).sum(0)
        ss_tot = ((t - t.mean(0)) ** 2).sum(0)
        return float(np.mean(1 - ss_res / np.where(ss_tot == 0, 1, ss_tot)))
