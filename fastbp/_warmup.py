"""Compiling ahead of use, and saying so before a wait.

The first call of a kernel in a fresh environment compiles it (seconds); later
processes load it from the on-disk cache (``fastbp._kernels.CACHE_DIR``).
``prepare`` compiles ahead of use and reports what it compiled;
``compile_pending`` tells whether a first ``fit`` is about to compile, so that
callers can say so before the wait.
"""

import sys
import time

import numpy as np

#: rough seconds of the first compile of the training kernels for one
#: dtype, measured with ``fastbp bench --startup`` (2 shared cores)
FIRST_COMPILE_SECONDS = "4-12"


def _has_overload(disp, dtype):
    """True if ``disp`` is compiled in this process, or cached on disk, for a
    signature whose first array argument has ``dtype``."""
    from numba import from_dtype
    from numba.core.types import BaseTuple

    want = from_dtype(np.dtype(dtype))

    def first_array(types):
        for t in types:
            if hasattr(t, "dtype") and hasattr(t, "ndim"):
                return t
            if isinstance(t, BaseTuple):  # a record (_kernels/records.py)
                found = first_array(t)
                if found is not None:
                    return found
        return None

    def matches(sig):
        t = first_array(sig)
        return t is not None and t.dtype == want

    if any(matches(sig) for sig in disp.overloads):
        return True
    cache = getattr(disp, "_cache", None)
    try:
        index = cache._cache_file._load_index()
    except Exception:  # noqa: BLE001 (no cache, or a Numba without these internals)
        return False
    return any(matches(key[0]) for key in index)


def compile_pending(dtype="float32"):
    """True when training with ``dtype`` will compile kernels first (they are
    neither loaded in this process nor in the on-disk cache)."""
    from ._kernels import network

    return not _has_overload(network.train_epoch, dtype)


def compile_notice(dtype="float32"):
    """The one line said before a first compile."""
    from ._kernels import CACHE_DIR

    where = f"cached in {CACHE_DIR}" if CACHE_DIR else "not cached: no writable cache directory"
    return (f"fastbp: compiling the {np.dtype(dtype).name} training kernels for the first run "
            f"(usually {FIRST_COMPILE_SECONDS} s, once; {where})")


class _CompileLog:
    """Records Numba's top-level compilations (not cache loads) while active."""

    def __init__(self):
        self.rows = []
        self._depth = 0
        self._nested = 0
        self._t0 = 0.0

    def __enter__(self):
        from numba.core import event

        log = self

        class Listener(event.Listener):
            def on_start(self, ev):
                if log._depth == 0:
                    log._t0 = time.perf_counter()
                log._depth += 1

            def on_end(self, ev):
                log._depth -= 1
                if log._depth == 0:
                    f = ev.data["dispatcher"].py_func
                    name = f"{f.__module__.rsplit('.', 1)[-1]}.{f.__qualname__}"
                    log.rows.append((name, time.perf_counter() - log._t0, log._nested))
                    log._nested = 0
                else:
                    log._nested += 1

        self._cm = event.install_listener("numba:compile", Listener())
        self._cm.__enter__()
        return self

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def _exercise(dt, what):
    from .layers import (
        dense_backward,
        dense_forward,
        sigmoid_cross_entropy,
        softmax_cross_entropy,
    )
    from .network import MLP

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3)).astype(dt)
    y = np.array([0, 1, 0, 1])
    m = MLP([3, 4, 2], dtype=dt, seed=0)
    m.fit(x, y, epochs=1, batch_size=2, optimizer="sgd", validation_data=(x, y))
    m.predict(x)
    if what == "fit":
        return
    W = rng.standard_normal((3, 2)).astype(dt)
    h = dense_forward(x, W, np.zeros(2, dt), "relu")
    dense_backward(h, x, W, h, "relu")
    softmax_cross_entropy(h, y)
    sigmoid_cross_entropy(h, np.array([[0, 1], [1, 0], [0, 0], [1, 1]]))
    m.predict_proba(x)
    m.train_on_batch(x, y, optimizer="adam")
    m.loss_and_grad(x, y)
    # every loss and optimizer loop, which the calls above link only as used
    from numba import from_dtype

    from ._kernels import linking

    linking.compile_all(from_dtype(np.dtype(dt)))


def prepare(dtypes=("float32", "float64"), what="all", verbose=False, file=None):
    """Compile the kernels now, so that no later call pays for compilation.

    With a warm on-disk cache this only loads them (well under a second).

    Parameters
    ----------
    dtypes : sequence of {"float32", "float64"}
        The dtypes to compile for.
    what : {"all", "fit"}
        "fit": what ``MLP.fit`` (with validation data) and ``predict`` need;
        "all": also the layer functions, ``train_on_batch`` and
        ``loss_and_grad``.
    verbose : bool
        Print each compiled kernel and its time, and where the cache is.
    file : file object, optional
        Where to print (default sys.stdout).

    Returns
    -------
    report : list of (kernel, seconds, n_callees)
        The kernels compiled from Python (empty when everything came from
        the cache), wall seconds each, including the ``n_callees`` functions
        compiled on the way.
    """
    from ._kernels import CACHE_DIR

    if what not in ("all", "fit"):
        raise ValueError(f"what must be 'all' or 'fit'; got {what!r}")
    if isinstance(dtypes, str):
        dtypes = (dtypes,)
    dts = []
    for dt in dtypes:
        name = np.dtype(dt).name if isinstance(dt, (str, type, np.dtype)) else None
        if name not in ("float32", "float64"):
            raise ValueError(f"dtypes must hold 'float32' or 'float64'; got {dt!r}")
        dts.append(name)
    out = file or sys.stdout
    t0 = time.perf_counter()
    with _CompileLog() as log:
        for dt in dts:
            _exercise(dt, what)
    total = time.perf_counter() - t0
    if verbose:
        for name, sec, nested in log.rows:
            extra = f" (with {nested} functions it calls)" if nested else ""
            print(f"  compiled {name:<30} {sec:6.2f} s{extra}", file=out)
        if log.rows:
            n = len(log.rows) + sum(r[2] for r in log.rows)
            print(f"fastbp: compiled {n} functions for {', '.join(dts)} in {total:.1f} s; "
                  f"cached in {CACHE_DIR}", file=out)
        else:
            print(f"fastbp: kernels for {', '.join(dts)} already compiled; loaded from "
                  f"{CACHE_DIR} in {total:.2f} s", file=out)
    return log.rows
