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


#: a step is split between threads only while what its threads pack for
#: OpenBLAS, each on its own, stays below this many times the parameters:
#: ``nt * packed < SPLIT_MAX_PACKED[opt_kind] * params`` (see
#: ``step_threads``), indexed by the optimizer's kind (``_kernels.optim.SGD``,
#: ``ADAM``): Adam's update reads and writes two state arrays, so its split
#: pays up to twice the batch.  Fitted on 2 threads (docs/performance.md,
#: "Split step or OpenBLAS's threads"): SGD with momentum on 21 shapes and
#: batches, right on 19, the other two missed by 3.8 % and 0.9 %, and right
#: on the 6 measured after; SGD without momentum right on 4 of 4; Adam on 10,
#: right on all, and on 5 of the 6 measured after (the miss: 2 %).  Not
#: measured beyond 2 threads.  Checked again after two-thread steps split
#: the forward products by rows of W and updated in place (2026-12-07,
#: epoch / floor, split against OpenBLAS's threads, SGD with momentum,
#: 784-256-128-10): b128 1.19 against 1.36-1.39, b256 1.26-1.27 against
#: 1.26-1.27, b512 1.29-1.31 against 1.29: the boundary at 180 rows still
#: falls where the two arrangements meet.
SPLIT_MAX_PACKED = (3.0, 6.0)


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


def step_threads(flops=float("inf"), packed=0.0, params=float("inf"), opt_kind=0):
    """(threads a training step uses, the BLAS guard to hold around it);
    the threads are negative for a step split by the rows of its batch.

    ``flops``: product flops of the step (6 m sum(d_in d_out));
    ``packed``: m sum(d_in + 2 d_out), the operands each thread of a split
    step packs for OpenBLAS on its own (its whole h of the forward products,
    its whole dA of the backward ones); ``params``: the parameters the step
    updates; ``opt_kind``: the optimizer's kernel kind.  More than one
    thread (the step split by blocks of columns, each calling OpenBLAS
    single-threaded) pays for its threads' repeated packing; split by the
    rows of its batch (-nt: each thread a whole forward and backward pass
    of its rows with single-threaded BLAS, then the update by blocks of the
    parameters, ``_kernels.network.batch_split_step``) it pays instead for a
    gradient buffer per extra thread and their sum, a pass over
    ``(nt - 1) * params`` values.  The first wins while the update
    outweighs the packing: by measurement, while ``nt * packed <
    SPLIT_MAX_PACKED[opt_kind] * params`` (at 784-256-128-10 on 2 threads,
    up to 180 rows a batch with SGD, 360 with Adam); above, the second.
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
    if nt * packed >= SPLIT_MAX_PACKED[opt_kind] * params:
        return -nt, BLAS_SINGLE
    return nt, BLAS_SINGLE
