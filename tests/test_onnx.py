"""ONNX export (fastbp.interop.to_onnx), run in onnxruntime.

Skipped without the ``[onnx]`` extra (onnx and onnxruntime)."""

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import fastbp as fb
from fastbp.interop import to_onnx

ACTIVATIONS = ["relu", "tanh", "sigmoid", "identity"]
OUTPUTS = [("softmax", 3), ("sigmoid", 1), ("sigmoid", 4), ("identity", 1), ("identity", 2),
           ("exp", 1), ("exp", 2)]


def _run(proto, X):
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(proto.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "X" and inp.type == "tensor(float)"
    return out.name, sess.run(None, {"X": np.asarray(X, np.float32)})[0]


def _close(got, ref):
    """Within 1e-5 relative, and 1e-5 of the outputs' scale where an output
    is near zero (a float32 sum that cancels)."""
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def _data(n=64, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("output,k", OUTPUTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_mlp_outputs_match(activation, output, k, dtype):
    X = _data()
    model = fb.MLP([6, 9, 7, k], activation=activation, output=output, dtype=dtype, seed=1)
    for W, b in model.params:  # biases too, so that every node is exercised
        b[...] = np.linspace(-0.3, 0.3, b.size)
    name, got = _run(to_onnx(model), X)
    if output in ("softmax", "sigmoid"):
        assert name == "probabilities"
        ref = model.predict_proba(X.astype(dtype))
    else:
        assert name == "predictions"
        ref = model.predict(X.astype(dtype))
    _close(got, ref)


def test_mixed_activations_and_deep():
    X = _data()
    model = fb.MLP([6, 8, 8, 8, 5], activation=["tanh", "relu", "sigmoid"], dtype="float64",
                   seed=2)
    _close(_run(to_onnx(model), X)[1], model.predict_proba(X))


def test_batch_dimension_is_free():
    model = fb.MLP([6, 5, 3], dtype="float32", seed=0)
    proto = to_onnx(model)
    for n in (1, 7, 300):
        X = _data(n)
        _close(_run(proto, X)[1], model.predict_proba(X.astype(np.float32)))


def test_confident_binary_probabilities_keep_relative_accuracy():
    """[1 - p, p] with p near 1: the first column as sigmoid(-z), not 1 - p
    in float32."""
    model = fb.MLP([2, 1], output="sigmoid", dtype="float64", seed=0)
    model.params[0][0][...] = [[9.0], [0.0]]
    X = np.c_[np.linspace(0.5, 1.5, 11), np.zeros(11)]
    got = _run(to_onnx(model), X)[1]
    z = X[:, 0] * 9.0
    np.testing.assert_allclose(got[:, 0], 1 / (1 + np.exp(z)), rtol=1e-5)


# -- the scikit-learn estimators ----------------------------------------------------------
sk = pytest.importorskip("fastbp.sklearn")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_classifier_predict_proba(kind, dtype):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5)).astype(dtype)
    s = X[:, 0] + X[:, 1] * X[:, 2]
    y = {"binary": s > 0, "multiclass": np.digitize(s, [-0.5, 0.5]),
         "multilabel": np.c_[s > 0, X[:, 3] > 0, X[:, 4] > 0.3]}[kind]
    clf = sk.MLPClassifier(hidden_layer_sizes=(10,), activation="tanh", max_iter=50,
                           random_state=0).fit(X, y)
    name, got = _run(to_onnx(clf), X)
    assert name == "probabilities"
    _close(got, clf.predict_proba(X))


@pytest.mark.parametrize("loss,k", [("squared_error", 1), ("squared_error", 3),
                                    ("poisson", 1)])
def test_regressor_predict(loss, k):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 4))
    Y = np.c_[np.abs(X[:, 0] + 2), np.abs(X[:, 1]), X[:, 2] ** 2][:, :k]
    y = Y[:, 0] if k == 1 else Y
    reg = sk.MLPRegressor(loss=loss, hidden_layer_sizes=(8,), solver="lbfgs", max_iter=50,
                          random_state=0).fit(X, y)
    name, got = _run(to_onnx(reg), X)
    assert name == "predictions"
    _close(got, reg.predict(X))


def test_refuses_what_it_cannot_export():
    with pytest.raises(ValueError, match="not fitted"):
        to_onnx(sk.MLPClassifier())
    with pytest.raises(TypeError, match="model must be a fastbp.MLP"):
        to_onnx(object())
    with pytest.raises(TypeError, match="name"):
        to_onnx(fb.MLP([2, 2]), name="")
    model = fb.MLP([2, 2], dtype="float64")
    model.params[0][0][0, 0] = 1e300
    with pytest.raises(ValueError, match="too large for float32"):
        to_onnx(model)
