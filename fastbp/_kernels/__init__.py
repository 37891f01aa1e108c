"""Numba-compiled kernels.  Pure functions on arrays that write into buffers
given to them: no validation, no allocation on hot paths, no Python objects.
Nothing here imports from the rest of the package."""
