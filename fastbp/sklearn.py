"""scikit-learn compatible estimators backed by fastbp's compiled training loop.

``MLPClassifier`` and ``MLPRegressor`` take the constructor parameters of
scikit-learn's ``sklearn.neural_network`` estimators, validate them against
the same ranges (``_parameter_constraints``), follow the same training rules
and expose fitted attributes with the same names:

* ``solver="lbfgs"``: full-batch L-BFGS (``scipy.optimize.minimize``,
  method "L-BFGS-B", ``maxiter=max_iter``, ``maxfun=max_fun``,
  ``gtol=tol``) over the model's flat parameter buffer, with one compiled
  call per function evaluation.
* ``solver="sgd"`` / ``"adam"``: each iteration (epoch) is one compiled call
  that reuses one optimizer object.  ``learning_rate`` "constant",
  "invscaling" (``learning_rate_init / (t_ + 1) ** power_t`` after each
  epoch, ``t_`` counting the samples seen) and "adaptive" (divided by 5
  whenever the stopping rule fires, stopping below 1e-6) as scikit-learn.
  fastbp's SGD keeps PyTorch's momentum buffer; when the learning rate
  changes the buffer is rescaled so that the update equals scikit-learn's
  velocity rule exactly.
* Classification: softmax output for multiclass targets, one logistic unit
  for binary targets and one logistic unit per label for multilabel
  indicator targets (``out_activation_`` "softmax" or "logistic").
* ``sample_weight``: weighted means, the L2 term divided by the total weight
  of the batch, so that integer weights equal repeated rows.
* ``dtype`` (fastbp only): ``None`` (default) works in float32 when ``X`` is
  float32 and in float64 otherwise, as scikit-learn does; ``"float32"`` is
  faster.
* Starting weights: drawn as scikit-learn draws them, from the same
  ``random_state`` in the same order (uniform within Glorot's bound
  ``sqrt(factor / (fan_in + fan_out))``, factor 2 for logistic and 6
  otherwise, biases drawn too), so the same ``random_state`` starts from the
  same weights and full-batch L-BFGS follows scikit-learn's path to
  rounding.  (``fb.MLP`` itself uses He's bound for ReLU layers and zero
  biases.)
* ``coefs_`` and ``intercepts_`` are views into the model's parameters;
  assigning either list, or one entry, writes into the model after the
  checks of any input.  Assigned before the first fit, they are the
  starting weights of the next ``warm_start`` fit or ``partial_fit``.
* An early-stopping fit whose step is not finite ends, with a
  ConvergenceWarning, at the weights of the best validation score, with
  NaN as the last validation score (scikit-learn goes on from non-finite
  weights; fastbp never applies such a step).

Differences that remain: Adam adds ``epsilon`` after the bias correction of
the second moment (scikit-learn before: the same as fastbp's with epsilon
``epsilon / sqrt(1 - beta_2 ** t)``, which differs only over the first steps
and only where a gradient is near ``epsilon``); fastbp keeps one Adam, the
PyTorch rule of ``fb.Adam``, inside its one compiled call per epoch.  The
sgd/adam shuffles come from a
generator of fastbp's own (seeded from ``random_state``); for several
regression outputs the reported loss sums over the outputs (scikit-learn
averages the data term but not its gradient).  scikit-learn's own test
module passes against these estimators (tests/test_sklearn_upstream.py).

scikit-learn is an optional dependency: it is imported only by this module.
"""

import itertools
import warnings
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

from . import _validation as v
from . import network as _network
from .network import MLP, DivergenceError
from .optim import SGD, Adam

__all__ = ["MLPClassifier", "MLPRegressor"]

_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_OUTPUTS = {"softmax": "softmax", "logistic": "sigmoid", "identity": "identity", "exp": "exp"}
_STOCHASTIC = ("sgd", "adam")
# scikit-learn's wording, which users' code (and its tests) match on
_NONFINITE = ("Solver produced non-finite parameter weights. The input data may contain "
              "large values and need to be preprocessed.")
# integer parameters for which a bool (an Integral in Python) is refused
_INT_PARAMS = ("batch_size", "max_iter", "n_iter_no_change", "max_fun")


def _has_sigmoid_output():
    """True when fb.MLP offers output="sigmoid" (binary and multilabel)."""
    return "sigmoid" in getattr(_network, "OUTPUTS", {})


_SPARSE_SUPPORT = []


def _sparse_ok():
    """True when fb.MLP takes scipy.sparse CSR X (checked once)."""
    if not _SPARSE_SUPPORT:
        try:
            MLP([2, 1], output="identity", dtype="float64")._check_X(sp.csr_matrix(np.ones((1, 2))))
            _SPARSE_SUPPORT.append(True)
        except (TypeError, ValueError):
            _SPARSE_SUPPORT.append(False)
    return _SPARSE_SUPPORT[0]


def _accept_sparse():
    return ["csr", "csc"] if _sparse_ok() else False


def _lbfgs_print_options(verbose):
    try:  # scipy changed how L-BFGS-B is told to print; scikit-learn knows how
        from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
    except ImportError:
        return {}
    return _get_additional_lbfgs_options_dict("iprint", 1 if verbose else -1)


def _describe_layers(value):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return type(value).__name__
    return f"{type(value).__name__} of length {len(value)}"


class _LayerList(list):
    """A fitted estimator's ``coefs_`` or ``intercepts_``: views into its
    model, one per layer.  ``lst[k] = array`` writes into the model after the
    checks of any input; changing the list's length is refused.  It pickles
    and copies as a plain list of arrays."""

    def __init__(self, est, which, arrays):
        super().__init__(arrays)
        self._est = est
        self._which = which

    def __setitem__(self, k, value):
        if isinstance(k, slice):
            raise TypeError(f"{self._which} takes one layer at a time: {self._which}[k] = "
                            "array, or assign the whole list")
        n = len(self)
        if not isinstance(k, (Integral, np.integer)) or not -n <= k < n:
            raise IndexError(f"{self._which} has {n} layers; got index {k!r}")
        k = int(k) % n
        arr = self._est._checked_layer(self._which, k, value)
        list.__getitem__(self, k)[...] = arr

    def _refuse(self, *args, **kwargs):
        raise TypeError(f"{self._which} has one entry per layer of the network; its "
                        "length cannot change (set hidden_layer_sizes and fit instead)")

    __delitem__ = __iadd__ = __imul__ = append = extend = insert = pop = remove = \
        clear = sort = reverse = _refuse

    def __reduce__(self):
        return list, (list(self),)


class _BaseMLP(BaseEstimator):
    _parameter_constraints: ClassVar[dict] = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(_ACTIVATIONS))],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "dtype": [None, StrOptions({"float32", "float64"}), Options(type, {np.float32, np.float64})],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
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
        self.max_fun = max_fun
        self.dtype = dtype

    # -- parameters ------------------------------------------------------------
    def _check_params(self):
        """Validate every parameter (naming it); returns the hidden widths."""
        self._validate_params()
        for name in _INT_PARAMS:
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)):
                raise TypeError(f"The {name!r} parameter of {type(self).__name__} must be an "
                                f"int, not a bool; got {value!r}")
        hs = self.hidden_layer_sizes
        sizes = list(hs) if hasattr(hs, "__iter__") else [hs]
        for h in sizes:
            if isinstance(h, (bool, np.bool_)) or not isinstance(h, (Integral, np.integer)):
                raise TypeError(f"The 'hidden_layer_sizes' parameter of {type(self).__name__} "
                                "must hold one positive int per hidden layer; got "
                                f"{self.hidden_layer_sizes!r}")
            if h < 1:
                raise ValueError(f"The 'hidden_layer_sizes' parameter of {type(self).__name__} "
                                 f"must hold positive ints; got {self.hidden_layer_sizes!r}")
        return [int(h) for h in sizes]

    def _work_dtype(self, X):
        if self.dtype is not None:
            return np.dtype(self.dtype)
        return np.dtype(np.float32) if X.dtype == np.float32 else np.dtype(np.float64)

    def _make_optimizer(self):
        lr = float(self.learning_rate_init)
        if self.solver == "adam":
            return Adam(lr=lr, beta1=self.beta_1, beta2=self.beta_2, eps=self.epsilon)
        mu = float(self.momentum)
        nesterov = bool(self.nesterovs_momentum) and mu > 0
        try:
            return SGD(lr=lr, momentum=mu, nesterov=nesterov)
        except ValueError:
            if mu != 1.0:
                raise
            # scikit-learn allows momentum=1.0; an fb.SGD that refuses it is
            # built with another value and given 1.0 (the kernel takes it).
            opt = SGD(lr=lr, momentum=0.5, nesterov=nesterov)
            opt.momentum = 1.0
            return opt

    def _set_learning_rate(self, lr):
        """Change the SGD learning rate as scikit-learn does: its velocity is
        ``-lr * buffer`` for fastbp's PyTorch-style buffer, so the buffer is
        rescaled by ``old / new`` to keep the velocity."""
        opt = self._optimizer
        if opt.state_ is not None and opt.momentum > 0 and opt.lr != lr:
            s1 = opt.state_[0]
            s1 *= s1.dtype.type(opt.lr / lr)
        opt.lr = float(lr)

    # -- fitted attributes -------------------------------------------------------
    # coefs_ and intercepts_ are views into the model's flat parameter buffer.
    # Assigning the list, or one entry of it, writes into the model after the
    # same checks as any input (shape, dtype, finite values).  Before the first
    # fit the assigned lists are kept as they are and become the starting
    # weights of the next warm_start fit or partial_fit (as scikit-learn does).
    def _layers(self, which):
        if hasattr(self, "_model"):
            return _LayerList(self, which, [p[which == "intercepts_"]
                                            for p in self._model.params])
        pending = self.__dict__.get("_pending", {})
        if which in pending:
            return pending[which]
        raise AttributeError(f"{which} exists only after fit")

    def _set_layers(self, which, value):
        if not hasattr(self, "_model"):
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                raise TypeError(f"{which} must be a list with one array per layer; got "
                                f"{type(value).__name__}")
            self.__dict__.setdefault("_pending", {})[which] = value
            return
        params = self._model.params
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") \
                or len(value) != len(params):
            raise ValueError(f"{which} must be a list of {len(params)} arrays, one per layer; "
                             f"got {_describe_layers(value)}")
        checked = [self._checked_layer(which, k, a) for k, a in enumerate(value)]
        for k, a in enumerate(checked):  # all checked before any is written
            params[k][which == "intercepts_"][...] = a

    def _checked_layer(self, which, k, value):
        """``value`` as layer k's weights (``which`` "coefs_") or biases
        ("intercepts_") in the model dtype: its shape, finite values."""
        target = self._model.params[k][which == "intercepts_"]
        name = f"{which}[{k}]"
        arr = v.as_float(value, name, target.ndim, self._model.dtype)
        if arr.shape != target.shape:
            raise ValueError(f"{name} must have shape {target.shape}, as layer {k} of the "
                             f"fitted network; got {arr.shape}")
        return arr

    @property
    def coefs_(self):
        """Weight matrices, one (d_in, d_out) view per layer into the model.

        Assigning the list or one of its entries writes into the model."""
        return self._layers("coefs_")

    @coefs_.setter
    def coefs_(self, value):
        self._set_layers("coefs_", value)

    @property
    def intercepts_(self):
        """Bias vectors, one (d_out,) view per layer into the model.

        Assigning the list or one of its entries writes into the model."""
        return self._layers("intercepts_")

    @intercepts_.setter
    def intercepts_(self, value):
        self._set_layers("intercepts_", value)

    def _load_pending(self):
        """Write weights assigned before the first fit into the new model."""
        pending = self.__dict__.pop("_pending", {})
        if set(pending) != {"coefs_", "intercepts_"}:
            raise ValueError("to start from given weights, assign both coefs_ and "
                             f"intercepts_; got only {', '.join(pending)}")
        self._set_layers("coefs_", pending["coefs_"])
        self._set_layers("intercepts_", pending["intercepts_"])
        self._best_params = self._model.flat_params.copy()

    @property
    def model_(self):
        """The underlying ``fastbp.MLP``."""
        if not hasattr(self, "_model"):
            raise AttributeError("model_ exists only after fit")
        return self._model

    # -- training ----------------------------------------------------------------
    def _initialize(self, n_features, n_outputs, hidden, out_activation, dtype):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(hidden) + 2
        self.out_activation_ = out_activation
        rs = self._random_state
        # scikit-learn's starting point, drawn from the same generator in the
        # same order: weights, then biases, layer by layer, uniform within
        # sqrt(factor / (fan_in + fan_out)), factor 2 for logistic layers, else 6
        factor = 2.0 if self.activation == "logistic" else 6.0
        widths = [n_features, *hidden, n_outputs]
        init = []
        for fan_in, fan_out in itertools.pairwise(widths):
            bound = np.sqrt(factor / (fan_in + fan_out))
            init.append((rs.uniform(-bound, bound, (fan_in, fan_out)),
                         rs.uniform(-bound, bound, fan_out)))
        seed = int(rs.randint(np.iinfo(np.int32).max))  # fastbp's own shuffling
        self._model = MLP(widths, activation=_ACTIVATIONS[self.activation],
                          output=_OUTPUTS[out_activation], dtype=dtype, seed=seed,
                          alpha=self.alpha)
        for (W, b), (W0, b0) in zip(self._model.params, init):
            W[...] = W0
            b[...] = b0
        self._best_params = self._model.flat_params.copy()
        if hasattr(self, "_optimizer"):
            del self._optimizer
        if self.solver in _STOCHASTIC:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _fit(self, X, y, sample_weight, incremental):
        hidden = self._check_params()
        reuse = self.warm_start or incremental
        first = not hasattr(self, "_model") or not reuse
        # weights assigned before the first fit: the start of a warm_start fit
        # or partial_fit, as in scikit-learn; any other fit draws new ones
        given = reuse and not hasattr(self, "_model") and "_pending" in self.__dict__
        if not given:
            self.__dict__.pop("_pending", None)
        X, y = self._validate_input(X, y, incremental, reset=first)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        target, n_out, out_act = self._encode(y)
        self._random_state = check_random_state(self.random_state)
        if first:
            self._initialize(X.shape[1], n_out, hidden, out_act, self._work_dtype(X))
            if given:
                try:
                    self._load_pending()
                except (TypeError, ValueError):
                    del self._model  # no half-made model: unfitted, as before
                    raise
        elif n_out != self.n_outputs_:
            raise ValueError(f"y has {n_out} outputs but the estimator was fitted with "
                             f"{self.n_outputs_}")
        model = self._model
        model.alpha = float(self.alpha)
        X = X.tocsr() if sp.issparse(X) else X
        X = X.astype(model.dtype, copy=False)
        try:
            if self.solver == "lbfgs":
                self._fit_lbfgs(X, target, sample_weight)
            else:
                self._fit_stochastic(X, y, target, sample_weight, incremental)
        except DivergenceError as exc:
            raise ValueError(f"{_NONFINITE} (fastbp: {exc})") from exc
        if not np.isfinite(model.flat_params).all():
            raise ValueError(_NONFINITE)
        return self

    def _fit_lbfgs(self, X, target, sample_weight):
        model = self._model
        flat = model.flat_params
        dense = not sp.issparse(X)
        if dense:
            data = model._prepare_data(X, target, sample_weight)
        else:  # checked once; fb.MLP.loss_and_grad takes its checked sparse rows as they are
            X = model._check_X(X)

        def loss_grad(x):
            flat[...] = x
            if dense:
                loss = model._full_loss_grad(data)
                return loss, model._grads.astype(np.float64)
            loss, grads = model.loss_and_grad(X, target, sample_weight=sample_weight)
            return loss, np.concatenate([a.ravel() for layer in grads for a in layer]) \
                .astype(np.float64, copy=False)

        # Ctrl-C (raised within an evaluation, or between them) leaves the
        # last accepted iterate, not a line-search trial point
        accepted = [flat.astype(np.float64)]
        try:
            res = scipy.optimize.minimize(
                loss_grad, accepted[0].copy(), method="L-BFGS-B", jac=True,
                callback=lambda xk: accepted.__setitem__(0, np.array(xk, dtype=np.float64)),
                options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol,
                         **_lbfgs_print_options(self.verbose)},
            )
        except KeyboardInterrupt:
            flat[...] = accepted[0]
            model._full_ws = model._full_ws_key = None
            raise
        self.n_iter_ = min(int(res.nit), self.max_iter)
        if res.status != 0:
            msg = (f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                   f"(status={res.status}):\n{res.message}\n")
            if self.n_iter_ == self.max_iter:
                msg += ("\nIncrease the number of iterations to improve the convergence "
                        f"(max_iter={self.max_iter}).")
            warnings.warn(msg, ConvergenceWarning, stacklevel=4)
        self.loss_ = float(res.fun)
        flat[...] = res.x
        model._full_ws = model._full_ws_key = None  # do not keep (or pickle) them

    def _batch_size(self, n):
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                          "going to be clipped", stacklevel=4)
        return int(np.clip(self.batch_size, 1, n))

    def _fit_stochastic(self, X, y, target, sample_weight, incremental):
        model = self._model
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = self._make_optimizer()
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early = self.early_stopping
        X_val = y_val = sw_val = None
        if early:
            if self.validation_fraction == 0:
                raise ValueError("validation_fraction must be > 0 with early_stopping=True; "
                                 "got 0")
            # stratified on the binarized labels of a single-output classifier,
            # as scikit-learn (which names a too-rare class as it: ['True'])
            stratify = None
            if is_classifier(self) and self.n_outputs_ == 1:
                stratify = self._label_binarizer.transform(y).astype(bool)
            idx = np.arange(X.shape[0])
            train, val = train_test_split(idx, random_state=self._random_state,
                                          test_size=self.validation_fraction,
                                          stratify=stratify)
            if val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            X_val, y_val = X[val], y[val]
            if sample_weight is not None:
                sw_val = sample_weight[val]
                sample_weight = sample_weight[train]
            X, target = X[train], target[train]
        n = X.shape[0]
        batch_size = self._batch_size(n)
        dense = not sp.issparse(X)
        if dense:
            data = model._prepare_data(X, target, sample_weight)
        else:  # checked once: fb.MLP.fit takes its checked sparse rows as they are
            X = model._check_X(X)
        opt = self._optimizer
        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                try:
                    if dense:
                        loss = model._run_epoch(data, batch_size, opt, self.shuffle)
                    else:
                        hist = model.fit(X, target, epochs=1, batch_size=batch_size,
                                         optimizer=opt, shuffle=self.shuffle,
                                         sample_weight=sample_weight)
                        loss = hist["loss"][0]
                except DivergenceError as exc:
                    if not early:
                        raise
                    self._diverged(exc)
                    break
                self.n_iter_ += 1
                self.loss_ = float(loss)
                self.t_ += n
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
                self._update_no_improvement_count(early, X_val, y_val, sw_val)
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    self._set_learning_rate(float(self.learning_rate_init)
                                            / (self.t_ + 1) ** self.power_t)
                if self._no_improvement_count > self.n_iter_no_change:
                    what = "Validation score" if early else "Training loss"
                    msg = (f"{what} did not improve more than tol={self.tol:f} for "
                           f"{self.n_iter_no_change} consecutive epochs.")
                    if self._trigger_stopping(msg):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                                  "reached and the optimization hasn't converged yet.",
                                  ConvergenceWarning, stacklevel=4)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=4)
        if early:
            model.flat_params[...] = self._best_params

    def _diverged(self, exc):
        """A step of an early-stopping fit was not finite: scikit-learn records
        a NaN validation score and goes on from non-finite weights; fastbp
        never applies such a step, so it stops here and keeps the weights of
        the best validation score (restored by the caller)."""
        self.n_iter_ += 1
        self.loss_ = np.nan
        self.loss_curve_.append(np.nan)
        self.validation_scores_.append(np.nan)
        warnings.warn(f"Training diverged in iteration {self.n_iter_} ({exc}); stopped with "
                      "the weights of the best validation score "
                      f"({self.best_validation_score_:g}).", ConvergenceWarning,
                      stacklevel=5)

    def _trigger_stopping(self, msg):
        """True to stop; with learning_rate="adaptive" (sgd) divide the
        learning rate by 5 instead, until it is at most 1e-6."""
        if self.solver != "sgd" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        lr = self._optimizer.lr
        if lr <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._set_learning_rate(lr / 5.0)
        if self.verbose:
            print(msg + f" Setting learning rate to {self._optimizer.lr:f}")
        return False

    def _update_no_improvement_count(self, early, X_val, y_val, sw_val):
        if early:
            score = self._score_unchecked(X_val, y_val, sw_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params = self._model.flat_params.copy()
        else:
            last = self.loss_curve_[-1]
            if last > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            self.best_loss_ = min(self.best_loss_, last)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC:
            raise AttributeError("partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    def _logits(self, X, check_input=True):
        """The network's raw outputs (before the output activation)."""
        if check_input:
            check_is_fitted(self, "_model")
            X = validate_data(self, X, accept_sparse=_accept_sparse(), reset=False,
                              dtype=[np.float64, np.float32])
            if sp.issparse(X):
                X = X.tocsr()
        return self._model.forward(X)

    def _activate(self, z):
        """The output activation applied to logits ``z``, in place."""
        if self.out_activation_ == "softmax":
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
        elif self.out_activation_ == "logistic":
            expit(z, out=z)
        elif self.out_activation_ == "exp":
            np.exp(z, out=z)
        return z

    def _outputs(self, X, check_input=True):
        """Network outputs after the output activation, (n, n_outputs_)."""
        return self._activate(self._logits(X, check_input))

    def _score_unchecked(self, X, y, sample_weight):
        try:
            pred = self._predict(X, check_input=False)
        except ValueError:
            # X was checked when the fit began, so the only error left is the
            # network's outputs overflowing (finite weights grown too large):
            # no finite prediction, scored NaN as scikit-learn does
            return np.nan
        if np.issubdtype(pred.dtype, np.floating) and not np.isfinite(pred).all():
            return np.nan
        return float(self._score_function(y, pred, sample_weight=sample_weight))

    def fit(self, X, y, sample_weight=None):
        """Fit the model to ``X`` and ``y``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative row weights; integer weights act as repeated rows.

        Returns
        -------
        self
        """
        self._fit(X, y, sample_weight, incremental=False)
        if hasattr(self, "_model"):  # the epoch workspaces are not kept (nor pickled)
            self._model._ws = self._model._ws_key = None
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.input_tags.sparse = _sparse_ok()
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained with fastbp's kernels.

    Parameters and fitted attributes follow
    ``sklearn.neural_network.MLPClassifier`` (see the module docstring);
    ``dtype`` picks float32 or float64 work (None: float32 for float32
    input, else float64).  Multiclass targets get a softmax output, binary
    targets one logistic unit and multilabel indicator targets one logistic
    unit per label.
    """

    _score_function = staticmethod(accuracy_score)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=_accept_sparse(), multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same "
                                     "classes as in the previous call to fit. Previously "
                                     f"got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` "
                                 f"has {self.classes_}. 'y' has {classes}.")
        return X, y

    def _encode(self, y):
        """(targets for fb.MLP, n_outputs_, out_activation_)."""
        lb = self._label_binarizer
        if lb.y_type_ == "multiclass":  # labels as indices into classes_ (sorted)
            return np.searchsorted(self.classes_, y).astype(np.int64), len(self.classes_), \
                "softmax"
        Y = lb.transform(y)
        if _has_sigmoid_output():
            return Y.astype(np.float64), Y.shape[1], "logistic"
        if lb.y_type_ == "binary" and len(self.classes_) == 2:
            # fb.MLP without a sigmoid output: a two-unit softmax, the same model
            return Y[:, 0].astype(np.int64), 2, "softmax"
        raise ValueError(f"y of type {lb.y_type_!r} with {len(self.classes_)} class(es) needs "
                         "fb.MLP(output='sigmoid'), which this fastbp lacks")

    def _binary_softmax(self):
        return self.out_activation_ == "softmax" and self._label_binarizer.y_type_ == "binary"

    def _predict(self, X, check_input=True):
        P = self._outputs(X, check_input)
        if self._binary_softmax():
            P = P[:, 1]
        elif self.n_outputs_ == 1:
            P = P.ravel()
        return self._label_binarizer.inverse_transform(P)

    def predict(self, X):
        """Predicted class labels, shape (n,) (or (n, n_labels) for multilabel)."""
        check_is_fitted(self)
        return self._predict(X)

    def predict_proba(self, X):
        """Class probabilities: (n, n_classes), (n, 2) for binary problems,
        (n, n_labels) for multilabel ones."""
        check_is_fitted(self)
        return self._proba(self._outputs(X))

    def _proba(self, P):
        if self.n_outputs_ == 1:
            p = P.ravel()
            return np.vstack([1 - p, p]).T
        return P

    def predict_log_proba(self, X):
        """Natural log of ``predict_proba``.

        It is ``np.log(predict_proba(X))`` wherever that probability is above
        zero, so that both rank the classes alike, ties included (two labels
        whose probabilities round to 1.0 tie in both).  Where a probability
        underflows to zero, its logarithm is computed from the logits (a
        finite number below ``log(tiny)``), not ``-inf``.
        """
        check_is_fitted(self)
        z = self._logits(X)
        P = self._proba(self._activate(z.copy()))
        if self.out_activation_ == "softmax":
            z = z - z.max(axis=1, keepdims=True)
            L = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        elif self.n_outputs_ == 1:
            z = z.ravel()
            L = np.vstack([-np.logaddexp(0, z), -np.logaddexp(0, -z)]).T
        else:
            L = -np.logaddexp(0, -z)
        with np.errstate(divide="ignore"):
            out = np.log(P)
        zero = P == 0
        out[zero] = L[zero]
        return out

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over ``X``, ``y`` (stochastic solvers only).

        ``classes`` (all labels of all calls) is required on the first call.
        """
        first = False
        if classes is not None:
            classes = unique_labels(classes)
        if getattr(self, "classes_", None) is None:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            first = True
        elif classes is not None and not np.array_equal(self.classes_, classes):
            raise ValueError(f"`classes={classes!r}` is not the same as on last call to "
                             f"partial_fit, was: {self.classes_!r}")
        if first:
            self.classes_ = classes
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = _has_sigmoid_output()
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor (identity output, half squared error).

    Parameters and fitted attributes follow
    ``sklearn.neural_network.MLPRegressor`` (see the module docstring):
    ``loss="squared_error"`` (identity output) or ``"poisson"`` (exponential
    output, Poisson loss, non-negative targets).
    """

    _parameter_constraints: ClassVar[dict] = {
        **_BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }
    _score_function = staticmethod(r2_score)

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype=None):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
            alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change,
            max_fun=max_fun, dtype=dtype)
        self.loss = loss

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=_accept_sparse(), multi_output=True,
                             y_numeric=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def _encode(self, y):
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        if self.loss == "poisson" and (Y < 0).any():
            raise ValueError("loss='poisson' needs non-negative y; got minimum "
                             f"{Y.min()}")
        return Y, Y.shape[1], "exp" if self.loss == "poisson" else "identity"

    def _predict(self, X, check_input=True):
        out = self._outputs(X, check_input)
        return out.ravel() if out.shape[1] == 1 else out

    def predict(self, X):
        """Predictions, shape (n,) for one output, else (n, n_outputs)."""
        check_is_fitted(self)
        return self._predict(X)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``X``, ``y``, continuing from the current state
        (stochastic solvers only)."""
        return self._fit(X, y, sample_weight, incremental=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
