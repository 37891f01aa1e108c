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
