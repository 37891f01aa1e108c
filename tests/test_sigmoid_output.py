"""Sigmoid outputs: fb.sigmoid_cross_entropy, fb.MLP(output="sigmoid") for
binary and multilabel classification, model files and interop with
scikit-learn's logistic-output MLPClassifier.

The reference loss here is written from the textbook form
``-(y log p + (1 - y) log(1 - p))`` with SciPy's ``log_expit``, not from the
softplus form the kernel uses, so the two are independent.
"""

import warnings

import numpy as np
import pytest
import reference as ref
from reference import assert_close
from scipy.special import expit, log_expit

import fastbp as fb

DTYPES = [np.float32, np.float64]
EPS = 1e-6


# -- naive references -------------------------------------------------------
def ref_bce(z, Y, sample_weight=None):
    """Weighted mean over rows of the binary cross-entropy summed over labels,
    and its gradient w_i (sigmoid(z) - Y), in float64."""
    z = np.asarray(z, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64).reshape(z.shape)
    w = ref.row_weights(z.shape[0], sample_weight)
    per = -(Y * log_expit(z) + (1 - Y) * log_expit(-z))
    loss = float(np.sum(w * per.sum(axis=1)))
    return loss, w[:, None] * (expit(z) - Y)


def ref_mlp(flat, widths, hidden, X, Y, alpha=0.0, sample_weight=None):
    """Loss (L2 term included) and flat gradient of a sigmoid-output MLP."""
    layers = ref.unflatten(flat, widths)
    n = X.shape[0] if sample_weight is None else float(np.sum(sample_weight))  # L2 divisor
    names = [hidden] * (len(layers) - 1) + ["identity"]
    hs = [np.asarray(X, dtype=np.float64)]
    for (W, b), name in zip(layers, names):
        hs.append(ref.dense_forward(hs[-1], W, b, name))
    loss, dh = ref_bce(hs[-1], Y, sample_weight)
    grads = []
    for k in range(len(layers) - 1, -1, -1):
        W, _ = layers[k]
        dx, dW, db = ref.dense_backward(dh, hs[k], W, hs[k + 1], names[k])
        grads.append((dW + alpha / n * W, db))
        loss += alpha / (2 * n) * float(np.sum(W * W))
        dh = dx
    grads.reverse()
    return loss, np.concatenate([np.concatenate([dW.ravel(), db]) for dW, db in grads])


def numeric_grad(f, x):
    """Central differences of the scalar f() with respect to x (in place)."""
    g = np.zeros(x.shape)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + EPS
        fp = f()
        flat[i] = old - EPS
        fm = f()
        flat[i] = old
        gf[i] = (fp - fm) / (2 * EPS)
    return g


def rel_err(a, n):
    a, n = np.ravel(a).astype(np.float64), np.ravel(n).astype(np.float64)
    return float(np.max(np.abs(a - n)) / max(np.max(np.abs(n)), 1e-8))


def flat_grad(grads):
    return np.concatenate([np.concatenate([dW.ravel(), db]) for dW, db in grads])


# -- the layer function -------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 1), (33, 5), (129, 17), (5, 150)])
@pytest.mark.parametrize("magnitude", [1.0, 30.0])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("soft", [False, True])
def test_loss_and_grad_match_reference(dtype, shape, magnitude, weighted, soft):
    n, k = shape
    rng = np.random.default_rng(n * 7 + k)
    z = (rng.standard_normal(shape) * magnitude).astype(dtype)
    Y = rng.random(shape) if soft else rng.integers(0, 2, shape)
    Y = Y.astype(dtype) if soft else Y
    sw = rng.random(n) + 0.1 if weighted else None
    z0, Y0 = z.copy(), Y.copy()
    loss, dz = fb.sigmoid_cross_entropy(z, Y, sample_weight=sw)
    assert isinstance(loss, dtype) and dz.dtype == dtype and dz.shape == shape
    rl, rdz = ref_bce(z, Y, sw)
    # k terms per row, each of size up to ~|z|
    assert_close(loss, rl, dtype, k, max(abs(rl), np.abs(z).max() * k / 8), "loss")
    assert_close(dz, rdz, dtype, 1, ref.row_weights(n, sw).max(), "dlogits")
    np.testing.assert_array_equal(z, z0)
    np.testing.assert_array_equal(Y, Y0)


def test_matches_scikit_learn_binary_log_loss():
    """scikit-learn's MLP loss for logistic outputs: averaged over rows,
    summed over outputs (its clipping at eps does not bite at these logits)."""
    from sklearn.neural_network._base import binary_log_loss

    rng = np.random.default_rng(0)
    z = rng.standard_normal((50, 4)) * 3
    Y = rng.integers(0, 2, (50, 4))
    sw = rng.random(50) + 0.5
    loss, _ = fb.sigmoid_cross_entropy(z, Y)
    np.testing.assert_allclose(loss, binary_log_loss(Y, expit(z)), rtol=1e-12)
    loss, _ = fb.sigmoid_cross_entropy(z, Y, sample_weight=sw)
    np.testing.assert_allclose(loss, binary_log_loss(Y, expit(z), sample_weight=sw),
                               rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_unit_accepts_1d_targets(dtype):
    z = np.array([[0.3], [-2.0], [5.0]], dtype=dtype)
    y = np.array([1, 0, 0])
    l1, g1 = fb.sigmoid_cross_entropy(z, y)
    l2, g2 = fb.sigmoid_cross_entropy(z, y[:, None])
    assert l1 == l2 and g1.shape == (3, 1)
    np.testing.assert_array_equal(g1, g2)
    # float64 targets do not promote float32 logits
    l3, g3 = fb.sigmoid_cross_entropy(z, y.astype(np.float64))
    assert isinstance(l3, dtype) and g3.dtype == dtype
    l4, _ = fb.sigmoid_cross_entropy(z, y.astype(bool))
    assert l4 == l1


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_logits_finite_and_exact(dtype):
    big = dtype(1e4)
    z = np.array([[big, -big], [-big, big], [big, big], [-big, -big]], dtype=dtype)
    Y = np.array([[1, 0], [1, 0], [0, 1], [1, 1]])
    loss, dz = fb.sigmoid_cross_entropy(z, Y)
    assert np.isfinite(loss) and np.all(np.isfinite(dz))
    # right with certainty: 0 (no log(0)); wrong: |z| per label
    per_row = np.array([0.0, 2e4, 1e4, 2e4])
    np.testing.assert_allclose(float(loss), per_row.mean(), rtol=1e-6)
    np.testing.assert_array_equal(dz, (expit(z.astype(np.float64)) - Y) / 4)
    # right with confidence: a loss of 2 exp(-40) ~ 1e-17, not the rounding
    # error of 40 - 40 (absolute precision of one ulp of 1, as the softmax's)
    z = np.array([[-40.0, 40.0]], dtype=dtype)
    loss, dz = fb.sigmoid_cross_entropy(z, [[0, 1]])
    assert 0 <= float(loss) <= np.finfo(dtype).eps
    np.testing.assert_allclose(dz, [[np.exp(-40.0), -np.exp(-40.0)]], rtol=1e-5,
                               atol=np.finfo(dtype).eps)


def test_gradcheck_layer_function():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((6, 4)) * 2
    for Y, sw in ((rng.integers(0, 2, (6, 4)), None), (rng.random((6, 4)), rng.random(6) + 0.2)):
        _, dz = fb.sigmoid_cross_entropy(z, Y, sample_weight=sw)

        def loss(Y=Y, sw=sw):
            return float(fb.sigmoid_cross_entropy(z, Y, sample_weight=sw)[0])

        assert rel_err(dz, numeric_grad(loss, z)) < 1e-6


def test_integer_sample_weights_are_row_duplication():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((6, 3))
    Y = rng.integers(0, 2, (6, 3))
    sw = np.array([1, 2, 0, 3, 1, 1])
    loss, _ = fb.sigmoid_cross_entropy(z, Y, sample_weight=sw)
    rows = np.repeat(np.arange(6), sw)
    np.testing.assert_allclose(loss, fb.sigmoid_cross_entropy(z[rows], Y[rows])[0], rtol=1e-13)


BAD = [
    (np.zeros((3, 2)), np.full((3, 2), 2.0), ValueError,
     r"Y must hold 0/1 labels or probabilities in \[0, 1\]; got values from 2.0 to 2.0"),
    (np.zeros((3, 2)), -np.ones((3, 2)), ValueError, r"Y must hold 0/1 labels"),
    (np.zeros((3, 2)), np.array([[0, np.nan], [0, 0], [1, 1]]), ValueError, r"Y must be finite"),
    (np.array([[0, np.inf], [0, 0], [1, 1]]), np.zeros((3, 2)), ValueError,
     r"logits must be finite"),
    (np.zeros((3, 2)), np.zeros(3), ValueError,
     r"Y must have the shape of logits \(3, 2\); got shape \(3,\)"),
    (np.zeros((3, 1)), np.zeros(4), ValueError, r"\(3, 1\) or \(3,\); got shape \(4,\)"),
    (np.zeros((3, 2)), np.zeros((3, 3)), ValueError, r"got shape \(3, 3\)"),
    (np.zeros((3, 2)), np.zeros((3, 2, 1)), ValueError, r"got shape \(3, 2, 1\)"),
    (np.zeros((0, 2)), np.zeros((0, 2)), ValueError, r"logits is empty"),
    (np.zeros((3, 0)), np.zeros((3, 0)), ValueError, r"logits must have at least one column"),
    (np.zeros(3), np.zeros(3), ValueError, r"logits must be 2-D"),
    (np.zeros((3, 2)), "abc", TypeError, r"Y must be an array of real numbers"),
    (np.zeros((3, 2)).astype(complex), np.zeros((3, 2)), TypeError, r"logits must hold real"),
]


@pytest.mark.parametrize("z, Y, exc, pattern", BAD)
def test_bad_input(z, Y, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fb.sigmoid_cross_entropy(z, Y)


def test_bad_sample_weight():
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(3,\)"):
        fb.sigmoid_cross_entropy(np.zeros((3, 2)), np.zeros((3, 2)), sample_weight=[1, 2])
    with pytest.raises(ValueError, match=r"sample_weight must be non-negative"):
        fb.sigmoid_cross_entropy(np.zeros((3, 2)), np.zeros((3, 2)), sample_weight=[1, -2, 1])


# -- the model ----------------------------------------------------------------
MLP_CASES = [([5, 1], "tanh"), ([5, 4, 1], "sigmoid"), ([6, 5, 4, 3], "relu"),
             ([6, 5, 4], "tanh")]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("widths,act", MLP_CASES)
def test_mlp_gradcheck(widths, act, weighted):
    rng = np.random.default_rng(len(widths))
    n = 8
    X = rng.standard_normal((n, widths[0]))
    Y = rng.integers(0, 2, (n, widths[-1]))
    sw = rng.random(n) + 0.2 if weighted else None
    model = fb.MLP(widths, activation=act, output="sigmoid", dtype="float64", seed=7,
                   alpha=0.3)
    model.flat_params[:] += rng.standard_normal(model.n_params) * 0.1
    loss, grads = model.loss_and_grad(X, Y, sample_weight=sw)
    g = flat_grad(grads)
    rl, rg = ref_mlp(model.flat_params, widths, act, X, Y, 0.3, sw)
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    np.testing.assert_allclose(g, rg, rtol=1e-10, atol=1e-12 * np.abs(rg).max())
    num = numeric_grad(lambda: model.loss_and_grad(X, Y, sample_weight=sw)[0],
                       model.flat_params)
    assert rel_err(g, num) < 1e-6
    if widths[-1] == 1:  # 1-D labels give the same
        l1, g1 = model.loss_and_grad(X, Y[:, 0], sample_weight=sw)
        assert l1 == loss
        np.testing.assert_array_equal(flat_grad(g1), g)


def test_mlp_float32_gradient():
    widths = [6, 5, 4, 3]
    rng = np.random.default_rng(9)
    X = rng.standard_normal((16, 6)).astype(np.float32)
    Y = rng.integers(0, 2, (16, 3))
    m64 = fb.MLP(widths, activation="tanh", output="sigmoid", dtype="float64", seed=5, alpha=0.1)
    m32 = fb.MLP(widths, activation="tanh", output="sigmoid", dtype="float32", seed=5, alpha=0.1)
    m32.flat_params[:] = m64.flat_params
    m64.flat_params[:] = m32.flat_params
    l64, g64 = m64.loss_and_grad(X.astype(np.float64), Y)
    l32, g32 = m32.loss_and_grad(X, Y)
    assert all(a.dtype == np.float32 for pair in g32 for a in pair)
    np.testing.assert_allclose(l32, l64, rtol=1e-5)
    assert rel_err(flat_grad(g32), flat_grad(g64)) < 1e-4


def test_mlp_outputs_and_accuracy_definitions():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 4))
    model = fb.MLP([4, 6, 3], output="sigmoid", dtype="float64", seed=0)
    z = model.forward(X)
    P = model.predict_proba(X)
    np.testing.assert_allclose(P, expit(z), rtol=1e-14)
    labels = model.predict(X)
    assert labels.shape == (40, 3) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, (expit(z) > 0.5).astype(int))
    Y = labels.copy()
    Y[:10, 0] ^= 1  # 10 rows with one wrong label
    scores = model.evaluate(X, Y)
    assert scores["accuracy"] == 30 / 40 == model.score(X, Y)
    np.testing.assert_allclose(scores["loss"], ref_bce(z, Y)[0], rtol=1e-12)
    sw = np.r_[np.full(10, 3.0), np.ones(30)]
    scores = model.evaluate(X, Y, sample_weight=sw)
    assert scores["accuracy"] == 30 / 60
    np.testing.assert_allclose(scores["loss"], ref_bce(z, Y, sw)[0], rtol=1e-12)
    # one unit: proba (n, 2) = [1 - p, p], labels (n,)
    m1 = fb.MLP([4, 6, 1], output="sigmoid", dtype="float64", seed=0)
    p = expit(m1.forward(X)[:, 0])
    np.testing.assert_allclose(m1.predict_proba(X), np.c_[1 - p, p], rtol=1e-14)
    np.testing.assert_array_equal(m1.predict(X), (p > 0.5).astype(int))
    assert m1.predict(X).shape == (40,)
    assert "sigmoid" in repr(m1) and m1.activations[-1] == "sigmoid"


def test_mlp_bad_targets():
    X = np.zeros((5, 4))
    m = fb.MLP([4, 3, 2], output="sigmoid", seed=0)
    with pytest.raises(ValueError, match=r"y must have shape \(5, 2\) \(indicator matrix\)"):
        m.fit(X, np.array([0, 1, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"y must hold 0/1 labels or probabilities"):
        m.fit(X, np.full((5, 2), 2))
    with pytest.raises(ValueError, match=r"y must be finite"):
        m.train_on_batch(X, np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match=r"validation_data\[1\] must have shape \(3, 2\)"):
        m.fit(X, np.zeros((5, 2)), validation_data=(X[:3], np.zeros(3)))
    m1 = fb.MLP([4, 1], output="sigmoid", seed=0)
    with pytest.raises(ValueError, match=r"y must have shape \(5, 1\) or \(5,\) with 0/1"):
        m1.evaluate(X, np.zeros(4))
    with pytest.raises(ValueError, match=r"y must hold 0/1 labels"):
        m1.fit(X, np.array([0, 1, 2, 0, 1]))  # class labels belong to a softmax model


def _multilabel(seed=0):
    from sklearn.datasets import make_multilabel_classification

    X, Y = make_multilabel_classification(n_samples=1400, n_features=20, n_classes=5,
                                          n_labels=2, random_state=seed)
    X = (X - X.mean(0)) / X.std(0)
    return X[:400], Y[:400], X[400:], Y[400:]


def _binary(seed=0):
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=1400, n_features=20, n_informative=6,
                               random_state=seed)
    return X[:400], y[:400], X[400:], y[400:]


@pytest.mark.parametrize("problem", ["multilabel", "binary"])
def test_training_matches_scikit_learn_accuracy(problem):
    """Same data, architecture, optimizer and epochs as scikit-learn's
    MLPClassifier: test accuracy (exact match for multilabel) within 3
    points of its (over seeds 0-4 the mean difference was -0.6 points
    multilabel, -0.2 binary with tanh).  tanh, because fastbp initialises
    ReLU layers with He's bound, scikit-learn with Glorot's."""
    from sklearn.neural_network import MLPClassifier

    Xtr, Ytr, Xte, Yte = (_multilabel if problem == "multilabel" else _binary)()
    k = 1 if Ytr.ndim == 1 else Ytr.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = MLPClassifier(hidden_layer_sizes=(32,), activation="tanh", max_iter=100,
                           batch_size=32, random_state=0).fit(Xtr, Ytr)
    assert sk.out_activation_ == "logistic"
    model = fb.MLP([20, 32, k], activation="tanh", output="sigmoid", dtype="float64", seed=0,
                   alpha=1e-4)
    hist = model.fit(Xtr, Ytr, epochs=100, batch_size=32, optimizer=fb.Adam(lr=1e-3),
                     validation_data=(Xte, Yte))
    assert hist["loss"][-1] < hist["loss"][0] / 2
    assert set(hist) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    ours, theirs = model.score(Xte, Yte), sk.score(Xte, Yte)
    assert ours >= theirs - 0.03, (ours, theirs)
    assert hist["val_accuracy"][-1] == ours
    pred = model.predict(Xte)
    assert pred.shape == sk.predict(Xte).shape
    assert model.predict_proba(Xte).shape == sk.predict_proba(Xte).shape


def test_float32_training_and_save_load(tmp_path):
    Xtr, Ytr, Xte, _ = _multilabel(1)
    model = fb.MLP([20, 16, 5], output="sigmoid", dtype="float32", seed=0)
    model.fit(Xtr.astype(np.float32), Ytr, epochs=3, batch_size=50, optimizer="sgd")
    path = tmp_path / "m.npz"
    model.save(path, include_optimizer=True)
    back = fb.MLP.load(path)
    assert back.output == "sigmoid" and back.dtype == np.float32
    np.testing.assert_array_equal(back.predict_proba(Xte), model.predict_proba(Xte))
    np.testing.assert_array_equal(back.predict(Xte), model.predict(Xte))
    # training goes on identically
    model.fit(Xtr, Ytr, epochs=1, batch_size=50)
    back.fit(Xtr, Ytr, epochs=1, batch_size=50)
    np.testing.assert_array_equal(back.flat_params, model.flat_params)


def test_load_refuses_softmax_with_one_unit(tmp_path):
    m = fb.MLP([4, 3, 1], output="sigmoid", seed=0)
    m.save(tmp_path / "a.npz")
    arrays = dict(np.load(tmp_path / "a.npz"))
    arrays["output"] = np.array("softmax")
    np.savez(tmp_path / "b.npz", **arrays)
    with pytest.raises(ValueError, match=r"output 'softmax' needs .* at least 2 unit"):
        fb.MLP.load(tmp_path / "b.npz")


def test_divergence_is_reported():
    X = np.random.default_rng(0).standard_normal((64, 4)) * 1e3
    Y = np.random.default_rng(1).integers(0, 2, (64, 2))
    m = fb.MLP([4, 8, 2], output="sigmoid", dtype="float32", seed=0)
    with pytest.raises(fb.DivergenceError, match="non-finite"):
        m.fit(X, Y, epochs=50, batch_size=16, optimizer=fb.SGD(lr=1e30))
    assert np.isfinite(m.flat_params).all()


# -- interop with scikit-learn --------------------------------------------------
def _sk_fit(X, Y, act="tanh"):
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MLPClassifier(hidden_layer_sizes=(7, 5), activation=act, max_iter=30,
                             random_state=0).fit(X, Y)


@pytest.mark.parametrize("problem", ["binary", "multilabel"])
@pytest.mark.parametrize("act", ["tanh", "logistic"])
def test_sklearn_logistic_roundtrip_exact(problem, act):
    from fastbp.interop import from_sklearn, to_sklearn

    Xtr, Ytr, X, _ = (_multilabel if problem == "multilabel" else _binary)()
    sk = _sk_fit(Xtr, Ytr, act)
    k = 1 if problem == "binary" else Ytr.shape[1]
    assert sk.out_activation_ == "logistic" and sk.coefs_[-1].shape == (5, k)
    m = from_sklearn(sk)
    assert m.output == "sigmoid" and m.widths.tolist() == [20, 7, 5, k]
    for (W, b), Wk, bk in zip(m.params, sk.coefs_, sk.intercepts_):
        np.testing.assert_array_equal(W, Wk)
        np.testing.assert_array_equal(b, bk)
    np.testing.assert_allclose(m.predict_proba(X), sk.predict_proba(X), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(m.predict(X), sk.predict(X))
    assert m.score(X, _) == sk.score(X, _)
    back = to_sklearn(m, Xtr[:40], Ytr[:40])
    assert back.out_activation_ == "logistic" and back.n_outputs_ == k
    for Wb, Wk in zip(back.coefs_ + back.intercepts_, sk.coefs_ + sk.intercepts_):
        np.testing.assert_array_equal(Wb, Wk)
    np.testing.assert_array_equal(back.predict_proba(X), sk.predict_proba(X))


def test_to_sklearn_refuses_mismatched_targets():
    from fastbp.interop import to_sklearn

    Xtr, Ytr, _, _ = _multilabel()
    m = fb.MLP([20, 7, 5], output="sigmoid", activation="tanh", seed=0)
    with pytest.raises(ValueError, match=r"y must be a \(n, 5\) 0/1 indicator matrix"):
        to_sklearn(m, Xtr, np.argmax(Ytr, 1))  # class labels: scikit-learn builds a softmax
    m1 = fb.MLP([20, 7, 1], output="sigmoid", activation="tanh", seed=0)
    back = to_sklearn(m1, Xtr[:30], Ytr[:30, :1])  # a (n, 1) column is read as labels
    assert back.coefs_[-1].shape == (7, 1)
    np.testing.assert_array_equal(back.coefs_[-1], m1.params[-1][0])


def test_torch_roundtrip_sigmoid():
    torch = pytest.importorskip("torch")
    from fastbp.interop import from_torch, to_torch

    X = np.random.default_rng(0).standard_normal((20, 6))
    model = fb.MLP([6, 8, 3], output="sigmoid", activation="tanh", dtype="float64", seed=1)
    net = to_torch(model)
    assert isinstance(list(net)[-1], torch.nn.Linear)  # logits
    with torch.no_grad():
        p = torch.sigmoid(net(torch.from_numpy(X))).numpy()
    np.testing.assert_allclose(p, model.predict_proba(X), rtol=1e-12)
    back = from_torch(net, output="sigmoid", dtype="float64")
    assert back.output == "sigmoid"
    np.testing.assert_allclose(back.predict_proba(X), model.predict_proba(X), rtol=1e-12)
