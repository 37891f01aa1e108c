"""Element-wise activations and their derivatives, both written in place.

The derivative is always expressed through the layer *output* ``h = g(a)``,
so the forward pass need not keep pre-activations:

==========  ======================  ==========================
code        g(a)                    g'(a) written with h
==========  ======================  ==========================
IDENTITY    a                       1
RELU        max(a, 0)               1 if h > 0 else 0
SIGMOID     1 / (1 + exp(-a))       h (1 - h)
TANH        tanh(a)                 1 - h**2
==========  ======================  ==========================
"""

from numba import njit

from .config import JIT
from .elementary import sigmoid, tanh
from .linking import linked

IDENTITY = 0
RELU = 1
SIGMOID = 2
TANH = 3

#: name -> kernel code; "logistic" is scikit-learn's name for the sigmoid.
ACTIVATION_CODES = {
    "identity": IDENTITY,
    "linear": IDENTITY,
    "relu": RELU,
    "sigmoid": SIGMOID,
    "logistic": SIGMOID,
    "tanh": TANH,
}
#: code -> canonical name
ACTIVATION_NAMES = {IDENTITY: "identity", RELU: "relu", SIGMOID: "sigmoid", TANH: "tanh"}


_bias_smooth = linked("activations.bias_smooth")


@njit(**JIT)
def bias_activation_cols(a, b, code, c0, c1):
    """a[i, c0:c1] = g(a[i, c0:c1] + b[c0:c1]) in place, for a C-contiguous
    (n, d) array a: the columns one thread of a training step owns
    (network.train_step splits each layer's outputs by columns)."""
    if code == SIGMOID or code == TANH:
        # their own leaf: a ReLU network never compiles exp, tanh or sigmoid
        # (first fit ~0.2 s less, tests/test_linking.py)
        _bias_smooth(a, b, code, c0, c1)
        return
    n = a.shape[0]
    zero = a.dtype.type(0)
    # loops over slices from 0: with ``range(c0, c1)`` the index could be
    # negative, and Numba's wraparound test stopped the loops vectorising
    # (5x slower, benchmarks/step_time_ab.py)
    bc = b[c0:c1]
    for i in range(n):
        row = a[i, c0:c1]
        if code == RELU:
            for j in range(bc.size):
                v = row[j] + bc[j]
                # `zero if v < zero else v`, not `max`: NaN must stay NaN so a
                # diverging step is reported (test_relu_keeps_nan).
                row[j] = zero if v < zero else v  # noqa: FURB136 (max() drops NaN)
        else:
            for j in range(bc.size):
                row[j] = row[j] + bc[j]


@njit(**JIT)
def bias_smooth(a, b, code, c0, c1):
    """``bias_activation_cols`` for SIGMOID and TANH (any other code: tanh)."""
    n = a.shape[0]
    bc = b[c0:c1]
    for i in range(n):
        row = a[i, c0:c1]
        if code == SIGMOID:
            # elementary.sigmoid: exp(-|v|) never overflows and keeps full
            # relative precision for very negative v (test_sigmoid_extremes);
            # it and tanh vectorise (no call per element).
            for j in range(bc.size):
                row[j] = sigmoid(row[j] + bc[j])
        else:
            for j in range(bc.size):
                row[j] = tanh(row[j] + bc[j])


_bias_activation_cols = linked("activations.bias_activation_cols")
_delta_cols = linked("activations.delta_cols")


@njit(**JIT)
def bias_activation(a, b, code):
    """a[i, :] = g(a[i, :] + b) in place, for a C-contiguous (n, d) array a."""
    _bias_activation_cols(a, b, code, 0, a.shape[1])


@njit(**JIT)
def activate(a, code):
    """a = g(a) in place, for a C-contiguous (n, d) array a (no bias)."""
    n, d = a.shape
    zero = a.dtype.type(0)
    for i in range(n):
        row = a[i]
        if code == RELU:
            for j in range(d):
                v = row[j]
                row[j] = zero if v < zero else v  # noqa: FURB136 (max() drops NaN)
        elif code == SIGMOID:
            for j in range(d):
                row[j] = sigmoid(row[j])
        elif code == TANH:
            for j in range(d):
                row[j] = tanh(row[j])


@njit(**JIT)
def derivative(h, code, out):
    """out = g'(a) computed from h = g(a); arrays (n, d), C-contiguous."""
    n, d = h.shape
    zero = h.dtype.type(0)
    one = h.dtype.type(1)
    for i in range(n):
        hr = h[i]
        orow = out[i]
        if code == RELU:
            for j in range(d):
                orow[j] = one if hr[j] > zero else zero
        elif code == SIGMOID:
            for j in range(d):
                orow[j] = hr[j] * (one - hr[j])
        elif code == TANH:
            for j in range(d):
                orow[j] = one - hr[j] * hr[j]
        else:
            for j in range(d):
                orow[j] = one


@njit(**JIT)
def delta_cols(d, h, code, db, c0, c1):
    """d[:, c0:c1] *= g'(h[:, c0:c1]) in place and db[c0:c1] = the column
    sums of d[:, c0:c1] (after the product); the other columns are not
    touched.

    d, h (n, k) C-contiguous, db (k,).  In place on purpose: an earlier
    kernel reading dh and writing da, called with one buffer for both, made
    LLVM's runtime alias check fail and run the scalar, branchy loop; a
    ReLU network then paid ~25 us per step in branch mispredictions on
    32x128 activations (docs/performance.md).  Reading and writing one array
    at the same index keeps the loop vectorised.  Each column's sum runs
    over the rows in order, so any split into column blocks gives the same
    db bit for bit.
    """
    n = d.shape[0]
    zero = d.dtype.type(0)
    one = d.dtype.type(1)
    dbc = db[c0:c1]  # slices: see bias_activation_cols
    k = dbc.size
    for j in range(k):
        dbc[j] = zero
    for i in range(n):
        dr = d[i, c0:c1]
        hr = h[i, c0:c1]
        if code == RELU:
            for j in range(k):
                v = dr[j] if hr[j] > zero else zero
                dr[j] = v
                dbc[j] += v
        elif code == SIGMOID:
            for j in range(k):
                v = dr[j] * hr[j] * (one - hr[j])
                dr[j] = v
                dbc[j] += v
        elif code == TANH:
            for j in range(k):
                v = dr[j] * (one - hr[j] * hr[j])
                dr[j] = v
                dbc[j] += v
        else:
            for j in range(k):
                dbc[j] += dr[j]


@njit(**JIT)
def delta_in_place(d, h, code, db):
    """d = d * g'(h) in place and db = d.sum(axis=0) (after the product);
    d, h (n, k) C-contiguous, db (k,).  ``delta_cols`` over all columns."""
    _delta_cols(d, h, code, db, 0, d.shape[1])
