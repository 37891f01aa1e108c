"""scikit-learn compatibility of fastbp.sklearn (skipped without scikit-learn)."""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastbp as fb
from fastbp.sklearn import MLPClassifier, MLPRegressor, expected_failed_checks


@parametrize_with_checks([
    MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=200,
                  random_state=0),
    MLPRegressor(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=200,
                  random_state=0),
], expected_failed_checks=expected_failed_checks)
def test_check_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def _digits(n=400):
    X, y = fb.load_digits(dtype="float64")
    return X[:n], y[:n]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_classifier_attributes_and_accuracy():
    X, y = _digits()
    clf = MLPClassifier(hidden_layer_sizes=(32,), solver="sgd", learning_rate_init=0.1,
                        batch_size=32, max_iter=30, random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.9
    assert [W.shape for W in clf.coefs_] == [(64, 32), (32, 10)]
    assert [b.shape for b in clf.intercepts_] == [(32,), (10,)]
    assert clf.n_features_in_ == 64 and clf.n_layers_ == 3 and clf.n_outputs_ == 10
    assert len(clf.loss_curve_) == clf.n_iter_ and clf.t_ == clf.n_iter_ * 400
    assert clf.best_loss_ == min(clf.loss_curve_)
    P = clf.predict_proba(X)
    np.testing.assert_allclose(P.sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), P, rtol=1e-6, atol=1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_binary_strings_proba_shape():
    X, y = _digits()
    labels = np.where(y < 5, "low", "high")
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(X, labels)
    assert clf.predict_proba(X).shape == (400, 2)
    assert set(clf.predict(X)) <= {"low", "high"}


def test_stopping_rule_and_warning():
    X, y = _digits(200)
    with pytest.warns(ConvergenceWarning):
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(X, y)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=500, tol=10.0, n_iter_no_change=2,
                        random_state=0).fit(X, y)
    assert clf.n_iter_ == 4  # stops once n_iter_no_change is exceeded, as scikit-learn
    es = MLPClassifier(hidden_layer_sizes=(16,), max_iter=200, early_stopping=True,
                       n_iter_no_change=3, random_state=0).fit(X, y)
    assert len(es.validation_scores_) == es.n_iter_ < 200
    assert es.best_validation_score_ == max(es.validation_scores_)


def test_partial_fit_keeps_optimizer_state():
    X, y = _digits(200)
    a = MLPClassifier(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=0.05,
                      batch_size=50, shuffle=False, random_state=0)
    a.partial_fit(X, y, classes=np.arange(10))
    opt = a._optimizer
    a.partial_fit(X, y)
    assert a._optimizer is opt and opt.step_ == 8 and a.n_iter_ == 2
    with pytest.raises(ValueError):
        MLPClassifier().partial_fit(X, y)  # no classes on the first call


def test_sample_weight_and_warm_start():
    X, y = _digits(200)
    sw = np.ones(200)
    sw[:100] = 0.0
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y, sample_weight=sw)
        clf.fit(X, y)
    assert clf.n_iter_ == 10


def test_regressor_multioutput_and_float32():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)).astype(np.float32)
    Y = np.c_[X[:, 0] - 2 * X[:, 1], X[:, 2]]
    reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=200, learning_rate_init=0.01,
                       random_state=0).fit(X, Y)
    assert reg.predict(X).shape == (300, 2) and reg.predict(X).dtype == np.float32
    assert reg.score(X, Y) > 0.9
    reg1 = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg1.fit(X, Y[:, 0])
    assert reg1.predict(X).shape == (300,) and reg1.coefs_[0].dtype == np.float64


def test_pipeline_and_gridsearch():
    X, y = _digits(300)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=20, learning_rate_init=0.01,
                                                         random_state=0))
    gs = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(8,), (16,)]}, cv=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gs.fit(X, y)
    assert gs.best_score_ > 0.5 and gs.predict(X).shape == (300,)


def test_refuses_schedules():
    X, y = _digits(50)
    with pytest.raises(ValueError, match="constant"):
        MLPClassifier(learning_rate="adaptive").fit(X, y)


def test_speed_path_runs():
    """Runs the benchmark configuration once (timing is measured separately)."""
    X, y = _digits(400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(128,), solver="sgd", batch_size=32,
                            learning_rate_init=0.01, max_iter=3, random_state=0).fit(X, y)
    assert clf.n_iter_ == 3
