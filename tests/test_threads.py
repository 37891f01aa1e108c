"""The training step on several threads (issue 16), split two ways: each
layer into blocks of W, one single-threaded BLAS call per thread, the update
fused into the backward pass; or the batch into blocks of rows, each thread
a whole forward and backward pass of its rows, then the update by blocks of
the parameters with the threads' gradients summed.  Every test here runs
with each split.  The step must compute the one-thread step (within float
rounding: the blocks' products and L2 sums may round differently), be
bit-for-bit repeatable for a given thread count, keep every divergence rule,
and leave NumPy's BLAS threads as the user set them."""

import numba
import numpy as np
import pytest
from test_check_cache import BAD_BATCHES, check_bad_batch_on_the_fast_path

import fastbp as fb
from fastbp._threads import BLAS_SINGLE

pytestmark = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                                reason="needs a Numba thread pool of 2 or more")


#: the rule's constant as shipped (the fixture below lifts it for every test)
SHIPPED_SPLIT_MAX_PACKED = fb._threads.SPLIT_MAX_PACKED


@pytest.fixture(autouse=True, params=["blocks of W", "batch rows"])
def split(request, monkeypatch):
    """How a step on several threads is split (the rule's constant set so
    that every step of two threads or more is split that way)."""
    # these networks are small enough that the step would run on one thread
    monkeypatch.setattr(fb._threads, "PARALLEL_MIN_FLOPS", 0)
    bound = float("inf") if request.param == "blocks of W" else 0.0
    monkeypatch.setattr(fb._threads, "SPLIT_MAX_PACKED", bound)
    return request.param

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


def test_small_steps_stay_on_one_thread(monkeypatch, split):
    monkeypatch.setattr(fb._threads, "PARALLEL_MIN_FLOPS", 2e6)
    old = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        assert fb._threads.step_threads(3e6)[0] == 1
        assert fb._threads.step_threads(5e6, 1.0, 1.0)[0] == (2 if split == "blocks of W"
                                                             else -2)
    finally:
        numba.set_num_threads(old)


def test_large_batches_split_by_rows(monkeypatch, split):
    """A step split by blocks of W has each thread pack its whole h and dA
    for OpenBLAS; past SPLIT_MAX_PACKED times the parameters (nt = 2 at
    784-256-128-10: from 121 rows) the step is split by batch rows instead
    (nt = -2), as measured faster (docs/performance.md); both hold
    OpenBLAS to one thread."""
    from fastbp._threads import BLAS_SINGLE, step_threads

    if split != "blocks of W":
        pytest.skip("the shipped rule: once")

    monkeypatch.setattr(fb._threads, "PARALLEL_MIN_FLOPS", 2e6)
    monkeypatch.setattr(fb._threads, "SPLIT_MAX_PACKED", SHIPPED_SPLIT_MAX_PACKED)
    model = fb.MLP([784, 256, 128, 10], dtype="float32", seed=0)
    ws = model._workspace(256, "X")
    assert ws["pack_per_row"] == (784 + 512) + (256 + 256) + (128 + 20)
    params = model.n_params
    last_split = 120  # 2 * 120 * 1956 < 2 * 235146 <= 2 * 121 * 1956
    old = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        for m in (64, last_split, last_split + 1, 512):
            want = 2 if m <= last_split else -2
            nt, guard = step_threads(m * ws["flops_per_row"], m * ws["pack_per_row"], params)
            assert nt == want, m
            assert guard is BLAS_SINGLE
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


def _targets(output, rng, n, d):
    if output == "softmax":  # target rows (soft labels)
        t = rng.random((n, d))
        return t / t.sum(axis=1, keepdims=True)
    if output == "sigmoid":
        return (rng.random((n, d)) < 0.4).astype(float)
    if output == "exp":
        return rng.poisson(2.0, (n, d)).astype(float)
    return rng.standard_normal((n, d))


@pytest.mark.parametrize("output", ["softmax", "sigmoid", "identity", "exp"])
def test_every_loss_with_sample_weights_and_a_last_batch_of_one_row(output):
    """Each loss with row weights and the L2 term, and an epoch whose last
    batch has one row (one thread of a split by batch rows then has none)."""
    rng = np.random.default_rng(4)
    n = 3 * 20 + 1
    X = rng.standard_normal((n, 30))
    y = _targets(output, rng, n, 4)
    sw = rng.random(n) * 2.0

    def run(threads):
        model = fb.MLP([30, 70, 4], activation="tanh", output=output, dtype="float64",
                       seed=2, alpha=1e-3)
        opt = fb.Adam(lr=1e-2)
        old = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            hist = model.fit(X, y, epochs=2, batch_size=20, optimizer=opt,
                             sample_weight=sw)
            loss = model.train_on_batch(X[:41], y[:41], sample_weight=sw[:41])
        finally:
            numba.set_num_threads(old)
        return model.flat_params.copy(), np.asarray(opt.state_).copy(), hist["loss"], loss

    one, two = run(1), run(2)
    for a, b in zip(two, one, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_train_on_batch_sizes_the_threads_gradient_buffers(split):
    """The fast path of train_on_batch made on one thread, then called on
    two: a split by batch rows needs a gradient buffer per extra thread,
    which the call must allocate and hand to the kernel (without it the
    kernel would fall back to one thread)."""
    from fastbp._kernels.network import batch_scratch_size

    rng = np.random.default_rng(5)
    X = rng.standard_normal((48, 30)).astype(np.float32)
    y = rng.integers(0, 5, 48)
    model = fb.MLP([30, 64, 5], dtype="float32", seed=0)
    model.optimizer = fb.SGD(lr=0.05, momentum=0.9)
    reference = fb.MLP([30, 64, 5], dtype="float32", seed=0)
    reference.optimizer = fb.SGD(lr=0.05, momentum=0.9)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        for m in (model, reference):
            m.train_on_batch(X, y)
        assert model._tob is not None  # the next call takes the fast path
        numba.set_num_threads(2)
        model.train_on_batch(X, y)
        numba.set_num_threads(1)
        reference.train_on_batch(X, y)
    finally:
        numba.set_num_threads(old)
    scratch = model._ws["scratch"]
    assert model._tob.ws_record[-1] is scratch
    if split == "batch rows":
        assert scratch.size >= batch_scratch_size(2, model.n_params)
    np.testing.assert_allclose(model.flat_params, reference.flat_params, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", BAD_BATCHES)
def test_bad_values_in_any_threads_rows_get_the_checked_paths_error(name):
    """train_on_batch's fast path leaves the value checks of X and int
    labels to the epoch kernel, which checks each thread's rows as that
    thread gathers them when the step is split by batch rows: a bad value
    in any thread's rows gets the checked path's error, and nothing is
    written or counted."""
    old = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        check_bad_batch_on_the_fast_path(name, n=48)
    finally:
        numba.set_num_threads(old)


def test_without_memory_for_the_threads_gradients_the_step_splits_by_blocks(monkeypatch,
                                                                           split):
    """Where the extra gradient buffers of a split by batch rows would take
    more than an eighth of the machine's memory, the step is split by
    blocks of W instead: it trains, and allocates none."""
    from fastbp._kernels.network import batch_scratch_size

    rng = np.random.default_rng(6)
    X = rng.standard_normal((96, 30)).astype(np.float32)
    y = rng.integers(0, 5, 96)
    model = fb.MLP([30, 64, 5], dtype="float32", seed=0)
    need = batch_scratch_size(2, model.n_params) * 4
    monkeypatch.setattr(fb._validation, "MEMORY_BYTES", 8 * need - 8)
    old = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        model.fit(X, y, epochs=2, batch_size=48, optimizer=fb.SGD(lr=0.05))
        model.train_on_batch(X[:48], y[:48])
        model.train_on_batch(X[48:], y[48:])  # the fast path
    finally:
        numba.set_num_threads(old)
    assert model._ws["scratch"].size < batch_scratch_size(2, model.n_params)
    reference = fb.MLP([30, 64, 5], dtype="float32", seed=0)
    numba.set_num_threads(1)
    try:
        reference.fit(X, y, epochs=2, batch_size=48, optimizer=fb.SGD(lr=0.05))
        reference.train_on_batch(X[:48], y[:48])
        reference.train_on_batch(X[48:], y[48:])
    finally:
        numba.set_num_threads(old)
    np.testing.assert_allclose(model.flat_params, reference.flat_params, rtol=2e-4, atol=1e-5)
