"""fastbp: fast training of dense neural networks on the CPU.

Numba-compiled kernels do the work of backpropagation; this package's Python
layer checks input, owns memory and offers the API::

    import fastbp as fb
    h = fb.dense_forward(x, W, b, activation="relu")
    dx, dW, db = fb.dense_backward(dh, x, W, h, activation="relu")
    loss, dlogits = fb.softmax_cross_entropy(logits, y)
    loss, dlogits = fb.sigmoid_cross_entropy(logits, Y)   # binary / multilabel
    model = fb.MLP([64, 128, 10], seed=0)
    model.fit(X, y, epochs=10, optimizer=fb.SGD(lr=0.1, momentum=0.9))
"""

from ._threads import get_num_threads, set_num_threads
from ._warmup import prepare
from .datasets import load_data, load_digits, train_test_split
from .layers import (
    activation,
    activation_grad,
    dense_backward,
    dense_forward,
    half_squared_error,
    sigmoid_cross_entropy,
    softmax,
    softmax_cross_entropy,
)
from .network import MLP, DivergenceError
from .optim import SGD, Adam

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "SGD",
    "Adam",
    "DivergenceError",
    "activation",
    "activation_grad",
    "dense_backward",
    "dense_forward",
    "get_num_threads",
    "half_squared_error",
    "load_data",
    "load_digits",
    "prepare",
    "set_num_threads",
    "sigmoid_cross_entropy",
    "softmax",
    "softmax_cross_entropy",
    "train_test_split",
]
