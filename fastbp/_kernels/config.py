"""Compilation options shared by every kernel.

One place defines how kernels are compiled so that no kernel drifts from the
others.

``FASTMATH`` is deliberately small.  ``nnan`` and ``ninf`` are out: with
them LLVM may assume no NaN or inf ever occurs and delete the very checks
that let a diverging loss surface (``optim.all_finite``, the NaN-keeping
ReLU).  ``reassoc``, ``contract``, ``arcp`` and ``afn`` are out too: they let
LLVM reorder sums, fuse multiply-adds or use reciprocals *depending on the
context a function is optimised in*.  A kernel is compiled once on its own
and again folded into each caller, and the JIT may bind a call to either
copy, so with those flags the same training gave different last bits
depending on which layer functions a process had called before ``fit``
(tests/test_checkpoint.py::test_killed_training_resumes failed after
tests/test_bad_input.py).  Element-wise loops vectorise without them; the
few reductions are over short rows.  ``nsz`` (ignore the sign of zero) can
change no magnitude and lets ``zero if v < zero else v`` become a vector max.
"""

FASTMATH = {"nsz"}

# cache=True: a second process loads machine code from __pycache__ instead of
# compiling again.  nogil: callers may run kernels from several Python threads.
# error_model="numpy": a float division by zero gives inf/NaN as in NumPy
# instead of raising from compiled code; every divisor is checked at the
# Python boundary (batch sizes >= 1, sample weights with a positive sum,
# Adam's betas < 1), and a non-finite result is caught by the finiteness
# checks of training.  Without the raising branches the first compile took
# ~7 % less CPU (10.98 -> 10.18 s, fastbp bench --startup, 2 rounds).
# no_cfunc_wrapper: Numba otherwise also emits, optimises and caches a C-ABI
# wrapper for every function, used only when a function is passed as a
# first-class value or a ctypes callback, which fastbp never does (its
# leaves are linked through their native Numba entry, linking.py).  First
# fit 6.25 -> 5.2 s CPU (medians of 4 interleaved cold runs).
JIT = {
    "nogil": True,
    "cache": True,
    "fastmath": FASTMATH,
    "error_model": "numpy",
    "no_cfunc_wrapper": True,
}

# For small kernels with one call site in the training path: their Numba IR is
# copied into the caller, so they are neither compiled on their own nor
# optimised again inside each caller.  Called from Python they compile as usual.
JIT_INLINE = dict(JIT, inline="always")
