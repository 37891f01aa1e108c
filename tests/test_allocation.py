"""Steady-state training allocates nothing per batch.

Numba's runtime counts its allocations when NUMBA_NRT_STATS=1 is set before
Numba starts, so the check runs in a fresh process.  Passing arrays from
Python to a compiled function wraps each in a small runtime record, a fixed
number per call; any per-batch allocation inside the compiled epoch would
make the count grow with the number of batches.
"""

import copy
import os
import pickle
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import fastbp as fb

SCRIPT = textwrap.dedent(
    """
    import numpy as np, fastbp as fb
    from numba.core.runtime import rtsys
    X, y = fb.load_digits()
    m = fb.MLP([64, 128, 10], seed=0)
    m.fit(X, y, epochs=1, batch_size=32, optimizer=fb.SGD(lr=0.05, momentum=0.9))
    counts = []
    for rows in (64, 640, 1792):
        before = rtsys.get_allocation_stats().alloc
        m.fit(X[:rows], y[:rows], epochs=1, batch_size=32)
        counts.append(rtsys.get_allocation_stats().alloc - before)
    stats = rtsys.get_allocation_stats()
    print(*counts, stats.alloc - stats.free)
    """
)


def test_compiled_epoch_allocates_nothing_per_batch():
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr
    *counts, live = (int(t) for t in res.stdout.split())
    # 2, 20 and 56 batches: the same fixed count per call
    assert len(set(counts)) == 1, counts
    assert live == 0


def test_fit_peak_memory_does_not_grow_with_epochs():
    X, y = fb.load_digits()
    m = fb.MLP([64, 128, 10], seed=0)
    m.fit(X, y, epochs=1, batch_size=32)
    tracemalloc.start()
    try:
        m.fit(X, y, epochs=1, batch_size=32)
        _, peak1 = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        m.fit(X, y, epochs=10, batch_size=32)
        _, peak10 = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # per epoch only a permutation (n int64) and the history entries
    assert peak10 <= peak1 + 16 * 1024, (peak1, peak10)


def _misaligned(arrays):
    from fastbp._validation import BUFFER_ALIGN

    return [name for name, a in arrays.items() if a.ctypes.data % BUFFER_ALIGN]


def _buffers(model):
    """The buffers a split step's threads write in blocks: parameters,
    gradient, optimizer state and the workspace's (not its row order)."""
    out = {"params": model._params, "grads": model._grads}
    if model.optimizer is not None and model.optimizer.state_ is not None:
        out["s1"], out["s2"] = model.optimizer.state_
    if model._ws is not None:
        out.update((k, a) for k, a in model._ws.items()
                   if isinstance(a, np.ndarray) and k != "order")
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_step_buffers_start_on_cache_lines(tmp_path, dtype):
    """Each thread of a split step writes its own block of these buffers,
    from multiples of 16 values on; a buffer off a cache line made both
    cores write the lines at the blocks' edges (_validation.BUFFER_ALIGN).
    New, loaded, unpickled and copied models all start them aligned."""
    X, y = fb.load_digits()
    X = X[:200].astype(dtype)
    y = y[:200]
    m = fb.MLP([64, 48, 10], dtype=dtype, seed=0)
    m.fit(X, y, epochs=1, batch_size=32, optimizer=fb.Adam())
    assert len(_buffers(m)) == 16
    assert _misaligned(_buffers(m)) == []
    path = tmp_path / "m.npz"
    m.save(path, include_optimizer=True)
    for copy_ in (fb.MLP.load(path), pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert _misaligned(_buffers(copy_)) == []
        copy_.fit(X, y, epochs=1, batch_size=32)
        assert _misaligned(_buffers(copy_)) == []
        np.testing.assert_array_equal(copy_.predict(X[:5]), copy_.predict(X[:5]))
    # a read-only parameter buffer (a model unpickled from a memory map) is
    # copied before training, aligned too
    r = pickle.loads(pickle.dumps(m))
    for pad in range(8, 72, 8):  # (where a bytes object's data lands is CPython's)
        r._params = np.frombuffer(bytes(pad) + m._params.tobytes(), dtype=dtype, offset=pad)
        if r._params.ctypes.data % 64:
            break
    assert _misaligned({"p": r._params}) == ["p"]
    r._grads = r._grads.copy()
    r._grads.flags.writeable = False
    r.fit(X, y, epochs=1, batch_size=32)
    assert _misaligned(_buffers(r)) == []


def test_aligned_copy_and_zeros():
    from fastbp import _validation as v

    for dtype in (np.float32, np.float64, np.int64):
        for n in (0, 1, 17, 1000):
            z = v.zeros(n, dtype, "n", "a buffer")
            assert z.dtype == dtype and z.shape == (n,) and z.flags.writeable
            assert z.flags.c_contiguous and not z.any()
            a = np.arange(n, dtype=dtype)[::-1].copy()
            c = v.aligned_copy(a)
            assert c is not a
            if n:  # (an empty array's address is NumPy's)
                assert z.ctypes.data % v.BUFFER_ALIGN == c.ctypes.data % v.BUFFER_ALIGN == 0
            np.testing.assert_array_equal(c, a)
