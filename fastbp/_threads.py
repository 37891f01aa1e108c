"""One thread setting for Numba and both BLAS libraries.

NumPy and SciPy each carry their own OpenBLAS; compiled kernels call
NumPy's (SciPy's only in the fallback of _kernels/blas.py).  threadpoolctl
reaches every BLAS loaded in the process, so SciPy's is loaded first to make
sure it is among them.  Both imports wait until a thread setting is asked
for: SciPy's linalg costs ~170 ms of ``import fastbp`` otherwise.
"""

import numba

_limits = None


def set_num_threads(n):
    """Use ``n`` threads in Numba and in NumPy's and SciPy's BLAS."""
    global _limits
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS)
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    _limits = threadpool_limits(limits=n)


def get_num_threads():
    """Threads of each library: dict with "numba" and one entry per BLAS."""
    from threadpoolctl import threadpool_info

    out = {"numba": numba.get_num_threads()}
    for lib in threadpool_info():
        out[f"{lib['internal_api']}:{lib['filepath'].rsplit('/', 1)[-1]}"] = lib["num_threads"]
    return out


class _BlasSingleThreaded:
    """While a training step runs its own threads, the OpenBLAS the kernels
    call runs single-threaded, and the setting is restored when the last
    such step returns.

    Why: a step on more than one thread splits each product into column
    blocks, one single-threaded BLAS call per thread
    (_kernels/network.py, ``train_step``); OpenBLAS's own threads would
    otherwise each try to take both cores.  A counter under a lock, so that
    fits running at once in several Python threads restore the user's
    setting exactly once.  Reaches NumPy's bundled OpenBLAS only (SciPy's is
    not called by the step); no-op without it (the np.dot fallback).
    """

    def __init__(self):
        import ctypes
        import threading

        from ._kernels.blas import LIBRARY

        self._lock = threading.Lock()
        self._depth = 0
        self._saved = 1
        self._get = self._set = None
        if LIBRARY is not None:
            try:
                self._get = LIBRARY.scipy_openblas_get_num_threads64_
                self._set = LIBRARY.scipy_openblas_set_num_threads64_
            except AttributeError:
                return
            self._get.restype = ctypes.c_int
            self._get.argtypes = []
            self._set.restype = None
            self._set.argtypes = [ctypes.c_int]

    def __enter__(self):
        if self._set is not None:
            with self._lock:
                if self._depth == 0:
                    self._saved = self._get()
                    self._set(1)
                self._depth += 1
        return self

    def __exit__(self, *exc):
        if self._set is not None:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._set(self._saved)


class _NoGuard:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


BLAS_SINGLE = _BlasSingleThreaded()
NO_GUARD = _NoGuard()


#: a step is split between threads only when each thread gets at least this
#: many floating-point operations of matrix products (6 m sum(d_in d_out)
#: per step): below it, waking the threads and splitting the products costs
#: more than it saves (benchmarks/thread_scaling.py --min-flops 0,
#: docs/performance.md)
PARALLEL_MIN_FLOPS = 2e6


#: a step on nt threads is split by blocks of W while what its threads pack
#: for OpenBLAS, each on its own, stays below this many times the
#: parameters that a split by batch rows would add up from extra gradient
#: buffers: ``nt * packed < SPLIT_MAX_PACKED * (nt - 1) * params`` (see
#: ``step_threads``); above, it is split by batch rows.  The first costs
#: each thread its whole h and dA packed, the second each thread its share
#: of the sum of nt - 1 gradient buffers.  Fitted on 2 threads
#: (docs/performance.md, "Issue 16, seventh round"; both splits fit for fit,
#: SGD with momentum and Adam, 11 shapes and batches each): the two meet at
#: 2 packed / params = 1.95-2.15 for both optimizers, one shape off by 2.6 %
#: at 2.13.  Not measured beyond 2 threads.
SPLIT_MAX_PACKED = 2.0


#: a sparse step splits its first layer's pass and its update between
#: threads from this many parameters on (``sparse_threads``).  Measured on
#: 2 threads with the update alone split (fit time, split / one thread):
#: 0.92-0.94 at 128 k parameters, 0.79-0.81 at 500 k, 0.82-0.92 at 2 M,
#: 0.76-0.83 at 5 M; with dW_0 made a block at a time on the threads
#: (``_kernels.sparse.first_layer_rows``) 0.76-1.00 of that again at 2 M
#: and 0.85-0.94 at 5 M.  But the first split fit compiles a parallel
#: function and its leaf (about 3 s of CPU once, then cached on disk),
#: which at 128 k parameters only some 100 k steps would repay, at 2 M
#: some 6 k
SPARSE_SPLIT_MIN_PARAMS = 1 << 20


def sparse_threads(tail_flops, params):
    """(threads of a sparse step's first layer and update, the BLAS guard).

    A sparse step's products touch only the rows of W_0 its batch names,
    but dW_0 and the update cover every parameter: at 20000-100-10 b200
    they are most of the step.  They are split between Numba's threads
    (``_kernels.sparse.first_layer_rows``: each element computed as one
    thread computes it, the same parameters on any thread count) when
    there are at least
    ``SPARSE_SPLIT_MIN_PARAMS`` parameters, and only where the products of
    the dense layers after the first (``tail_flops`` per step) are too
    small to split (below PARALLEL_MIN_FLOPS a thread): those run with
    OpenBLAS held to one thread, since its threads and Numba's must not
    spin against each other (docs/performance.md, "Split step or
    OpenBLAS's threads")."""
    if params < SPARSE_SPLIT_MIN_PARAMS:
        return 1, NO_GUARD
    nt = numba.get_num_threads()
    if nt > 1 and tail_flops < PARALLEL_MIN_FLOPS * nt:
        return nt, BLAS_SINGLE
    return 1, NO_GUARD


def pack_per_row(widths):
    """``packed`` of ``step_threads`` per batch row: sum(d_in + 2 d_out)
    over the layers of ``widths``."""
    return float(sum(int(widths[k]) + 2 * int(widths[k + 1]) for k in range(len(widths) - 1)))


def step_threads(flops=float("inf"), packed=0.0, params=float("inf")):
    """(threads a training step uses, the BLAS guard to hold around it);
    the threads are negative for a step split by the rows of its batch.

    ``flops``: product flops of the step (6 m sum(d_in d_out));
    ``packed``: m sum(d_in + 2 d_out), the operands each thread of a step
    split by blocks of W packs for OpenBLAS on its own (its whole h of the
    forward products, its whole dA of the backward ones); ``params``: the
    parameters the step updates.  On nt > 1 threads a step is split one of
    two ways, each thread calling OpenBLAS single-threaded (the guard holds
    it there): by blocks of W (nt), paying for the threads' repeated
    packing, or by the rows of its batch (-nt: each thread a whole forward
    and backward pass of its rows, then the update by blocks of the
    parameters, ``_kernels.network.batch_split_step``), paying for a
    gradient buffer per extra thread and their sum.  By measurement the
    first wins while ``nt * packed < SPLIT_MAX_PACKED * (nt - 1) *
    params`` (at 784-256-128-10 on 2 threads: up to 120 rows a batch).
    One thread (OpenBLAS's own threads for the products, which pack once,
    and everything else on one thread) is kept for steps too small to
    split."""
    if flops < 2 * PARALLEL_MIN_FLOPS:
        # too small for any split; and numba.get_num_threads() costs ~2 us,
        # a third of train_on_batch's overhead at 64-128-10 (issue 16, item 5;
        # its fast path repeats this rule inline, without the call)
        return 1, NO_GUARD
    nt = numba.get_num_threads()
    if nt == 1 or flops < PARALLEL_MIN_FLOPS * nt:
        return 1, NO_GUARD
    if nt * packed >= SPLIT_MAX_PACKED * (nt - 1) * params:
        return -nt, BLAS_SINGLE
    return nt, BLAS_SINGLE
