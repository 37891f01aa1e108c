"""Determinism: same seed, same data, same thread count -> bit-identical results.

What is and is not fixed by the seed
------------------------------------
``MLP(seed=s)`` seeds one NumPy Generator that draws the initial weights and
every epoch's shuffle, so two runs with the same seed, data, arguments and
thread count produce bit-identical parameters, in float32 and float64, in one
process or in two.

fastbp's own kernels (bias + activation, deltas, bias gradients, losses,
optimizer updates) are sequential loops with a fixed order of summation:
their results do not depend on the number of threads.  The matrix products
go to OpenBLAS, which splits a GEMM among its threads; with a different
number of threads the blocks of a dot product can be summed in a different
order, so the last bits of a product -- and after many steps, of the
trained parameters -- may differ between, say, 1 and 2 threads (and between
machines whose CPUs select different BLAS kernels).  For bit-identical
results, fix the thread count (``fb.set_num_threads(n)`` or
``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``) along with the seed.  The
tests below check repeatability at each thread count and only closeness
across thread counts.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastbp as fb


@pytest.fixture(scope="module")
def digits():
    X, y = fb.load_digits()
    return X[:640], y[:640]


def train(X, y, dtype, optimizer, seed=0, epochs=2, fits=1):
    m = fb.MLP([64, 96, 32, 10], activation=["relu", "tanh"], dtype=dtype, seed=seed,
               alpha=1e-4)
    opt = fb.SGD(lr=0.05, momentum=0.9, nesterov=True) if optimizer == "sgd" else \
        fb.Adam(lr=1e-3)
    m.fit(X, y, epochs=epochs, batch_size=64, optimizer=opt)
    for _ in range(fits - 1):
        m.fit(X, y, epochs=epochs, batch_size=64)
    return m


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_same_params(digits, dtype, optimizer):
    X, y = digits
    a = train(X, y, dtype, optimizer)
    b = train(X, y, dtype, optimizer)
    assert a.flat_params.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    assert a.history == b.history
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    # and the seed matters
    c = train(X, y, dtype, optimizer, seed=1)
    assert not np.array_equal(a.flat_params, c.flat_params)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_in_two_calls_equals_one_call(digits, dtype):
    """Optimizer state and the shuffling generator carry over between fits."""
    X, y = digits
    once = train(X, y, dtype, "adam", epochs=2)
    twice = train(X, y, dtype, "adam", epochs=1, fits=2)
    np.testing.assert_array_equal(once.flat_params, twice.flat_params)


@pytest.mark.parametrize("threads", [1, 2])
def test_repeatable_at_fixed_thread_count(digits, threads):
    X, y = digits
    with threadpool_limits(limits=threads):
        a = train(X, y, "float32", "sgd")
        b = train(X, y, "float32", "sgd")
    np.testing.assert_array_equal(a.flat_params, b.flat_params)


def test_thread_counts_agree_closely(digits):
    """Across thread counts only BLAS summation order changes: results agree
    to rounding, not necessarily bit for bit (see the module docstring)."""
    X, y = digits
    with threadpool_limits(limits=1):
        one = train(X, y, "float64", "sgd", epochs=1)
    with threadpool_limits(limits=2):
        two = train(X, y, "float64", "sgd", epochs=1)
    np.testing.assert_allclose(one.flat_params, two.flat_params, rtol=1e-9, atol=1e-12)


CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from threadpoolctl import threadpool_limits
    import fastbp as fb

    X, y = fb.load_digits()
    X, y = X[:640], y[:640]
    out = {}
    with threadpool_limits(limits=1):
        for dt in ("float32", "float64"):
            m = fb.MLP([64, 96, 32, 10], activation=["relu", "tanh"], dtype=dt, seed=0,
                       alpha=1e-4)
            m.fit(X, y, epochs=2, batch_size=64,
                  optimizer=fb.SGD(lr=0.05, momentum=0.9, nesterov=True))
            out[dt] = m.flat_params
    np.savez(sys.argv[1], **out)
""")


def test_same_params_in_another_process(digits, tmp_path):
    """Nothing depends on the process: addresses, alignment, compile order."""
    X, y = digits
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out = tmp_path / "params.npz"
    subprocess.run([sys.executable, str(script), str(out)], check=True, timeout=300)
    with np.load(out) as f, threadpool_limits(limits=1):
        for dt in ("float32", "float64"):
            m = train(X, y, dt, "sgd")
            assert f[dt].tobytes() == m.flat_params.tobytes(), dt


def test_train_test_split_is_seeded(digits):
    X, y = digits
    a = fb.train_test_split(X, y, seed=5)
    b = fb.train_test_split(X, y, seed=5)
    for u, w in zip(a, b):
        np.testing.assert_array_equal(u, w)
    c = fb.train_test_split(X, y, seed=6)
    assert not np.array_equal(a[1], c[1])
