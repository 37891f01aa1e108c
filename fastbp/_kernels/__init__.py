"""Numba-compiled kernels.  Pure functions on arrays that write into buffers
given to them: no validation, no allocation on hot paths, no Python objects.
Nothing here imports from the rest of the package.

Numba's on-disk cache (``cache=True``) checks only the modification time of
the file that defines a function, yet a cached caller carries its callees
compiled in.  Editing ``activations.py`` would leave the cached
``network.train_epoch`` running the old activation code.  So at import the
sources of this package are hashed and, if they changed since the cache was
written, the cache files in ``__pycache__`` are dropped.
"""

import hashlib
import os


def _drop_stale_cache():
    here = os.path.dirname(os.path.abspath(__file__))
    cache = os.path.join(here, "__pycache__")
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
                    return
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
        # A read-only installation: the cache there was written by the same
        # sources, or cannot be written at all.
        pass


_drop_stale_cache()
