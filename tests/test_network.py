"""The MLP model: learning digits, regression, sample weights, seeds,
history, continued fitting, dtypes, save/load, basic bad input, divergence."""

import numpy as np
import pytest
import reference as ref

import fastbp as fb


@pytest.fixture(scope="module")
def digits_split():
    X, y = fb.load_digits(dtype="float64")
    return fb.train_test_split(X, y, test_size=0.25, seed=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_learns_digits(digits_split, dtype):
    Xtr, Xte, ytr, yte = digits_split
    model = fb.MLP([64, 128, 10], activation="relu", dtype=dtype, seed=0)
    hist = model.fit(Xtr.astype(dtype), ytr, epochs=40, batch_size=32,
                     optimizer=fb.SGD(lr=0.05, momentum=0.9))
    acc = model.evaluate(Xte.astype(dtype), yte)["accuracy"]
    print(f"\n[digits] held-out accuracy {dtype}: {acc:.4f} "
          f"(train loss {hist['loss'][-1]:.4f})")
    assert acc >= 0.96
    assert np.mean(model.predict(Xte) == yte) == pytest.approx(acc)
    assert model.flat_params.dtype == dtype
    proba = model.predict_proba(Xte)
    assert proba.dtype == dtype and proba.shape == (len(yte), 10)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert hist["loss"][-1] < hist["loss"][0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_regression_fits_sine(dtype):
    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, (512, 1))
    y = np.sin(X[:, 0])
    model = fb.MLP([1, 32, 32, 1], activation="tanh", output="identity", dtype=dtype,
                   seed=1)
    model.fit(X, y, epochs=150, batch_size=32, optimizer=fb.Adam(lr=0.01))
    pred = model.predict(X)
    assert pred.dtype == dtype and pred.shape == (512,)
    mse = float(np.mean((pred - y) ** 2))
    print(f"\n[sine] {dtype} MSE {mse:.2e}")
    assert mse < 5e-3


def small_problem(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
    return X, y


def test_sample_weight_two_equals_none():
    X, y = small_problem()
    a = fb.MLP([5, 8, 3], dtype="float64", seed=3)
    b = fb.MLP([5, 8, 3], dtype="float64", seed=3)
    a.fit(X, y, epochs=3, batch_size=8, optimizer=fb.SGD(lr=0.1, momentum=0.9))
    b.fit(X, y, epochs=3, batch_size=8, optimizer=fb.SGD(lr=0.1, momentum=0.9),
          sample_weight=2 * np.ones(len(y)))
    np.testing.assert_allclose(a.flat_params, b.flat_params, rtol=1e-12, atol=1e-14)


def test_integer_sample_weights_are_duplication():
    X, y = small_problem(12)
    sw = np.array([1, 2, 0, 3, 1, 1, 2, 1, 1, 4, 1, 1])
    rows = np.repeat(np.arange(12), sw)
    for output, yy in (("softmax", y), ("identity", X[:, :3] ** 2)):
        m = fb.MLP([5, 6, 3], activation="sigmoid", output=output, dtype="float64", seed=2,
                   alpha=0.2)
        l1, g1 = m.loss_and_grad(X, yy, sample_weight=sw)
        l2, g2 = m.loss_and_grad(X[rows], yy[rows])
        # the L2 term is divided by the total weight, which is the repeated
        # row count: loss and gradients agree, L2 included (scikit-learn's rule)
        np.testing.assert_allclose(l1, l2, rtol=1e-12)
        for (dW1, db1), (dW2, db2) in zip(g1, g2):
            np.testing.assert_allclose(dW1, dW2, rtol=1e-10, atol=1e-14)
            np.testing.assert_allclose(db1, db2, rtol=1e-10, atol=1e-14)


def test_seeds():
    X, y = small_problem()

    def fitted(seed):
        m = fb.MLP([5, 8, 3], seed=seed)
        m.fit(X, y, epochs=2, batch_size=8)
        return m.flat_params.copy()

    np.testing.assert_array_equal(fitted(11), fitted(11))
    assert not np.array_equal(fitted(11), fitted(12))


def test_history_and_continued_fit():
    X, y = small_problem()
    Xv, yv = small_problem(20, seed=1)
    m = fb.MLP([5, 8, 3], seed=0)
    h = m.fit(X, y, epochs=3, batch_size=8, optimizer=fb.SGD(lr=0.1))
    assert set(h) == {"loss", "accuracy"} and all(len(v) == 3 for v in h.values())
    h2 = m.fit(X, y, epochs=2, batch_size=8, validation_data=(Xv, yv))
    assert set(h2) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 2 for v in h2.values())
    assert len(m.history["loss"]) == 5 and m.history["loss"][3:] == h2["loss"]
    assert m.history["val_loss"] == h2["val_loss"]
    assert h2["val_loss"][-1] == pytest.approx(m.evaluate(Xv, yv)["loss"])
    assert 0 <= h2["val_accuracy"][-1] <= 1
    hr = fb.MLP([5, 4, 1], output="identity", seed=0).fit(X, X[:, 0], epochs=2,
                                                           validation_data=(Xv, Xv[:, 0]))
    assert set(hr) == {"loss", "val_loss"}


def test_fit_continues_optimizer_state():
    """fit(3 epochs) + fit(2 epochs) == fit(5 epochs) (no shuffling), which
    needs the momentum buffers to carry over."""
    X, y = small_problem()
    a = fb.MLP([5, 8, 3], dtype="float64", seed=0)
    a.fit(X, y, epochs=5, batch_size=8, shuffle=False, optimizer=fb.SGD(lr=0.1, momentum=0.9))
    b = fb.MLP([5, 8, 3], dtype="float64", seed=0)
    b.fit(X, y, epochs=3, batch_size=8, shuffle=False, optimizer=fb.SGD(lr=0.1, momentum=0.9))
    b.fit(X, y, epochs=2, batch_size=8, shuffle=False)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    c = fb.MLP([5, 8, 3], dtype="float64", seed=0)
    c.fit(X, y, epochs=3, batch_size=8, shuffle=False, optimizer=fb.SGD(lr=0.1, momentum=0.9))
    c.fit(X, y, epochs=2, batch_size=8, shuffle=False, optimizer=fb.SGD(lr=0.1, momentum=0.9))
    assert not np.array_equal(a.flat_params, c.flat_params)  # fresh momentum differs


def test_one_epoch_full_batch_matches_reference():
    """One full-batch SGD step of fit equals the reference gradient step."""
    X, y = small_problem(16)
    m = fb.MLP([5, 6, 4, 3], activation="tanh", dtype="float64", seed=4, alpha=0.05)
    p0 = m.flat_params.copy()
    m.fit(X, y, epochs=1, batch_size=16, shuffle=False, optimizer=fb.SGD(lr=0.2))
    _, g = ref.mlp_loss_grad(p0, [5, 6, 4, 3], "tanh", "softmax", X, y, 0.05)
    np.testing.assert_allclose(m.flat_params, p0 - 0.2 * g, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtypes_of_model(dtype):
    X, y = small_problem()
    m = fb.MLP([5, 8, 3], dtype=dtype, seed=0)
    assert all(W.dtype == dtype and b.dtype == dtype for W, b in m.params)
    assert m.forward(X).dtype == dtype and m.predict_proba(X).dtype == dtype
    _, grads = m.loss_and_grad(X, y)
    assert all(a.dtype == dtype for pair in grads for a in pair)
    assert np.shares_memory(m.params[1][1], m.flat_params)
    m.params[0][1][0] = 1.5  # views: writes reach the model
    assert m.flat_params[5 * 8] == 1.5


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_round_trip(tmp_path, dtype):
    X, y = small_problem()
    m = fb.MLP([5, 7, 4, 3], activation=["tanh", "relu"], dtype=dtype, seed=0, alpha=0.01)
    m.fit(X, y, epochs=2, batch_size=8, validation_data=(X, y))
    path = tmp_path / "model.npz"
    m.save(path)
    m2 = fb.MLP.load(path)
    np.testing.assert_array_equal(m2.flat_params, m.flat_params)
    assert m2.flat_params.dtype == dtype
    assert list(m2.widths) == [5, 7, 4, 3]
    assert m2.activations == m.activations == ["tanh", "relu", "softmax"]
    assert m2.output == "softmax"
    assert m2.history == m.history
    np.testing.assert_array_equal(m2.predict_proba(X), m.predict_proba(X))
    r = fb.MLP([5, 3, 2], output="identity", dtype=dtype, seed=0)
    r.save(tmp_path / "reg.npz")
    r2 = fb.MLP.load(tmp_path / "reg.npz")
    assert r2.output == "identity"
    np.testing.assert_array_equal(r2.predict(X), r.predict(X))


def test_bad_input_names_the_argument():
    X, y = small_problem()
    m = fb.MLP([5, 8, 3], seed=0)
    with pytest.raises(ValueError, match="X"):
        m.fit(X[:, :4], y, epochs=1)
    with pytest.raises(ValueError, match="y"):
        m.fit(X, y + 5, epochs=1)
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="X"):
        m.fit(Xn, y, epochs=1)
    with pytest.raises(ValueError, match="X"):
        m.predict(X[:0])
    with pytest.raises(ValueError, match="activation|swish"):
        fb.MLP([5, 8, 3], activation="swish")
    with pytest.raises(ValueError, match="y"):
        m.loss_and_grad(X, y[:-1])


def test_divergence_keeps_last_finite_params():
    X, y = small_problem(64)
    X = X * 1e4
    m = fb.MLP([5, 16, 3], dtype="float32", seed=0)
    with pytest.raises(fb.DivergenceError, match=r"epoch \d+.*step \d+") as info:
        m.fit(X, y, epochs=20, batch_size=8, optimizer=fb.SGD(lr=1e30))
    assert info.value.epoch >= 1 and info.value.step >= 1
    assert np.all(np.isfinite(m.flat_params))
