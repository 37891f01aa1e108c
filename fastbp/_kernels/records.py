"""The records the step and epoch kernels take (issue 16, "Shape of the code").

Before them ``train_step`` took 24 positional arguments, ``train_epoch`` 32
and ``train_epoch_sparse`` 33, and every caller spelled all of them in the
right order.  Now they take a handful: a few scalars and these records, each
built here and nowhere else, and unpacked by the kernels on their first lines
in the order given here.

``network``
    (params, grads, widths, codes, alpha): the flat parameter and gradient
    buffers of the parameters' dtype, the layer widths d_0 .. d_L and
    activation codes (int64, read-only where the model holds them) and the
    L2 strength (float64).  Layout: ``_kernels/network.py``.
``data``
    (X, y_int, y_f, sw, loss_kind): the rows (2-D, C-contiguous), their
    labels (int64) or target rows (2-D, the parameters' dtype), their
    weights (float64; size 0 for none) and the loss, which says whether the
    labels or the target rows are read (the other is size 0).  A step takes
    the same record for its batch.  The sparse epoch's ``sparse_data``
    record has X as its three CSR arrays (data, indices, indptr) instead.
``optimizer``
    (kind, hp, s1, s2, step): the optimizer's kind (``_kernels/optim.py``),
    its checked hyper-parameters (float64), its two state buffers (size 0
    when unused) and the number of updates so far.
``workspace``
    (xb, yb_int, yb_f, swb, acts, delta_a, delta_b, rw, p_next, s1_next,
    s2_next, scratch): the batch buffers an epoch gathers into, the
    activations and the two ping-pong gradient buffers, the loss's row
    weights, the second parameter and state buffers (the steps of a short
    epoch keep their old values there, a longer one its copy,
    ``network.train_epoch``), and the threads' scratch values
    (``network.train_step``).

Why plain tuples and not named tuples or structrefs: Numba's dispatcher
types a plain tuple of arrays in its C fast path, a named tuple through
Python.  With six arrays a call took 0.34 us as arguments, 0.50 us as a
tuple and 1.12 us as a named tuple (``timeit``, min of 7, 2026-12-07); four
named records would cost ``train_on_batch`` about 3 us a call, its whole
budget (issue 16, item 5).  Inside a kernel a tuple is a struct whose
unpacking costs nothing.
"""


def network(params, grads, widths, codes, alpha):
    """The network record (see the module)."""
    return (params, grads, widths, codes, float(alpha))


def data(X, y_int, y_f, sw, loss_kind):
    """The data record, or a step's batch record (see the module)."""
    return (X, y_int, y_f, sw, int(loss_kind))


def sparse_data(values, indices, indptr, y_int, y_f, sw, loss_kind):
    """The sparse epoch's data record: X as CSR arrays (see the module)."""
    return (values, indices, indptr, y_int, y_f, sw, int(loss_kind))


def optimizer(kind, hp, s1, s2, step):
    """The optimizer record (see the module)."""
    return (int(kind), hp, s1, s2, int(step))


#: the workspace record's fields, as ``MLP._workspace`` names its buffers
WORKSPACE = ("xb", "yb_int", "yb_f", "swb", "acts", "delta_a", "delta_b", "rw", "p_next",
             "s1_next", "s2_next", "scratch")


def workspace(ws):
    """The workspace record of the dict of buffers ``ws`` (``MLP._workspace``)."""
    return tuple(ws[k] for k in WORKSPACE)
