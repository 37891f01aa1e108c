"""Sparse (scipy.sparse CSR) input: the first-layer kernels against NumPy,
fb.MLP on CSR X against the same MLP on the densified array, central finite
differences, bad sparse input, and that X is never densified."""

import numpy as np
import pytest
import scipy.sparse as sp
from test_threads import MID_EPOCH_FAILURES, _fit_against_train_on_batch

import fastbp as fb
from fastbp._kernels import sparse as ks


def _csr(n, d, density, seed, dtype=np.float64):
    X = sp.random(n, d, density=density, format="csr", random_state=seed, dtype=np.float64)
    X.data = np.random.default_rng(seed).standard_normal(X.nnz)
    return X.astype(dtype)


def _messy_csr(rng, n, d):
    """CSR parts with unsorted columns, duplicates and empty rows, and the
    dense matrix they stand for (duplicates summed)."""
    dense = np.zeros((n, d))
    data, indices, indptr = [], [], [0]
    for r in range(n):
        k = int(rng.integers(0, 6)) if r % 4 else 0  # every 4th row empty
        cols = rng.integers(0, d, k)
        vals = rng.standard_normal(k)
        for c, val in zip(cols, vals):
            dense[r, c] += val
        data.extend(vals)
        indices.extend(cols)
        indptr.append(len(data))
    return (np.array(data), np.array(indices, np.int64), np.array(indptr, np.int64)), dense


# -- kernels against NumPy ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_csr_kernels_match_numpy(dtype):
    rng = np.random.default_rng(0)
    (data, indices, indptr), dense = _messy_csr(rng, 13, 9)
    data = data.astype(dtype)
    dense = dense.astype(dtype).astype(np.float64)
    W = rng.standard_normal((9, 5)).astype(dtype)
    out = np.full((13, 5), np.nan, dtype)
    ks.csr_matmul(data, indices, indptr, W, out)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out, dense @ W, rtol=tol, atol=tol)
    # a row slice of indptr (not starting at 0) addresses rows in place
    part = np.full((5, 5), np.nan, dtype)
    ks.csr_matmul(data, indices, indptr[4:10], W, part)
    np.testing.assert_allclose(part, dense[4:9] @ W, rtol=tol, atol=tol)

    da = rng.standard_normal((13, 5)).astype(dtype)
    dW = np.full((9, 5), np.nan, dtype)
    acc = np.empty(5, dtype)
    ss = ks.csr_weight_grad(data, indices, indptr, da, W, dtype(0), dW, acc)
    assert ss == 0
    np.testing.assert_allclose(dW, dense.T @ da, rtol=tol, atol=tol)
    reg = dtype(0.3)
    ss = ks.csr_weight_grad(data, indices, indptr, da, W, reg, dW, acc)
    np.testing.assert_allclose(dW, dense.T @ da + 0.3 * W.astype(np.float64), rtol=tol,
                               atol=tol)
    np.testing.assert_allclose(ss, np.sum(W.astype(np.float64) ** 2), rtol=tol)
    assert dW.dtype == dtype and out.dtype == dtype


def test_gather_rows_builds_the_batch():
    rng = np.random.default_rng(1)
    (data, indices, indptr), dense = _messy_csr(rng, 10, 7)
    rows = np.array([7, 0, 4, 4, 9])
    bdata = np.empty(data.size * 2)
    bind = np.empty(data.size * 2, np.int64)
    bptr = np.empty(rows.size + 1, np.int64)
    nnz = ks.gather_rows(data, indices, indptr, rows, bdata, bind, bptr)
    assert nnz == bptr[-1] == np.diff(indptr)[rows].sum()
    batch = sp.csr_matrix((bdata[:nnz], bind[:nnz], bptr), shape=(rows.size, 7))
    np.testing.assert_allclose(batch.toarray(), dense[rows], atol=1e-15)


# -- fb.MLP on CSR against fb.MLP on the dense array -----------------------------


def _pair(widths, **kw):
    return fb.MLP(widths, seed=3, **kw), fb.MLP(widths, seed=3, **kw)


@pytest.mark.parametrize("hidden", [[], [8], [8, 6], [7, 6, 5]])
def test_mlp_sparse_equals_dense_float64(hidden):
    X = _csr(150, 40, 0.1, 0)
    Xd = X.toarray()
    y = np.random.default_rng(1).integers(0, 4, 150)
    sw = np.random.default_rng(2).uniform(0.5, 2, 150)
    widths = [40, *hidden, 4]
    ms, md = _pair(widths, activation="tanh", dtype="float64", alpha=0.05)

    ls, gs = ms.loss_and_grad(X, y, sample_weight=sw)
    ld, gd = md.loss_and_grad(Xd, y, sample_weight=sw)
    assert ls == pytest.approx(ld, rel=1e-14)
    for (a, b), (c, d) in zip(gs, gd):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(b, d, rtol=1e-12, atol=1e-15)

    hs = ms.fit(X, y, epochs=3, batch_size=16, optimizer=fb.Adam(lr=0.01), sample_weight=sw,
                validation_data=(X, y))
    hd = md.fit(Xd, y, epochs=3, batch_size=16, optimizer=fb.Adam(lr=0.01), sample_weight=sw,
                validation_data=(Xd, y))
    np.testing.assert_allclose(ms.flat_params, md.flat_params, rtol=1e-11, atol=1e-13)
    for k in hd:
        np.testing.assert_allclose(hs[k], hd[k], rtol=1e-11)
    np.testing.assert_allclose(ms.predict_proba(X), md.predict_proba(Xd), rtol=1e-11,
                               atol=1e-14)
    np.testing.assert_array_equal(ms.predict(X), md.predict(Xd))
    assert ms.evaluate(X, y)["loss"] == pytest.approx(md.evaluate(Xd, y)["loss"], rel=1e-12)
    assert ms.score(X, y) == md.score(Xd, y)
    ts = ms.train_on_batch(X[:40], y[:40], optimizer=fb.SGD(lr=0.1, momentum=0.9))
    td = md.train_on_batch(Xd[:40], y[:40], optimizer=fb.SGD(lr=0.1, momentum=0.9))
    assert ts == pytest.approx(td, rel=1e-13)
    np.testing.assert_allclose(ms.flat_params, md.flat_params, rtol=1e-11, atol=1e-13)


def test_mlp_sparse_regression_and_target_rows():
    X = _csr(120, 30, 0.15, 4)
    Xd = X.toarray()
    rng = np.random.default_rng(5)
    Y = rng.standard_normal((120, 2))
    ms, md = _pair([30, 10, 2], activation="relu", output="identity", dtype="float64")
    ms.fit(X, Y, epochs=2, batch_size=25, optimizer=fb.SGD(lr=0.05))
    md.fit(Xd, Y, epochs=2, batch_size=25, optimizer=fb.SGD(lr=0.05))
    np.testing.assert_allclose(ms.flat_params, md.flat_params, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(ms.predict(X), md.predict(Xd), rtol=1e-11, atol=1e-13)
    assert ms.score(X, Y) == pytest.approx(md.score(Xd, Y), rel=1e-12)
    T = rng.dirichlet(np.ones(3), 120)
    cs, cd = _pair([30, 10, 3], activation="sigmoid", dtype="float64")
    cs.fit(X, T, epochs=2, batch_size=25)
    cd.fit(Xd, T, epochs=2, batch_size=25)
    np.testing.assert_allclose(cs.flat_params, cd.flat_params, rtol=1e-11, atol=1e-13)


def test_mlp_sparse_float32():
    X = _csr(200, 60, 0.05, 6, np.float32)
    y = np.random.default_rng(7).integers(0, 3, 200)
    ms, md = _pair([60, 16, 3], activation="relu", dtype="float32", alpha=1e-3)
    ms.fit(X, y, epochs=2, batch_size=32)
    md.fit(X.toarray(), y, epochs=2, batch_size=32)
    assert ms.flat_params.dtype == np.float32
    np.testing.assert_allclose(ms.flat_params, md.flat_params, rtol=1e-4, atol=1e-5)
    p = ms.predict_proba(X)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, md.predict_proba(X.toarray()), rtol=1e-4, atol=1e-5)


def test_sparse_forward_in_chunks(monkeypatch):
    from fastbp import network
    monkeypatch.setattr(network, "_PREDICT_CHUNK", 7)
    X = _csr(30, 12, 0.3, 8)
    m = fb.MLP([12, 5, 3], dtype="float64", seed=0)
    np.testing.assert_allclose(m.forward(X), m.forward(X.toarray()), rtol=1e-13, atol=1e-15)


def test_sparse_first_layer_finite_differences():
    X = _csr(20, 15, 0.2, 9)
    y = np.random.default_rng(10).integers(0, 3, 20)
    m = fb.MLP([15, 6, 3], activation="tanh", dtype="float64", seed=1, alpha=0.1)
    _, grads = m.loss_and_grad(X, y)
    flat = m.flat_params
    g = np.concatenate([np.concatenate([W.ravel(), b]) for W, b in grads])
    # every first-layer weight and bias, touched by X or not, and a few more
    idx = list(range(15 * 6 + 6)) + [100, 110, 116]
    h = 1e-6
    for i in idx:
        keep = flat[i]
        flat[i] = keep + h
        up = m.loss_and_grad(X, y)[0]
        flat[i] = keep - h
        down = m.loss_and_grad(X, y)[0]
        flat[i] = keep
        assert (up - down) / (2 * h) == pytest.approx(g[i], rel=1e-6, abs=1e-9), i


# -- bad input and formats ---------------------------------------------------------


@pytest.fixture(scope="module")
def model64():
    return fb.MLP([6, 4, 3], dtype="float64", seed=0)


def _base():
    return sp.csr_matrix(np.array([[1.0, 0, 2, 0, 0, 0], [0, 0, 0, 3, 0, 0],
                                   [0, 4, 0, 0, 0, 5]]))


def _crafted(attr, value):
    X = _base()
    getattr(X, attr)[...] = value
    return X


BAD = [
    ("nan in data", lambda: _crafted("data", [1, np.nan, 3, 4, 5]), ValueError,
     "X must be finite; got nan at row 0, column 2"),
    ("inf in data", lambda: _crafted("data", [1, 2, 3, np.inf, 5]), ValueError,
     "row 2, column 1"),
    ("index too large", lambda: _crafted("indices", [0, 2, 3, 1, 6]), ValueError,
     "column indices must lie in [0, 5]"),
    ("negative index", lambda: _crafted("indices", [0, -1, 3, 1, 5]), ValueError,
     "column indices must lie in [0, 5]"),
    ("huge index", lambda: _crafted("indices", [0, 2, 3, 1, 2**30]), ValueError,
     "malformed CSR"),
    ("indptr falls", lambda: _crafted("indptr", [0, 3, 2, 5]), ValueError,
     "indptr must be non-decreasing"),
    ("indptr not from 0", lambda: _crafted("indptr", [1, 2, 3, 5]), ValueError,
     "indptr must start at 0"),
    ("indptr past the end", lambda: _crafted("indptr", [0, 2, 3, 9]), ValueError,
     "indptr ends at 9"),
    ("wrong width", lambda: sp.csr_matrix(np.ones((3, 5))), ValueError,
     "X must have 6 columns (widths[0]); got sparse shape (3, 5)"),
    ("no rows", lambda: sp.csr_matrix((0, 6)), ValueError, "X is empty"),
    ("complex data", lambda: _base().astype(np.complex128), TypeError,
     "X.data must hold real numbers"),
    ("too large for float32", lambda: _crafted("data", [1, 2, 1e300, 4, 5]), ValueError,
     "too large for float32"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_sparse_input(case):
    _, make, err, msg = case
    m = fb.MLP([6, 4, 3], dtype="float32" if "float32" in msg else "float64", seed=0)
    X = make()
    y = np.zeros(X.shape[0], np.int64)
    for call in (lambda: m.fit(X, y, epochs=1), lambda: m.predict(X),
                 lambda: m.loss_and_grad(X, y), lambda: m.train_on_batch(X, y),
                 lambda: m.evaluate(X, y)):
        with pytest.raises(err) as info:
            call()
        assert msg in str(info.value)


def test_bad_compressed_other_formats(model64):
    X = sp.csc_matrix(_base())
    X.indices[0] = 7  # a row index past the 3 rows
    with pytest.raises(ValueError, match="malformed CSC matrix: row indices"):
        model64.predict(X)
    C = sp.coo_matrix(_base())
    C.col[0] = 6
    with pytest.raises(ValueError, match="malformed COO matrix: column indices"):
        model64.predict(C)


FORMATS = ["csr_array", "csc_matrix", "csc_array", "coo_matrix", "coo_array", "lil_matrix",
           "dok_matrix", "bsr_matrix", "dia_matrix"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_other_formats_are_converted(model64, fmt):
    X = _base()
    Y = getattr(sp, fmt)(X)
    np.testing.assert_allclose(model64.forward(Y), model64.forward(X.toarray()),
                               rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.float32])
def test_integer_and_bool_data_are_converted(model64, dtype):
    X = _base().astype(dtype)
    want = model64.forward(X.toarray().astype(np.float64))
    np.testing.assert_allclose(model64.forward(X), want, rtol=1e-14)


def test_duplicates_summed_and_unsorted_fine_without_touching_input(model64):
    rng = np.random.default_rng(11)
    (data, indices, indptr), dense = _messy_csr(rng, 12, 6)
    X = sp.csr_matrix((data.copy(), indices.copy(), indptr.copy()), shape=(12, 6))
    assert not X.has_canonical_format
    y = rng.integers(0, 3, 12)
    np.testing.assert_allclose(model64.forward(X), model64.forward(dense), rtol=1e-13,
                               atol=1e-15)
    ls, gs = model64.loss_and_grad(X, y)
    ld, gd = model64.loss_and_grad(dense, y)
    assert ls == pytest.approx(ld, rel=1e-13)
    np.testing.assert_allclose(gs[0][0], gd[0][0], rtol=1e-12, atol=1e-15)
    # the caller's matrix is unchanged
    np.testing.assert_array_equal(X.data, data)
    np.testing.assert_array_equal(X.indices, indices)
    np.testing.assert_array_equal(X.indptr, indptr)


# -- never densified ----------------------------------------------------------------


def test_never_densified(monkeypatch):
    def refuse(self, *a, **k):
        raise AssertionError("sparse X was densified")

    classes = [getattr(sp, f"{f}_{kind}") for f in ("csr", "csc", "coo")
               for kind in ("matrix", "array")]
    for cls in classes:
        for meth in ("toarray", "todense", "__array__"):
            monkeypatch.setattr(cls, meth, refuse, raising=False)
    X = _csr(60, 20, 0.2, 12)
    y = np.random.default_rng(13).integers(0, 3, 60)
    m = fb.MLP([20, 5, 3], dtype="float64", seed=0)
    for Z in (X, sp.csc_matrix(X), sp.csr_array(X)):
        m.fit(Z, y, epochs=1, batch_size=16, validation_data=(Z, y))
        m.train_on_batch(Z, y)
        m.loss_and_grad(Z, y)
        m.predict(Z)
        m.predict_proba(Z)
        m.evaluate(Z, y)
        m.score(Z, y)


def test_huge_width_trains_without_dense_copy():
    # dense X would be 100_000 x 400_000 float64 = 320 GB
    n, d = 100_000, 400_000
    rng = np.random.default_rng(14)
    X = sp.csr_matrix((rng.uniform(0.5, 1.5, n), rng.integers(0, d, n), np.arange(n + 1)),
                      shape=(n, d))
    y = rng.integers(0, 2, n)
    m = fb.MLP([d, 2, 2], dtype="float64", seed=0)
    hist = m.fit(X, y, epochs=1, batch_size=20_000)
    assert np.isfinite(hist["loss"][0])
    assert m.predict(X[:1000]).shape == (1000,)


def test_sparse_divergence_keeps_last_finite_params():
    X = _csr(64, 10, 0.3, 15) * 1e4
    y = np.random.default_rng(16).integers(0, 3, 64)
    m = fb.MLP([10, 16, 3], dtype="float64", seed=0)
    with pytest.raises(fb.DivergenceError, match=r"epoch \d+.*step \d+") as info:
        m.fit(X, y, epochs=20, batch_size=8, optimizer=fb.SGD(lr=1e100))
    assert info.value.epoch >= 1 and info.value.step >= 1
    assert np.all(np.isfinite(m.flat_params))
    before = m.flat_params.copy()
    with pytest.raises(fb.DivergenceError):
        m.train_on_batch(X * 1e150, y)
    np.testing.assert_array_equal(m.flat_params, before)


def test_sparse_train_dense_validation_and_back():
    X = _csr(80, 12, 0.3, 17)
    y = np.random.default_rng(18).integers(0, 3, 80)
    m = fb.MLP([12, 6, 3], dtype="float64", seed=0)
    h = m.fit(X, y, epochs=2, batch_size=16, validation_data=(X.toarray(), y))
    assert len(h["val_loss"]) == 2
    m.fit(X.toarray(), y, epochs=1, batch_size=16, validation_data=(X, y))
    assert len(m.history["val_loss"]) == 3


def test_matrix_with_no_stored_entries():
    X = sp.csr_matrix((5, 6))
    y = np.array([0, 1, 2, 0, 1])
    ms, md = _pair([6, 4, 3], dtype="float64")
    hs = ms.fit(X, y, epochs=2, batch_size=2)
    hd = md.fit(X.toarray(), y, epochs=2, batch_size=2)
    np.testing.assert_array_equal(ms.flat_params, md.flat_params)
    np.testing.assert_array_equal(hs["loss"], hd["loss"])
    np.testing.assert_array_equal(ms.predict(X), md.predict(X.toarray()))


def test_mlp_sparse_sigmoid_output():
    X = _csr(90, 20, 0.2, 19)
    Y = (np.random.default_rng(20).uniform(size=(90, 3)) < 0.4).astype(np.float64)
    ms, md = _pair([20, 7, 3], activation="tanh", output="sigmoid", dtype="float64",
                   alpha=0.01)
    ls, gs = ms.loss_and_grad(X, Y)
    ld, gd = md.loss_and_grad(X.toarray(), Y)
    assert ls == pytest.approx(ld, rel=1e-13)
    np.testing.assert_allclose(gs[0][0], gd[0][0], rtol=1e-12, atol=1e-15)
    ms.fit(X, Y, epochs=2, batch_size=16)
    md.fit(X.toarray(), Y, epochs=2, batch_size=16)
    np.testing.assert_allclose(ms.flat_params, md.flat_params, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(ms.predict_proba(X), md.predict_proba(X.toarray()),
                               rtol=1e-11, atol=1e-14)
    np.testing.assert_array_equal(ms.predict(X), md.predict(X.toarray()))


@pytest.mark.parametrize("good_steps", [1, 2, 3])
@pytest.mark.parametrize("adam", [False, True])
def test_sparse_divergence_mid_epoch_keeps_the_last_good_step(good_steps, adam):
    """After a step whose loss diverges, the parameters and optimizer state
    are those of the last good step, bit for bit as a fit over the good
    batches alone (an epoch of 6 steps: in place after a copy; the copy
    restored and the good steps replayed)."""
    bs = 8
    X = _csr(48, 10, 0.3, 21)
    y = np.random.default_rng(22).standard_normal((48, 2))
    y[good_steps * bs + 2, 1] = 1e300  # the loss of batch good_steps + 1 overflows

    def opt():
        return fb.Adam(lr=1e-2) if adam else fb.SGD(lr=0.1, momentum=0.9)

    m, ref = _pair([10, 7, 2], dtype="float64", output="identity")
    o, o_ref = opt(), opt()
    with pytest.raises(fb.DivergenceError) as info:
        m.fit(X, y, epochs=1, batch_size=bs, optimizer=o, shuffle=False)
    assert info.value.step == good_steps + 1
    ref.fit(X[:good_steps * bs], y[:good_steps * bs], epochs=1, batch_size=bs,
            optimizer=o_ref, shuffle=False)
    np.testing.assert_array_equal(m.flat_params, ref.flat_params)
    for a, b in zip(o.state_, o_ref.state_):
        np.testing.assert_array_equal(a, b)
    assert o.step_ == o_ref.step_ == good_steps


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows", [24, 160])
@pytest.mark.parametrize(("widths", "make_opt", "what"), MID_EPOCH_FAILURES)
def test_a_failed_update_of_a_sparse_epoch_leaves_the_steps_before_it(widths, make_opt, what,
                                                                      rows, threads,
                                                                      monkeypatch):
    """The sparse epoch updates in place as the dense one does (a copy and
    a replay from 4 steps a call, the old values kept by each step below):
    where an update (or, with a hidden layer, the loss) fails, the model
    must be bit for bit where one train_on_batch per batch leaves it.  The
    update fails at step 19 and the loss at step 11 (MID_EPOCH_FAILURES):
    with 24 rows (3 steps) the growing weights are made to fail at step 2.
    On 2 threads the update is split between them, even this small one."""
    monkeypatch.setattr(fb._threads, "SPARSE_SPLIT_MIN_PARAMS", 0)
    X = _csr(rows, 40, 0.2, 31, np.float32)
    y = np.random.default_rng(32).integers(0, 3, rows)

    def model():
        m = fb.MLP(widths, dtype="float32", seed=0)
        if rows < 64:
            m.flat_params[:] *= np.float32(99.0**17)  # the second step overflows
        m.optimizer = make_opt()
        return m

    if rows < 64 and len(widths) > 2:
        what = "loss|update"
    _fit_against_train_on_batch(model, X, y, what, threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_an_l2_term_that_overflows_after_the_update_undoes_it(threads, monkeypatch):
    """Weights that grow 99-fold a step make the L2 term of the loss
    overflow while the update is still finite.  On two threads the sparse
    step finds it after its update (first_layer_rows), which must then be
    undone as a failed update is: the model must be where one
    train_on_batch per batch leaves it, bit for bit."""
    monkeypatch.setattr(fb._threads, "SPARSE_SPLIT_MIN_PARAMS", 0)
    X = _csr(160, 40, 0.2, 31, np.float32)
    y = np.random.default_rng(32).integers(0, 3, 160)

    def model():
        m = fb.MLP([40, 3], dtype="float32", seed=0, alpha=1.0)
        m.optimizer = fb.SGD(lr=0.01, momentum=0.5, weight_decay=1e4)
        return m

    assert _fit_against_train_on_batch(model, X, y, "loss", threads) > 3


@pytest.mark.parametrize("adam", [False, True])
def test_sparse_fit_is_the_same_on_one_and_two_threads(adam, monkeypatch):
    """The sparse step's update split between two threads
    (_threads.sparse_threads) computes each element as one thread does:
    the same parameters and state, bit for bit (the rule takes the split
    on two threads: asserted)."""
    import numba

    monkeypatch.setattr(fb._threads, "SPARSE_SPLIT_MIN_PARAMS", 0)
    X = _csr(96, 300, 0.05, 41, np.float32)
    y = np.random.default_rng(42).integers(0, 4, 96)
    got = []
    old = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            m = fb.MLP([300, 24, 4], dtype="float32", seed=0, alpha=1e-3)
            m.fit(X, y, epochs=2, batch_size=16, shuffle=True,
                  optimizer=fb.Adam(lr=1e-2) if adam else fb.SGD(lr=0.1, momentum=0.9))
            m.train_on_batch(X[:16], y[:16])
            got.append((m.flat_params.copy(), [a.copy() for a in m.optimizer.state_]))
            assert m._sparse_threads(16)[0] == threads
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(got[0][0], got[1][0])
    for a, b in zip(got[0][1], got[1][1], strict=True):
        np.testing.assert_array_equal(a, b)
