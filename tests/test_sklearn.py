"""scikit-learn compatibility of fastbp.sklearn, checked against scikit-learn's
own MLP estimators on the same data (skipped without scikit-learn)."""

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier as SkClassifier
from sklearn.neural_network import MLPRegressor as SkRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastbp as fb
from fastbp.sklearn import MLPClassifier, MLPRegressor, _has_sigmoid_output, _sparse_ok

needs_sigmoid = pytest.mark.skipif(not _has_sigmoid_output(),
                                   reason="fb.MLP has no output='sigmoid' here")
needs_sparse = pytest.mark.skipif(not _sparse_ok(), reason="fb.MLP takes no sparse X here")
quiet = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@parametrize_with_checks([
    MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=100,
                  random_state=0),
    MLPRegressor(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=100,
                 random_state=0),
])
def test_check_estimator(estimator, check):
    """No failure and no expected failure (default solver adam)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def _digits(n=400):
    X, y = fb.load_digits(dtype="float64")
    return X[:n], y[:n]


def _regression(n=150, k=1, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 5))
    Y = np.c_[X[:, 0] - 2 * X[:, 1], X[:, 2] * X[:, 3], X[:, 4]][:, :k]
    return X, (Y[:, 0] if k == 1 else Y)


# -- item 1: parameter validation ----------------------------------------------
BAD_PARAMS = [
    ("hidden_layer_sizes", "a"), ("hidden_layer_sizes", (10.5,)), ("hidden_layer_sizes", (0,)),
    ("hidden_layer_sizes", ((3,),)), ("hidden_layer_sizes", (True,)), ("hidden_layer_sizes", -1),
    ("activation", ["relu"]), ("activation", "softmax"), ("solver", "lbfgs2"),
    ("alpha", -1.0), ("alpha", "x"), ("batch_size", 1.5), ("batch_size", 0),
    ("batch_size", True), ("batch_size", "big"), ("learning_rate", "cyclic"),
    ("learning_rate_init", 0.0), ("power_t", -0.5), ("max_iter", 0), ("max_iter", True),
    ("max_iter", 2.0), ("shuffle", "yes"), ("random_state", "seed"), ("tol", -1e-4),
    ("tol", None), ("verbose", "loud"), ("warm_start", 1.5), ("momentum", 1.5),
    ("momentum", -0.1), ("nesterovs_momentum", None), ("early_stopping", "no"),
    ("validation_fraction", 1.0), ("beta_1", 1.0), ("beta_2", -0.1), ("epsilon", 0.0),
    ("n_iter_no_change", 0), ("n_iter_no_change", False), ("max_fun", 0), ("max_fun", 1.5),
    ("dtype", "float16"), ("dtype", np.int32),
]


@pytest.mark.parametrize("name,value", BAD_PARAMS)
@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_bad_parameter_names_itself(cls, name, value):
    X, y = _digits(30)
    with pytest.raises((ValueError, TypeError), match=name):
        cls(**{name: value}).fit(X, y)


def test_bad_regressor_loss_names_itself():
    X, y = _regression(30)
    with pytest.raises(ValueError, match="loss"):
        MLPRegressor(loss="absolute_error").fit(X, y)


@quiet
def test_scikit_learn_ranges_accepted():
    X, y = _digits(60)
    MLPClassifier(hidden_layer_sizes=(), max_iter=2).fit(X, y)  # no hidden layer
    MLPClassifier(hidden_layer_sizes=np.array([4, 3]), max_iter=2).fit(X, y)
    MLPClassifier(solver="sgd", momentum=1.0, max_iter=2, learning_rate_init=1e-4).fit(X, y)
    MLPClassifier(solver="sgd", momentum=0.0, max_iter=2).fit(X, y)
    MLPClassifier(n_iter_no_change=np.inf, max_iter=2, beta_1=0.0, tol=0.0).fit(X, y)
    with pytest.raises(ValueError, match="validation_fraction"):
        MLPClassifier(early_stopping=True, validation_fraction=0.0).fit(X, y)


# -- item 2: lbfgs ----------------------------------------------------------------
@quiet
@pytest.mark.parametrize("cls,sk_cls", [(MLPClassifier, SkClassifier), (MLPRegressor, SkRegressor)])
def test_lbfgs_against_scikit_learn(cls, sk_cls):
    if cls is MLPClassifier:
        X, y = _digits(300)
        X = X / 16
    else:
        X, y = _regression(200)
    kw = {"solver": "lbfgs", "hidden_layer_sizes": (20,), "max_iter": 150, "random_state": 0}
    ours, theirs = cls(**kw).fit(X, y), sk_cls(**kw).fit(X, y)
    assert ours.score(X, y) > theirs.score(X, y) - 0.05
    assert 1 <= ours.n_iter_ <= 150
    assert [c.shape for c in ours.coefs_] == [c.shape for c in theirs.coefs_]
    assert [b.shape for b in ours.intercepts_] == [b.shape for b in theirs.intercepts_]
    # loss_ is the objective at the final parameters (L2 term included)
    T = np.searchsorted(ours.classes_, y) if cls is MLPClassifier else y
    assert ours.loss_ == pytest.approx(ours.model_.loss_and_grad(X, T)[0], rel=1e-10)
    for attr in ("loss_curve_", "best_loss_", "validation_scores_"):  # none, as scikit-learn
        assert hasattr(ours, attr) == hasattr(theirs, attr)
    assert not hasattr(ours, "partial_fit")  # scikit-learn's regressor still shows it


def test_lbfgs_limits_and_warning():
    X, y = _digits(200)
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        clf = MLPClassifier(solver="lbfgs", hidden_layer_sizes=(8,), max_iter=3).fit(X, y)
    assert clf.n_iter_ == 3
    with pytest.warns(ConvergenceWarning):
        MLPClassifier(solver="lbfgs", hidden_layer_sizes=(8,), max_fun=5).fit(X, y)


@quiet
def test_lbfgs_float32_and_warm_start():
    X, y = _digits(200)
    clf = MLPClassifier(solver="lbfgs", hidden_layer_sizes=(8,), max_iter=5, dtype="float32",
                        warm_start=True, random_state=0).fit(X, y)
    assert clf.coefs_[0].dtype == np.float32
    first = clf.loss_
    clf.fit(X, y)
    assert clf.loss_ < first


# -- item 3: schedules, momentum -----------------------------------------------
@quiet
@pytest.mark.parametrize("schedule,extra", [
    ("constant", {}), ("invscaling", {}), ("adaptive", {"tol": 10.0, "n_iter_no_change": 1}),
])
@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_schedules_match_scikit_learn_exactly(schedule, extra, nesterov):
    """Same starting weights, no shuffling: the same parameters as
    scikit-learn after 12 epochs, learning rate changes included."""
    X, y = _regression(120)
    kw = dict(hidden_layer_sizes=(7,), solver="sgd", learning_rate=schedule,
              learning_rate_init=0.05, power_t=0.3, batch_size=25, shuffle=False,
              warm_start=True, random_state=0, momentum=0.8, nesterovs_momentum=nesterov,
              alpha=0.01, **extra)
    theirs = SkRegressor(max_iter=1, **kw).fit(X, y)
    ours = MLPRegressor(max_iter=1, **kw).fit(X, y)
    for (W, b), Ws, bs in zip(ours.model_.params, theirs.coefs_, theirs.intercepts_):
        W[...] = Ws
        b[...] = bs
    theirs.set_params(max_iter=12).fit(X, y)
    ours.set_params(max_iter=12).fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.loss_curve_[1:], theirs.loss_curve_[1:], rtol=1e-9)
    assert ours._optimizer.lr == pytest.approx(theirs._optimizer.learning_rate, rel=1e-12)
    assert (ours.n_iter_, ours.t_) == (theirs.n_iter_, theirs.t_)


@quiet
def test_adaptive_stops_when_rate_is_tiny():
    X, y = _regression(100)
    reg = MLPRegressor(solver="sgd", learning_rate="adaptive", tol=100.0, n_iter_no_change=1,
                       max_iter=500, random_state=0).fit(X, y)
    assert reg._optimizer.lr <= 1e-6 and reg.n_iter_ < 500


# -- item 4: sample weights ------------------------------------------------------
@quiet
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_integer_weights_equal_repeated_rows(solver):
    rng = np.random.RandomState(1)
    X = rng.rand(40, 6)
    y = rng.randint(0, 3, 40)
    sw = rng.randint(0, 4, 40)
    kw = {"hidden_layer_sizes": (5,), "solver": solver, "alpha": 0.1, "max_iter": 30, "random_state": 0}
    a = MLPClassifier(**kw).fit(X, y, sample_weight=sw)
    b = MLPClassifier(**kw).fit(np.repeat(X, sw, 0), np.repeat(y, sw))
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=1e-7, atol=1e-9)


def test_l2_term_divided_by_total_weight():
    rng = np.random.RandomState(0)
    X = rng.rand(20, 4)
    y = rng.randint(0, 3, 20)
    sw = np.full(20, 2.0)
    m = fb.MLP([4, 6, 3], dtype="float64", seed=0, alpha=0.3)
    la, ga = m.loss_and_grad(X, y, sample_weight=sw)
    lb, gb = m.loss_and_grad(np.repeat(X, 2, 0), np.repeat(y, 2))
    assert la == pytest.approx(lb, rel=1e-12)
    for (dWa, dba), (dWb, dbb) in zip(ga, gb):
        np.testing.assert_allclose(dWa, dWb, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(dba, dbb, rtol=1e-10, atol=1e-14)


@quiet
def test_early_stopping_with_sample_weight_matches_scikit_learn_split():
    X, y = _digits(300)
    X = X / 16
    sw = np.linspace(0.5, 2, 300)
    # n_iter_no_change=3 stops both after 5-13 noisy epochs, where the scores
    # differ by chance; 10 lets both learn (0.96-1.0)
    kw = {"hidden_layer_sizes": (16,), "early_stopping": True, "n_iter_no_change": 10,
          "max_iter": 100, "random_state": 0, "learning_rate_init": 0.01}
    ours = MLPClassifier(**kw).fit(X, y, sample_weight=sw)
    theirs = SkClassifier(**kw).fit(X, y, sample_weight=sw)
    assert len(ours.validation_scores_) == ours.n_iter_
    assert ours.best_validation_score_ == max(ours.validation_scores_)
    assert ours.best_loss_ is None and theirs.best_loss_ is None
    assert ours.best_validation_score_ > theirs.best_validation_score_ - 0.1


# -- item 5: target types, sparse X ------------------------------------------------
@quiet
def test_multiclass_attributes_like_scikit_learn():
    X, y = _digits()
    kw = {"hidden_layer_sizes": (32,), "solver": "sgd", "learning_rate_init": 0.1, "batch_size": 32,
              "max_iter": 30, "random_state": 0}
    ours, theirs = MLPClassifier(**kw).fit(X, y), SkClassifier(**kw).fit(X, y)
    assert ours.score(X, y) > 0.9 and ours.score(X, y) > theirs.score(X, y) - 0.05
    for attr in ("n_features_in_", "n_layers_", "n_outputs_", "out_activation_", "n_iter_",
                 "t_"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert [W.shape for W in ours.coefs_] == [W.shape for W in theirs.coefs_]
    assert len(ours.loss_curve_) == ours.n_iter_ and ours.best_loss_ == min(ours.loss_curve_)
    np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    P = ours.predict_proba(X)
    np.testing.assert_allclose(P.sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(np.exp(ours.predict_log_proba(X)), P, rtol=1e-6, atol=1e-12)


@quiet
def test_binary_like_scikit_learn():
    X, y = _digits()
    labels = np.where(y < 5, "low", "high")
    kw = {"hidden_layer_sizes": (8,), "max_iter": 40, "random_state": 0}
    ours, theirs = MLPClassifier(**kw).fit(X, labels), SkClassifier(**kw).fit(X, labels)
    assert ours.predict_proba(X).shape == (400, 2)
    assert set(ours.predict(X)) <= {"low", "high"}
    assert ours.score(X, labels) > theirs.score(X, labels) - 0.1
    np.testing.assert_allclose(np.exp(ours.predict_log_proba(X)), ours.predict_proba(X),
                               rtol=1e-6, atol=1e-12)
    if _has_sigmoid_output():
        assert ours.out_activation_ == theirs.out_activation_ == "logistic"
        assert ours.coefs_[-1].shape == theirs.coefs_[-1].shape == (8, 1)
        assert ours.n_outputs_ == 1


@needs_sigmoid
@quiet
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_multilabel_like_scikit_learn(solver):
    X, y = _digits()
    Y = np.c_[y < 5, y % 2 == 0, y == 7].astype(int)
    kw = {"hidden_layer_sizes": (16,), "max_iter": 60, "random_state": 0, "solver": solver}
    ours, theirs = MLPClassifier(**kw).fit(X, Y), SkClassifier(**kw).fit(X, Y)
    assert ours.out_activation_ == theirs.out_activation_ == "logistic"
    assert ours.predict(X).shape == Y.shape and ours.predict_proba(X).shape == Y.shape
    assert ours.score(X, Y) > theirs.score(X, Y) - 0.1
    pf = MLPClassifier(hidden_layer_sizes=(16,), random_state=0)
    pf.partial_fit(X, Y, classes=np.arange(3))
    pf.partial_fit(X, Y)
    assert pf.predict(X).shape == Y.shape


@needs_sparse
@quiet
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_sparse_input_like_dense(solver):
    X, y = _digits(200)
    kw = {"hidden_layer_sizes": (8,), "max_iter": 10, "random_state": 0, "solver": solver}
    dense = MLPClassifier(**kw).fit(X, y)
    for fmt in (sp.csr_matrix, sp.csc_matrix):
        sparse = MLPClassifier(**kw).fit(fmt(X), y)
        np.testing.assert_allclose(sparse.predict_proba(fmt(X)), dense.predict_proba(X),
                                   rtol=1e-6, atol=1e-9)
        assert sparse.score(fmt(X), y) == dense.score(X, y)


@quiet
@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_poisson_regressor_like_scikit_learn(solver):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 4))
    y = rng.poisson(np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1]))
    kw = {"loss": "poisson", "solver": solver, "hidden_layer_sizes": (10,), "max_iter": 300,
          "random_state": 0, "learning_rate_init": 0.01}
    ours, theirs = MLPRegressor(**kw).fit(X, y), SkRegressor(**kw).fit(X, y)
    assert ours.out_activation_ == theirs.out_activation_ == "exp"
    assert (ours.predict(X) > 0).all() and ours.predict(X).shape == (300,)
    assert ours.score(X, y) > theirs.score(X, y) - 0.1
    assert ours.loss_ < theirs.loss_ * 1.2
    with pytest.raises(ValueError, match="non-negative"):
        MLPRegressor(**kw).fit(X, -y - 1.0)


# -- item 6: everything else -------------------------------------------------------
def test_stopping_rule_and_warning():
    X, y = _digits(200)
    with pytest.warns(ConvergenceWarning):
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(X, y)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=500, tol=10.0, n_iter_no_change=2,
                        random_state=0).fit(X, y)
    assert clf.n_iter_ == 4  # stops once n_iter_no_change is exceeded, as scikit-learn
    sk = SkClassifier(hidden_layer_sizes=(8,), max_iter=500, tol=10.0, n_iter_no_change=2,
                      random_state=0).fit(X, y)
    assert sk.n_iter_ == clf.n_iter_


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_early_stopping_restores_best(solver):
    X, y = _digits(200)
    es = MLPClassifier(hidden_layer_sizes=(16,), max_iter=200, early_stopping=True,
                       n_iter_no_change=3, random_state=0, solver=solver,
                       learning_rate_init=0.01).fit(X, y)
    assert len(es.validation_scores_) == es.n_iter_ < 200
    assert es.best_validation_score_ == max(es.validation_scores_)
    with pytest.raises(ValueError, match="early_stopping"):
        es.partial_fit(X, y)


@quiet
def test_partial_fit_every_target_type():
    X, y = _digits(200)
    a = MLPClassifier(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=0.05,
                      batch_size=50, shuffle=False, random_state=0)
    a.partial_fit(X, y, classes=np.arange(10))
    opt = a._optimizer
    a.partial_fit(X[:100], y[:100])
    assert a._optimizer is opt and opt.step_ == 6 and a.n_iter_ == 1 and a.t_ == 300
    assert len(a.loss_curve_) == 2
    with pytest.raises(ValueError, match="classes"):
        MLPClassifier().partial_fit(X, y)  # no classes on the first call
    with pytest.raises(ValueError, match="classes"):
        a.partial_fit(X, y, classes=np.arange(11))
    b = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    b.partial_fit(X, y < 5, classes=[False, True])
    assert b.predict_proba(X).shape == (200, 2)
    r = MLPRegressor(hidden_layer_sizes=(8,), random_state=0)
    r.partial_fit(X, np.c_[y, -y])
    r.partial_fit(X, np.c_[y, -y])
    assert r.predict(X).shape == (200, 2) and r.n_iter_ == 1 and r.t_ == 400


@quiet
def test_warm_start_and_sample_weight():
    X, y = _digits(200)
    sw = np.ones(200)
    sw[:100] = 0.0
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0, warm_start=True)
    clf.fit(X, y, sample_weight=sw)
    W = clf.coefs_[0].copy()
    clf.fit(X, y)
    assert clf.n_iter_ == 5 and clf.t_ == 2000 and len(clf.loss_curve_) == 10
    assert not np.array_equal(W, clf.coefs_[0])
    with pytest.raises(ValueError, match="warm_start"):
        clf.fit(X[y < 5], y[y < 5])


@quiet
def test_regressor_multioutput_float32_and_pickle():
    X, Y = _regression(300, k=2)
    X = X.astype(np.float32)
    reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=200, learning_rate_init=0.01,
                       random_state=0).fit(X, Y)
    assert reg.predict(X).shape == (300, 2) and reg.predict(X).dtype == np.float32
    assert reg.score(X, Y) > 0.9 and reg.n_outputs_ == 2 and reg.out_activation_ == "identity"
    back = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(back.predict(X), reg.predict(X))
    reg1 = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0, dtype="float64")
    reg1.fit(X, Y[:, 0])
    assert reg1.predict(X).shape == (300,) and reg1.coefs_[0].dtype == np.float64


@quiet
def test_regressor_float32_predictions_match_float64():
    """scikit-learn's test_mlp_regressor_dtypes_casting (skipped upstream
    test, see test_sklearn_upstream.py): the same fits, float64 and float32
    data, give the same predictions to 5e-4 relative, plus an absolute term
    of 5e-5 of the largest prediction for the float32 rounding of the
    predictions near 0 (scikit-learn's own estimator is 5.5e-6 off at most
    on this test, fastbp 1.5e-6).  A float32 fit that trained otherwise
    than the float64 one (a cast lost, a step in the other dtype) is off by
    far more than that."""
    from sklearn.datasets import load_digits

    X, y = load_digits(n_class=2, return_X_y=True)
    pred = {}
    for dt in (np.float64, np.float32):
        reg = MLPRegressor(alpha=1e-5, hidden_layer_sizes=(5, 3), random_state=1,
                           max_iter=150, tol=1e-3).fit(X[:300].astype(dt), y[:300])
        pred[dt] = reg.predict(X[300:].astype(dt))
        assert pred[dt].dtype == dt
    scale = np.abs(pred[np.float64]).max()
    np.testing.assert_allclose(pred[np.float32], pred[np.float64], rtol=5e-4,
                               atol=5e-5 * scale)


@quiet
def test_verbose_prints(capsys):
    X, y = _digits(100)
    MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, verbose=True).fit(X, y)
    assert "Iteration 2, loss =" in capsys.readouterr().out


def test_pipeline_and_gridsearch():
    X, y = _digits(300)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=20, learning_rate_init=0.01,
                                                         random_state=0))
    gs = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(8,), (16,)]}, cv=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gs.fit(X, y)
    assert gs.best_score_ > 0.5 and gs.predict(X).shape == (300,)


def test_speed_path_runs():
    """Runs the benchmark configuration once (timing is measured separately)."""
    X, y = _digits(400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(128,), solver="sgd", batch_size=32,
                            learning_rate_init=0.01, max_iter=3, random_state=0).fit(X, y)
    assert clf.n_iter_ == 3


# -- round 3: scikit-learn's own tests (tests/test_sklearn_upstream.py) -------------
@quiet
@pytest.mark.parametrize("activation", ["logistic", "relu", "tanh"])
@pytest.mark.parametrize("cls,sk_cls", [(MLPClassifier, SkClassifier), (MLPRegressor, SkRegressor)])
def test_starting_weights_are_scikit_learns(cls, sk_cls, activation):
    """The same random_state draws the same starting weights as scikit-learn
    (Glorot's uniform bound, factor 2 for logistic, biases drawn too), so a
    few full-batch L-BFGS iterations agree to rounding."""
    X, y = _regression(80) if cls is MLPRegressor else _digits(120)
    kw = {"solver": "lbfgs", "hidden_layer_sizes": (9, 7), "max_iter": 3,
          "activation": activation, "random_state": np.random.RandomState(3)}
    ours = cls(**kw).fit(X, y)
    theirs = sk_cls(**{**kw, "random_state": np.random.RandomState(3)}).fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _fitted_classifier(**kw):
    X, y = _digits(120)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPClassifier(hidden_layer_sizes=(6,), max_iter=3, random_state=0,
                             **kw).fit(X / 16, y), X / 16


def test_coefs_and_intercepts_assignment_writes_into_the_model():
    clf, X = _fitted_classifier()
    rng = np.random.RandomState(0)
    Ws = [rng.normal(size=W.shape) for W in clf.coefs_]
    bs = [rng.normal(size=b.shape) for b in clf.intercepts_]
    clf.coefs_ = Ws
    clf.intercepts_ = bs
    z = np.maximum(X @ Ws[0] + bs[0], 0) @ Ws[1] + bs[1]
    P = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(clf.predict_proba(X), P / P.sum(1, keepdims=True), rtol=1e-10)
    clf.coefs_[1] = 2 * Ws[1]  # one entry: written into the model too
    np.testing.assert_array_equal(clf.model_.params[1][0], 2 * Ws[1])
    clf.intercepts_[-1] = np.zeros(10, np.float32)
    np.testing.assert_array_equal(clf.model_.params[1][1], 0)
    clf.coefs_[0] *= 0.5  # in place, through the view
    np.testing.assert_array_equal(clf.model_.params[0][0], 0.5 * Ws[0])
    # pickled or copied, the list is a plain list of arrays
    assert type(pickle.loads(pickle.dumps(clf.coefs_))) is list


@pytest.mark.parametrize("which,value,error,match", [
    ("coefs_", "shape", ValueError, r"coefs_\[0\] must have shape \(64, 6\).*; got \(3, 3\)"),
    ("coefs_", "nan", ValueError, r"coefs_\[1\] must be finite"),
    ("coefs_", "short", ValueError, r"coefs_ must be a list of 2 arrays, one per layer"),
    ("coefs_", "ndim", ValueError, r"coefs_\[0\] must be 2-D"),
    ("intercepts_", "shape", ValueError, r"intercepts_\[0\] must have shape \(6,\).*\(3,\)"),
    ("intercepts_", "text", TypeError, r"intercepts_\[0\]"),
    ("intercepts_", "scalar", ValueError, r"intercepts_ must be a list of 2 arrays"),
])
def test_coefs_assignment_is_checked(which, value, error, match):
    """A bad list, or a bad entry, is refused naming it; nothing is written."""
    clf, _ = _fitted_classifier()
    before = clf.model_.flat_params.copy()
    good = [a.copy() for a in getattr(clf, which)]
    first = {"shape": np.ones((3, 3) if which == "coefs_" else 3), "ndim": good[0][None],
             "text": ["a"] * 6}
    bad = {"nan": [good[0], np.full_like(good[1], np.nan)], "short": good[:1],
           "scalar": 1.0}.get(value) or [first[value], good[1]]
    with pytest.raises(error, match=match):
        setattr(clf, which, bad)
    if isinstance(bad, list) and len(bad) == 2:
        k = 0 if value in first else 1
        with pytest.raises(error, match=match):
            getattr(clf, which)[k] = bad[k]
    with pytest.raises(TypeError, match="cannot change"):
        getattr(clf, which).append(good[0])
    np.testing.assert_array_equal(clf.model_.flat_params, before)


def test_coefs_assignment_float32_overflow_and_index():
    clf, _ = _fitted_classifier(dtype="float32")
    with pytest.raises(ValueError, match=r"coefs_\[1\] holds values too large for float32"):
        clf.coefs_[1] = np.full((6, 10), 1e300)
    with pytest.raises(IndexError, match="coefs_ has 2 layers"):
        clf.coefs_[2] = np.ones((6, 10))


@quiet
def test_weights_assigned_before_fit_start_partial_fit_and_warm_start():
    X, y = _regression(60)
    rng = np.random.RandomState(1)
    Ws, bs = [rng.normal(size=(5, 4)), rng.normal(size=(4, 1))], [np.zeros(4), np.zeros(1)]
    kw = {"hidden_layer_sizes": (4,), "solver": "sgd", "learning_rate_init": 1e-9,
          "momentum": 0.0, "random_state": 0}
    for how in ("partial_fit", "warm_start"):
        reg = MLPRegressor(**kw, warm_start=how == "warm_start", max_iter=1)
        reg.coefs_ = [W.copy() for W in Ws]
        reg.intercepts_ = [b.copy() for b in bs]
        getattr(reg, "partial_fit" if how == "partial_fit" else "fit")(X, y)
        for a, b in zip(reg.coefs_, Ws):  # a step of 1e-9 from the given weights
            np.testing.assert_allclose(a, b, atol=1e-6)
    reg = MLPRegressor(**kw, max_iter=1)  # a plain fit draws its own
    reg.coefs_, reg.intercepts_ = Ws, bs
    reg.fit(X, y)
    assert not np.allclose(reg.coefs_[0], Ws[0], atol=1e-3)
    reg = MLPRegressor(**kw)
    reg.coefs_ = Ws
    with pytest.raises(ValueError, match="assign both coefs_ and intercepts_"):
        reg.partial_fit(X, y)
    assert not hasattr(reg, "model_")
    reg = MLPRegressor(**kw)
    reg.coefs_, reg.intercepts_ = [np.ones((5, 3)), np.ones((3, 1))], bs
    with pytest.raises(ValueError, match=r"coefs_\[0\] must have shape \(5, 4\)"):
        reg.partial_fit(X, y)


@quiet
def test_learning_rate_after_warm_start_and_partial_fit():
    """scikit-learn's test_learning_rate_warmstart through the public
    model_.optimizer.lr: invscaling continues from t_, constant stays."""
    X = [[3, 2], [1, 6], [5, 6], [-2, -4]]
    y = [1, 1, 1, 0]
    for schedule in ("invscaling", "constant"):
        kw = {"solver": "sgd", "hidden_layer_sizes": 4, "learning_rate": schedule,
              "power_t": 0.25}
        mlp = MLPClassifier(max_iter=1, warm_start=True, **kw).fit(X, y)
        prev = mlp.model_.optimizer.lr
        mlp.fit(X, y)
        post = mlp.model_.optimizer.lr
        pf = MLPClassifier(**kw)
        for _ in range(3):
            pf.partial_fit(X, y, classes=[0, 1])
        if schedule == "constant":
            assert prev == post == pf.model_.optimizer.lr == mlp.learning_rate_init
        else:
            assert post == mlp.learning_rate_init / (8 + 1) ** mlp.power_t
            assert pf.model_.optimizer.lr == pf.learning_rate_init / (12 + 1) ** pf.power_t


def test_adaptive_learning_rate_goes_below_1e_6():
    """scikit-learn's test_adaptive_learning_rate on model_.optimizer.lr."""
    clf = MLPClassifier(tol=0.5, max_iter=3000, solver="sgd", learning_rate="adaptive")
    clf.fit([[3, 2], [1, 6]], [1, 0])
    assert clf.max_iter > clf.n_iter_
    assert clf.model_.optimizer.lr < 1e-6


def test_diverging_fit_with_early_stopping_keeps_the_best_weights():
    X, y = _regression(150)
    kw = {"hidden_layer_sizes": 50, "activation": "identity", "solver": "sgd",
          "learning_rate_init": 1.0, "max_iter": 20, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.warns(ConvergenceWarning, match="diverged"):
            reg = MLPRegressor(early_stopping=True, **kw).fit(X * 100, y)
    assert np.isnan(reg.validation_scores_[-1]) and np.isnan(reg.loss_curve_[-1])
    assert len(reg.validation_scores_) == len(reg.loss_curve_) == reg.n_iter_
    assert np.isfinite(reg.model_.flat_params).all()
    finite = [s for s in reg.validation_scores_ if np.isfinite(s)]
    assert reg.best_validation_score_ == max(finite)
    assert reg.score(X[:20] * 100, y[:20]) == pytest.approx(
        MLPRegressor.score(reg, X[:20] * 100, y[:20]))
    msg = (r"^Solver produced non-finite parameter weights\. The input data may contain "
           r"large values and need to be preprocessed\. \(fastbp: training diverged")
    with pytest.raises(ValueError, match=msg), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MLPRegressor(**kw).fit(X * 100, y)


@quiet
@needs_sigmoid
def test_log_proba_ranks_as_proba_with_ties():
    """Two labels whose probabilities round to 1.0 tie in predict_log_proba
    too; a probability that underflows gets a finite logarithm."""
    X, Y = np.eye(3), np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0]])
    clf = MLPClassifier(hidden_layer_sizes=(3,), activation="identity", solver="lbfgs",
                        max_iter=5, random_state=0).fit(X, Y)
    clf.coefs_ = [np.eye(3), np.array([[40.0, 50.0, -1600.0], [50.0, 40.0, 0.0],
                                       [0.0, 0.0, 800.0]])]
    clf.intercepts_ = [np.zeros(3), np.zeros(3)]
    P, L = clf.predict_proba(X), clf.predict_log_proba(X)
    assert P[0, 0] == P[0, 1] == 1.0 and P[0, 2] == 0  # logits 40 and 50 tie at 1.0
    np.testing.assert_array_equal(P.argmax(1), L.argmax(1))
    assert np.isfinite(L).all() and (P == 0).any()
    pos = P > 0
    np.testing.assert_array_equal(L[pos], np.log(P[pos]))
    assert (L[~pos] < np.log(np.finfo(np.float64).tiny)).all()
