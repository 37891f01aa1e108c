"""Fused dense layer kernels: matrix products through BLAS, the rest fused.

``matmul`` (blas.py) writes into ``out`` without allocating; ``x.T`` of a
C-contiguous array is passed to BLAS as a transposed operand with no copy.
"""

from numba import njit

from .blas import matmul
from .config import JIT, JIT_INLINE
from .linking import linked

bias_activation_cols = linked("activations.bias_activation_cols")
delta_cols = linked("activations.delta_cols")


@njit(**JIT_INLINE)
def bias_activation(a, b, code):
    """a = g(a + b) in place over all columns (activations.bias_activation_cols)."""
    bias_activation_cols(a, b, code, 0, a.shape[1])


@njit(**JIT_INLINE)
def delta_in_place(d, h, code, db):
    """d *= g'(h) in place, db = d.sum(0) (activations.delta_cols)."""
    delta_cols(d, h, code, db, 0, d.shape[1])


@njit(**JIT_INLINE)
def dense_forward(x, W, b, code, out):
    """out = g(x @ W + b).

    x (n, d_in), W (d_in, d_out), b (d_out,), out (n, d_out); one dtype,
    C-contiguous.
    """
    matmul(x, W, out)
    bias_activation(out, b, code)


@njit(**JIT)
def dense_backward(da, x, W, h, code, dx, dW, db, need_dx):
    """Backward pass of ``h = g(x @ W + b)``.

    ``da`` holds dh (the gradient with respect to h) on entry and
    dA = dh * g'(h) on return; db = dA.sum(0), dW = x.T @ dA and, if
    ``need_dx``, dx = dA @ W.T.  Shapes: da, h (n, d_out); x, dx (n, d_in);
    W, dW (d_in, d_out); db (d_out,).
    """
    delta_in_place(da, h, code, db)
    matmul(x.T, da, dW)
    if need_dx:
        matmul(da, W.T, dx)
