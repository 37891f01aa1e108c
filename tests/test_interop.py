"""Weights moved to and from PyTorch and scikit-learn give the same predictions."""

import warnings

import numpy as np
import pytest

import fastbp as fb
from fastbp.interop import from_sklearn, from_torch, to_sklearn, to_torch


def _data(n=60, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, k, size=n)


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "identity"])
def test_torch_roundtrip(act):
    torch = pytest.importorskip("torch")
    X, _ = _data()
    model = fb.MLP([6, 8, 5, 3], activation=act, dtype="float64", seed=1)
    net = to_torch(model)
    with torch.no_grad():
        out = net(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(out, model.forward(X), rtol=1e-10, atol=1e-12)
    back = from_torch(net, dtype="float64")
    assert back.activations == model.activations
    np.testing.assert_allclose(back.forward(X), model.forward(X), rtol=1e-12, atol=1e-12)


def test_from_torch_module_and_state_dict():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 4), nn.Tanh(), nn.Linear(4, 2))
    X, _ = _data()
    with torch.no_grad():
        ref = net(torch.from_numpy(X).float()).numpy()
    m = from_torch(net)
    assert m.activations == ["tanh", "tanh", "softmax"]
    np.testing.assert_allclose(m.forward(X.astype(np.float32)), ref, rtol=1e-5, atol=1e-5)
    m2 = from_torch(net.state_dict(), activation="tanh", output="identity")
    np.testing.assert_allclose(m2.predict(X.astype(np.float32)), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="not supported"):
        from_torch(nn.Sequential(nn.Linear(3, 2), nn.Softplus(), nn.Linear(2, 2)))


@pytest.mark.parametrize("k", [2, 3])
def test_sklearn_classifier_roundtrip(k):
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPClassifier

    X, y = _data(k=k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = MLPClassifier(hidden_layer_sizes=(7, 5), activation="tanh", max_iter=20,
                           random_state=0).fit(X, y)
    m = from_sklearn(sk)
    np.testing.assert_allclose(m.predict_proba(X), sk.predict_proba(X), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(m.predict(X), sk.predict(X))
    back = to_sklearn(m, X, y)
    np.testing.assert_allclose(back.predict_proba(X), sk.predict_proba(X), rtol=1e-10, atol=1e-12)


def test_sklearn_regressor_roundtrip():
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPRegressor

    X, _ = _data()
    y = X[:, 0] - X[:, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = MLPRegressor(hidden_layer_sizes=(9,), max_iter=20, random_state=0).fit(X, y)
    m = from_sklearn(sk)
    np.testing.assert_allclose(m.predict(X), sk.predict(X), rtol=1e-10, atol=1e-12)
    back = to_sklearn(m, X, y)
    np.testing.assert_allclose(back.predict(X), sk.predict(X), rtol=1e-10, atol=1e-12)


def test_from_fastbp_estimator():
    pytest.importorskip("sklearn")
    from fastbp.sklearn import MLPClassifier

    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, y)
    m = from_sklearn(est)
    np.testing.assert_allclose(m.predict_proba(X), est.predict_proba(X), rtol=1e-10)
