"""Fused dense layer kernels: matrix products through BLAS, the rest fused.

``matmul`` (blas.py) writes into ``out`` without allocating; ``x.T`` of a
C-contiguous array is passed to BLAS as a transposed operand with no copy.
"""

from numba import njit

from .activations import bias_activation, delta_and_bias_grad
from .blas import matmul
from .config import JIT


@njit(**JIT)
def dense_forward(x, W, b, code, out):
    """out = g(x @ W + b).

    x (n, d_in), W (d_in, d_out), b (d_out,), out (n, d_out); one dtype,
    C-contiguous.
    """
    matmul(x, W, out)
    bias_activation(out, b, code)


@njit(**JIT)
def dense_backward(dh, x, W, h, code, da, dx, dW, db, need_dx):
    """Backward pass of ``h = g(x @ W + b)``.

    da = dh * g'(h) (``da`` may alias ``dh``), db = da.sum(0), dW = x.T @ da,
    and, if ``need_dx``, dx = da @ W.T.  Shapes: dh, h, da (n, d_out);
    x, dx (n, d_in); W, dW (d_in, d_out); db (d_out,).
    """
    delta_and_bias_grad(dh, h, code, da, db)
    matmul(x.T, da, dW)
    if need_dx:
        matmul(da, W.T, dx)
