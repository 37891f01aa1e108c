"""Numba-compiled kernels.  Pure functions on arrays that write into buffers
given to them: no validation, no allocation on hot paths, no Python objects.
Nothing here imports from the rest of the package.

Where the compiled code lives
-----------------------------
Every kernel is compiled with ``cache=True`` (config.JIT).  Numba writes the
machine code to the first of these that works, and so does fastbp's check
below (it asks Numba's own cache locators, so the two always agree):

1. ``$NUMBA_CACHE_DIR/_kernels_<hash>/`` when NUMBA_CACHE_DIR is set;
2. ``fastbp/_kernels/__pycache__/`` when the installation is writable;
3. the user's cache directory, ``~/.cache/numba/_kernels_<hash>/`` on Linux
   (``$XDG_CACHE_HOME`` if set), for a read-only installation.

``CACHE_DIR`` holds the directory in use (None when nothing is writable: then
every process compiles).

Stale caches
------------
Numba's on-disk cache checks only the source of the file that defines a
function, yet a cached caller carries its callees compiled in.  Editing
``activations.py`` would leave the cached ``network.train_epoch`` running the
old activation code.  So at import the sources of this package (and Numba's
version) are hashed and, if they changed since the cache was written, the
cache files of this package in ``CACHE_DIR`` are dropped.

Adding a kernel (what keeps the first compile short)
----------------------------------------------------
The first ``fit`` in a fresh environment compiles ``train_epoch`` and what it
calls.  Numba copies a callee's LLVM IR into every caller and optimises the
whole module again, and type inference of one huge function grows faster
than its size.  Measured on 2 shared cores (``fastbp bench --startup``), the
layout that pays is:

* a kernel with real loops (activations, losses, optimizer updates and
  checks; also the whole step ``train_step``) is a plain ``@njit(**JIT)``
  function, compiled once per dtype, and
  is called from other kernels through ``linking.linked("module.function")``
  with its signature declared in ``linking._SPECS``: callers hold an
  indirect call, not its body, and the leaf is compiled (or loaded from the
  cache) only when first called (docs/performance.md, "Leaves linked on
  first use");
* a 2-D view of a flat buffer is the intrinsic ``network.view2d``, not a
  slice and reshape (which emit checks at every call site);
* a small glue function with one or two call sites on the training path
  (``matmul``, ``dense_forward``, ``all_finite``, ``apply_update``,
  ``forward_loss``, ``backward``) is
  ``@njit(**JIT_INLINE)``: copied into its caller at the Numba-IR level, so it
  is not compiled and optimised as a unit of its own (still callable from
  Python);
* inlining the big loop kernels too was slower (one huge function: 17 s CPU
  against 13.5 s), as was a deeper call graph;
* avoid constructs whose Numba implementation compiles a lot of hidden code:
  ``arr.view(dtype)``, slice assignment of arrays (``a[:] = b``) and
  ``sum(axis=...)`` (each compiles error-message formatting), ``max``/``min``
  over tuples, and branches on ``itemsize`` or a dtype whose arms need other
  types (both arms are compiled);
* one signature per dtype: pass C-contiguous arrays (reshape views of flat
  buffers are) so a kernel is not compiled again for 'A' or 'F' layouts;
* a kernel with many arguments takes records (``records.py``: plain tuples,
  unpacked on its first lines), and a per-step kernel unpacks them through
  ``network.unowned``, so that the references Numba takes on its arrays are
  not atomic operations (docs/performance.md, "Issue 16, fourth round").

A new kernel then costs roughly its own size once.  Check with
``fastbp bench --startup 1`` before and after.
"""

import hashlib
import os


def _probe():
    """A function in this directory: Numba's cache locators are asked where
    they would cache it, which is where every kernel here is cached."""


def cache_dir():
    """The directory Numba caches this package's kernels in (created if
    needed), or None when no candidate is writable."""
    try:
        from numba.core.caching import CacheImpl
    except ImportError:  # a Numba without this internal: the in-tree default
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
        return path if os.access(os.path.dirname(path), os.W_OK) else None
    for cls in CacheImpl._locator_classes:
        loc = cls.from_function(_probe, os.path.abspath(__file__))
        if loc is not None:
            return loc.get_cache_path()
    return None


def _drop_stale_cache():
    cache = cache_dir()
    if cache is None:
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    try:
        import numba

        digest.update(numba.__version__.encode())
        for name in sorted(os.listdir(here)):
            if name.endswith(".py"):
                with open(os.path.join(here, name), "rb") as fh:
                    digest.update(name.encode() + b"\0" + fh.read())
        stamp = os.path.join(cache, "fastbp-sources.sha256")
        try:
            with open(stamp) as fh:
                if fh.read().strip() == digest.hexdigest():
                    return cache
        except OSError:
            pass
        if os.path.isdir(cache):
            for name in os.listdir(cache):
                if name.endswith((".nbi", ".nbc")):
                    os.unlink(os.path.join(cache, name))
        os.makedirs(cache, exist_ok=True)
        with open(stamp, "w") as fh:
            fh.write(digest.hexdigest())
    except OSError:
        # Could not read the sources or write the stamp: leave the cache as
        # it is (Numba still checks each kernel's own source file).
        pass
    return cache


#: where the compiled kernels are cached (see the module docstring)
CACHE_DIR = _drop_stale_cache()
