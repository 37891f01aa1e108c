"""The training step on several threads (issue 16): each layer split into
column blocks, one single-threaded BLAS call per thread, the update fused
into the backward pass.  It must compute the one-thread step (within float
rounding: the blocks' products and L2 sums may round differently), be
bit-for-bit repeatable for a given thread count, keep every divergence rule,
and leave NumPy's BLAS threads as the user set them."""

import numba
import numpy as np
import pytest

import fastbp as fb
from fastbp._threads import BLAS_SINGLE

pytestmark = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                                reason="needs a Numba thread pool of 2 or more")


#: the rule's constant as shipped (the fixture below lifts it for every test)
SHIPPED_SPLIT_MAX_PACKED = fb._threads.SPLIT_MAX_PACKED


@pytest.fixture(autouse=True)
def _always_split(monkeypatch):
    # these networks are small enough that the step would run on one thread
    monkeypatch.setattr(fb._threads, "PARALLEL_MIN_FLOPS", 0)
    # and their updates too small against their batches' packing for a split
    monkeypatch.setattr(fb._threads, "SPLIT_MAX_PACKED", (float("inf"), float("inf")))

# widths whose blocks are uneven (not multiples of 16) and wide enough that
# the forward products are split too (>= 32 columns per thread)
CASES = [
    ([37, 83, 70, 5], "relu", "float32", fb.SGD(lr=0.05, momentum=0.9), 0.0),
    ([37, 83, 70, 5], "tanh", "float64", fb.Adam(lr=1e-2), 1e-2),
    ([20, 130, 1], "sigmoid", "float64", fb.SGD(lr=0.1, nesterov=True, momentum=0.5), 1e-3),
    ([64, 300, 10], "relu", "float32", fb.SGD(lr=0.01), 1e-4),
]


def _train(widths, activation, dtype, opt, alpha, threads, steps=5, batch=23):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch * steps, widths[0]))
    output = "identity" if widths[-1] == 1 else "softmax"
    y = (rng.standard_normal((batch * steps, 1)) if output == "identity"
         else rng.integers(0, widths[-1], batch * steps))
    model = fb.MLP(widths, activation=activation, output=output, dtype=dtype, seed=3,
                   alpha=alpha)
    opt = type(opt)(**{k: getattr(opt, k) for k in opt._fields})
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        hist = model.fit(X, y, epochs=2, batch_size=batch, optimizer=opt, shuffle=True)
        loss = model.train_on_batch(X[:batch], y[:batch])
    finally:
        numba.set_num_threads(old)
    return model.flat_params.copy(), np.asarray(opt.state_).copy(), hist["loss"], loss


@pytest.mark.parametrize(("widths", "activation", "dtype", "opt", "alpha"), CASES)
def test_two_threads_compute_the_one_thread_step(widths, activation, dtype, opt, alpha):
    p1, s1, h1, l1 = _train(widths, activation, dtype, opt, alpha, 1)
    p2, s2, h2, l2 = _train(widths, activation, dtype, opt, alpha, 2)
    rtol, atol = (2e-4, 1e-5) if dtype == "float32" else (1e-10, 1e-12)
    np.testing.assert_allclose(p2, p1, rtol=rtol, atol=atol)
    np.testing.assert_allclose(s2, s1, rtol=rtol, atol=atol)
    np.testing.assert_allclose(h2, h1, rtol=rtol)
    np.testing.assert_allclose(l2, l1, rtol=rtol)


@pytest.mark.parametrize(("widths", "activation", "dtype", "opt", "alpha"), CASES[:2])
def test_two_threads_are_repeatable_bit_for_bit(widths, activation, dtype, opt, alpha):
    a = _train(widths, activation, dtype, opt, alpha, 2)
    b = _train(widths, activation, dtype, opt, alpha, 2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("threads", [1, 2])
def test_divergence_on_threads_leaves_the_last_good_step(threads):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 40)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = fb.MLP([40, 96, 3], dtype="float32", seed=0)
    opt = fb.Adam(lr=1e-3)
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        model.fit(X, y, epochs=1, batch_size=16, optimizer=opt)

        def state():
            return model.flat_params.copy(), np.asarray(opt.state_).copy(), opt.step_

        before = state()
        opt.lr = 3.3e38  # Adam's bias-corrected step overflows float32: a bad update
        with pytest.raises(fb.DivergenceError, match="update"):
            model.fit(X, y, epochs=1, batch_size=16)
        after = state()
        opt.lr = 1e-3
        model.params[1][0][:] *= np.float32(1e37)  # huge logits: the step diverges
        before_loss = state()
        with pytest.raises(fb.DivergenceError, match="diverged"):
            model.fit(X, y, epochs=1, batch_size=16)
        after_loss = state()
    finally:
        numba.set_num_threads(old)
    for got, want in ((after, before), (after_loss, before_loss)):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert got[2] == want[2]
    assert np.isfinite(before_loss[0]).all()


def test_small_steps_stay_on_one_thread(monkeypatch):
    monkeypatch.setattr(fb._threads, "PARALLEL_MIN_FLOPS", 2e6)
    numba.set_num_threads(2)
    assert fb._threads.step_threads(3e6)[0] == 1
    assert fb._threads.step_threads(5e6)[0] == 2


def test_large_batches_leave_the_products_to_blas_threads(monkeypatch):
    """A split step's threads each pack their whole h and dA for OpenBLAS;
    past SPLIT_MAX_PACKED times the parameters (nt = 2 at 784-256-128-10:
    180 rows with SGD, 360 with Adam, whose update costs more) the step runs
    on one thread with OpenBLAS's own threads (no guard), as measured
    faster (docs/performance.md)."""
    from fastbp._kernels.optim import ADAM, SGD
    from fastbp._threads import NO_GUARD, step_threads

    monkeypatch.setattr(fb._threads, "PARALLEL_MIN_FLOPS", 2e6)
    monkeypatch.setattr(fb._threads, "SPLIT_MAX_PACKED", SHIPPED_SPLIT_MAX_PACKED)
    model = fb.MLP([784, 256, 128, 10], dtype="float32", seed=0)
    ws = model._workspace(256, "X")
    assert ws["pack_per_row"] == (784 + 512) + (256 + 256) + (128 + 20)
    params = model.n_params
    old = numba.get_num_threads()
    numba.set_num_threads(2)
    assert fb.SGD().kind == SGD and fb.Adam().kind == ADAM
    try:
        for kind, last_split in ((SGD, 180), (ADAM, 360)):
            for m in (64, 128, last_split, last_split + 1, 512):
                want = 2 if m <= last_split else 1
                nt, guard = step_threads(m * ws["flops_per_row"], m * ws["pack_per_row"],
                                         params, kind)
                assert nt == want, (kind, m)
                assert (guard is NO_GUARD) == (want == 1)
    finally:
        numba.set_num_threads(old)


def test_blas_threads_are_restored():
    from threadpoolctl import threadpool_info

    def numpy_blas_threads():
        return [p["num_threads"] for p in threadpool_info()
                if p["internal_api"] == "openblas" and "scipy_openblas64_" in p["filepath"]]

    before = numpy_blas_threads()
    X = np.random.default_rng(0).standard_normal((64, 80))
    model = fb.MLP([80, 96, 4], dtype="float64", seed=0)
    model.fit(X, np.arange(64) % 4, epochs=1, batch_size=16)
    with BLAS_SINGLE:
        with BLAS_SINGLE:  # nested (fits in several Python threads)
            if BLAS_SINGLE._get is not None:
                assert BLAS_SINGLE._get() == 1
        if BLAS_SINGLE._get is not None:
            assert BLAS_SINGLE._get() == 1
    assert numpy_blas_threads() == before


# an update that grows 99-fold a step (weight decay 1e4 at lr 0.01): the
# output layer alone overflows its update at step 19; with a hidden layer
# the loss overflows first (step 11)
MID_EPOCH_FAILURES = [
    ([40, 3], lambda: fb.SGD(lr=0.01, weight_decay=1e4), "update"),
    ([40, 3], lambda: fb.SGD(lr=0.01, momentum=0.5, weight_decay=1e4), "update"),
    ([40, 64, 3], lambda: fb.SGD(lr=0.01, momentum=0.5, weight_decay=1e4), "loss"),
    ([40, 64, 3], lambda: fb.Adam(lr=1e-3, weight_decay=1e36), "update"),
]


def _fit_against_train_on_batch(make_model, X, y, what, threads):
    """Fit one epoch of batches of 8 (in order) with ``make_model()`` until
    a step fails with DivergenceError matching ``what``; then one
    ``train_on_batch`` per batch on a second ``make_model()`` until the same
    step fails.  The two models must agree bit for bit, at the step before
    the failed one.  Returns the failed step's index (0-based)."""
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        fitted = make_model()
        with pytest.raises(fb.DivergenceError, match=what) as err:
            fitted.fit(X, y, epochs=1, batch_size=8, shuffle=False)
        stepped = make_model()
        for start in range(0, X.shape[0], 8):
            try:
                stepped.train_on_batch(X[start:start + 8], y[start:start + 8])
            except fb.DivergenceError:
                break
    finally:
        numba.set_num_threads(old)
    failed = start // 8
    assert f"step {failed + 1} " in str(err.value)
    assert fitted.optimizer.step_ == stepped.optimizer.step_ == failed
    np.testing.assert_array_equal(fitted.flat_params, stepped.flat_params)
    assert np.isfinite(fitted.flat_params).all()
    for a, b in zip(fitted.optimizer.state_, stepped.optimizer.state_, strict=True):
        np.testing.assert_array_equal(a, b)
    return failed


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("widths", "make_opt", "what"), MID_EPOCH_FAILURES)
def test_a_failed_step_inside_an_epoch_leaves_the_steps_before_it(widths, make_opt, what,
                                                                  threads):
    """An epoch of 4 steps or more updates in place after a copy and, when
    a step fails, restores the copy and replays the good steps before it:
    the model must be bit for bit where one train_on_batch per batch (each
    keeping its old values to put back) leaves it."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((160, 40)).astype(np.float32)
    y = rng.integers(0, 3, 160)

    def model():
        m = fb.MLP(widths, dtype="float32", seed=0)
        m.optimizer = make_opt()
        return m

    _fit_against_train_on_batch(model, X, y, what, threads)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows", [16, 24])
def test_a_failed_step_of_a_short_epoch_puts_its_old_values_back(rows, threads):
    """An epoch of fewer than 4 steps (and train_on_batch) updates in place
    keeping each step's old values (optim.JOURNAL): the failing step, here
    the 2nd, must put them back bit for bit."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows, 40)).astype(np.float32)
    y = rng.integers(0, 3, rows)

    def model():
        m = fb.MLP([40, 3], dtype="float32", seed=0)
        m.flat_params[:] *= np.float32(99.0**17)  # the second step overflows
        m.optimizer = fb.SGD(lr=0.01, momentum=0.5, weight_decay=1e4)
        return m

    assert _fit_against_train_on_batch(model, X, y, "update", threads) == 1
