"""fb.MLP(output="exp"): Poisson loss with a log link (scikit-learn's
MLPRegressor(loss="poisson")), against a naive NumPy reference and central
differences, plus file round trip and bad targets."""

import numpy as np
import pytest

import fastbp as fb


def naive_loss_grad(model, X, Y, sw=None):
    """Loss (L2 included) and flat gradient, written out layer by layer."""
    n = X.shape[0]
    w = np.full(n, 1.0 / n) if sw is None else sw / sw.sum()
    total = n if sw is None else sw.sum()
    hs = [X]
    layers = model.params
    for k, (W, b) in enumerate(layers):
        a = hs[-1] @ W + b
        hs.append(np.tanh(a) if k < len(layers) - 1 else a)
    mu = np.exp(hs[-1])
    tlogt = np.where(Y > 0, Y * np.log(np.where(Y > 0, Y, 1.0)), 0.0)
    loss = float(np.sum(w[:, None] * (tlogt - Y * hs[-1] - Y + mu)))
    delta = w[:, None] * (mu - Y)
    grads = []
    for k in range(len(layers) - 1, -1, -1):
        W, _ = layers[k]
        grads.append((hs[k].T @ delta + model.alpha / total * W, delta.sum(0)))
        loss += model.alpha / (2 * total) * float(np.sum(W * W))
        if k:
            delta = (delta @ W.T) * (1 - hs[k] ** 2)
    grads.reverse()
    return loss, np.concatenate([np.r_[dW.ravel(), db] for dW, db in grads])


@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_grad_against_reference_and_differences(weighted):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((15, 4))
    Y = rng.poisson(1.5, (15, 2)).astype(float)
    sw = rng.random(15) + 0.2 if weighted else None
    model = fb.MLP([4, 5, 2], activation="tanh", output="exp", dtype="float64", seed=1,
                   alpha=0.2)
    loss, grads = model.loss_and_grad(X, Y, sample_weight=sw)
    g = np.concatenate([np.r_[dW.ravel(), db] for dW, db in grads])
    rl, rg = naive_loss_grad(model, X, Y, sw)
    assert loss == pytest.approx(rl, rel=1e-12)
    np.testing.assert_allclose(g, rg, rtol=1e-10, atol=1e-13)
    p = model.flat_params
    num = np.empty_like(p)
    for i in range(p.size):
        old = p[i]
        p[i] = old + 1e-6
        hi = model.loss_and_grad(X, Y, sample_weight=sw)[0]
        p[i] = old - 1e-6
        lo = model.loss_and_grad(X, Y, sample_weight=sw)[0]
        p[i] = old
        num[i] = (hi - lo) / 2e-6
    assert np.abs(g - num).max() <= 1e-6 * np.abs(num).max()


def test_fit_predict_save_load(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3)).astype(np.float32)
    y = rng.poisson(np.exp(0.7 * X[:, 0]))
    model = fb.MLP([3, 8, 1], output="exp", seed=0)
    hist = model.fit(X, y, epochs=20, batch_size=32, optimizer=fb.Adam(lr=0.01))
    assert hist["loss"][-1] < hist["loss"][0]
    pred = model.predict(X)
    assert pred.shape == (200,) and (pred > 0).all() and pred.dtype == np.float32
    assert model.score(X, y) > 0.05  # better than the mean (Poisson noise caps R^2)
    model.save(tmp_path / "m.npz")
    back = fb.MLP.load(tmp_path / "m.npz")
    assert back.output == "exp"
    np.testing.assert_array_equal(back.predict(X), pred)


def test_negative_targets_refused():
    model = fb.MLP([3, 1], output="exp", dtype="float64")
    with pytest.raises(ValueError, match="y must be non-negative"):
        model.fit(np.zeros((4, 3)), [1.0, -1.0, 0.0, 2.0], epochs=1)


def test_sklearn_interop_round_trip():
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPRegressor

    from fastbp.interop import from_sklearn, to_sklearn

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = rng.poisson(2.0, 60)
    sk = MLPRegressor(loss="poisson", hidden_layer_sizes=(4,), max_iter=30, random_state=0)
    with pytest.warns(Warning):
        sk.fit(X, y)
    m = from_sklearn(sk)
    assert m.output == "exp"
    np.testing.assert_allclose(m.predict(X), sk.predict(X), rtol=1e-10)
    back = to_sklearn(m, X, y)
    np.testing.assert_allclose(back.predict(X), sk.predict(X), rtol=1e-10)
