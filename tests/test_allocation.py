"""Steady-state training allocates nothing per batch.

Numba's runtime counts its allocations when NUMBA_NRT_STATS=1 is set before
Numba starts, so the check runs in a fresh process.  Passing arrays from
Python to a compiled function wraps each in a small runtime record, a fixed
number per call; any per-batch allocation inside the compiled epoch would
make the count grow with the number of batches.
"""

import os
import subprocess
import sys
import textwrap
import tracemalloc

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
