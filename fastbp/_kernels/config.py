"""Compilation options shared by every kernel.

One place defines how kernels are compiled so that no kernel drifts from the
others.  ``FASTMATH`` deliberately leaves out ``nnan`` and ``ninf``: with them
LLVM may assume no NaN or inf ever occurs and delete the very comparisons that
let a diverging loss surface as NaN (tests/test_network.py::test_divergence_*).
``afn`` (approximate math functions) is left out too, so ``exp``/``log``/``tanh``
keep full accuracy; ``reassoc`` is what lets LLVM vectorise the reductions.
"""

FASTMATH = set({"nsz", "arcp", "contract", "reassoc"})

# cache=True: a second process loads machine code from __pycache__ instead of
# compiling again.  nogil: callers may run kernels from several Python threads.
JIT = dict(nogil=True, cache=True, fastmath=FASTMATH)
