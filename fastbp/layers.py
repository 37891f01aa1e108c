"""Drop-in NumPy-style layer functions.

Each function checks its arguments, picks the working dtype (float32 stays
float32, float64 stays float64, integers work in float64 as in NumPy),
allocates the results and calls one compiled kernel.  Any memory layout is
accepted: non-contiguous input is copied once, here.
"""

import numpy as np

from . import _validation as v
from ._kernels import activations as _act
from ._kernels import dense as _dense
from ._kernels import losses as _loss

__all__ = [
    "activation",
    "activation_grad",
    "dense_backward",
    "dense_forward",
    "half_squared_error",
    "sigmoid_cross_entropy",
    "softmax",
    "softmax_cross_entropy",
]


def _check_layer(x, W, b, xname="x"):
    x = v.as_array(x, xname)
    W = v.as_array(W, "W")
    b = None if b is None else v.as_array(b, "b")
    dt = v.work_dtype(x, W, b)
    x = v.as_float(x, xname, 2, dt)
    W = v.as_float(W, "W", 2, dt)
    v.check_nonempty(x, xname)
    if W.shape[0] != x.shape[1]:
        raise ValueError(
            f"W must have shape ({x.shape[1]}, d_out) to match {xname} of shape "
            f"{x.shape}; got W of shape {W.shape}"
        )
    if W.shape[1] == 0:
        raise ValueError("W must have at least one column (d_out >= 1); got shape "
                         f"{W.shape}")
    if b is None:
        b = np.zeros(W.shape[1], dtype=dt)
    else:
        b = v.as_float(b, "b", 1, dt)
        if b.shape[0] != W.shape[1]:
            raise ValueError(f"b must have shape ({W.shape[1]},) to match W of shape "
                             f"{W.shape}; got {b.shape}")
    return x, W, b, dt


def dense_forward(x, W, b=None, activation="identity"):
    """Dense layer forward pass ``g(x @ W + b)``, fused in one kernel.

    Parameters
    ----------
    x : array_like, shape (n, d_in)
        Input rows.
    W : array_like, shape (d_in, d_out)
        Weights.
    b : array_like, shape (d_out,), optional
        Bias; zero when omitted.
    activation : {"identity", "relu", "sigmoid", "tanh"}
        The activation g ("logistic" and "linear" are accepted aliases).

    Returns
    -------
    h : ndarray, shape (n, d_out)
        Layer output, float32 if all inputs are float32, else float64.
    """
    code = v.as_activation(activation)
    x, W, b, dt = _check_layer(x, W, b)
    out = np.empty((x.shape[0], W.shape[1]), dtype=dt)
    _dense.dense_forward(x, W, b, code, out)
    return out


def dense_backward(dh, x, W, h=None, activation="identity"):
    """Backward pass of ``h = g(x @ W + b)``.

    Parameters
    ----------
    dh : array_like, shape (n, d_out)
        Gradient of the loss with respect to the layer output h.
    x : array_like, shape (n, d_in)
        The layer input of the forward pass.
    W : array_like, shape (d_in, d_out)
        Weights.
    h : array_like, shape (n, d_out), optional
        The layer output of the forward pass; g' is computed from it.
        Required unless the activation is "identity".
    activation : str
        The activation of the forward pass.

    Returns
    -------
    dx : ndarray, shape (n, d_in)
        ``(dh * g'(h)) @ W.T``.
    dW : ndarray, shape (d_in, d_out)
        ``x.T @ (dh * g'(h))``, summed over rows.
    db : ndarray, shape (d_out,)
        ``(dh * g'(h)).sum(axis=0)``.
    """
    code = v.as_activation(activation)
    dh_a = v.as_array(dh, "dh")
    h_a = None if h is None else v.as_array(h, "h")
    x, W, _, dt = _check_layer(x, W, None)
    dt = v.work_dtype(dh_a, x, W, h_a)
    x = np.ascontiguousarray(x, dtype=dt)
    W = np.ascontiguousarray(W, dtype=dt)
    shape = (x.shape[0], W.shape[1])
    dh = v.as_float(dh_a, "dh", 2, dt)
    if dh.shape != shape:
        raise ValueError(f"dh must have shape {shape} (rows of x, columns of W); got {dh.shape}")
    if h_a is None:
        if code != _act.IDENTITY:
            raise ValueError(f"h (the forward output) is required for activation "
                             f"{activation!r}; got None")
        h = dh  # not read by the identity derivative
    else:
        h = v.as_float(h_a, "h", 2, dt)
        if h.shape != shape:
            raise ValueError(f"h must have shape {shape} like dh; got {h.shape}")
    da = dh.copy()  # the kernel works in place; the caller's dh stays as it was
    dx = np.empty(x.shape, dtype=dt)
    dW = np.empty(W.shape, dtype=dt)
    db = np.empty(W.shape[1], dtype=dt)
    _dense.dense_backward(da, x, W, h, code, dx, dW, db, True)
    return dx, dW, db


def softmax_cross_entropy(logits, y, sample_weight=None):
    """Mean softmax cross-entropy and its gradient, in one fused pass.

    Parameters
    ----------
    logits : array_like, shape (n, c)
        Scores before the softmax.
    y : array_like, shape (n,) or (n, c)
        Integer class labels in [0, c), or target rows (one-hot or soft
        probabilities).
    sample_weight : array_like, shape (n,), optional
        Row weights; the loss becomes the weighted mean.

    Returns
    -------
    loss : float32 or float64 scalar
        ``mean_i(logsumexp(logits_i) - sum_j y_ij logits_ij)``, computed
        around each row's maximum (never ``log(0)``).
    dlogits : ndarray, shape (n, c)
        Gradient of ``loss`` with respect to ``logits``:
        ``(softmax(logits) - Y) / n`` for rows that sum to 1.
    """
    z = v.as_array(logits, "logits")
    ya = v.as_array(y, "y")
    if ya.ndim not in (1, 2):
        raise ValueError("y must be 1-D integer labels (n,) or 2-D target rows (n, c); "
                         f"got {ya.ndim}-D with shape {ya.shape}")
    soft = ya.ndim == 2
    # integer or bool target rows (one-hot) take the dtype of the logits
    dt = v.work_dtype(z, ya) if soft and ya.dtype.kind == "f" else v.work_dtype(z)
    z = v.as_float(z, "logits", 2, dt)
    v.check_nonempty(z, "logits")
    n, c = z.shape
    if c == 0:
        raise ValueError("logits must have at least one column (class)")
    w = np.empty(n, dtype=dt)
    _loss.row_weights(n, v.as_sample_weight(sample_weight, n), w)
    dz = np.empty_like(z)
    if soft:
        t = v.as_float(ya, "y", 2, dt)
        if t.shape != z.shape:
            raise ValueError(f"y as target rows must have the shape of logits {z.shape}; "
                             f"got {t.shape}")
        if (t < 0).any():
            raise ValueError(f"y as target rows must be non-negative (probabilities); "
                             f"got minimum {t.min()}")
        v.check_target_rows(t, "y")
        loss, _ = _loss.softmax_xent_targets(z, t, w, dz)
    else:
        labels = v.as_labels(ya, "y", n, c)
        loss, _ = _loss.softmax_xent_labels(z, labels, w, dz)
    return dt.type(loss), dz


def sigmoid_cross_entropy(logits, Y, sample_weight=None):
    """Mean binary cross-entropy of sigmoid outputs and its gradient, fused.

    For binary (k == 1) and multilabel (k labels per row) classification.

    Parameters
    ----------
    logits : array_like, shape (n, k)
        Scores before the sigmoid.
    Y : array_like, shape (n, k), or (n,) when k == 1
        Targets in [0, 1]: a 0/1 (or bool) indicator matrix, or
        probabilities.
    sample_weight : array_like, shape (n,), optional
        Row weights; the loss becomes the weighted mean over rows.

    Returns
    -------
    loss : float32 or float64 scalar
        ``mean_i sum_j (softplus(z_ij) - Y_ij z_ij)``, i.e.
        ``-mean_i sum_j (Y_ij log p_ij + (1 - Y_ij) log(1 - p_ij))`` with
        ``p = sigmoid(z)``: averaged over rows, summed over the k labels, as
        scikit-learn's MLP computes it.  ``softplus(a) = max(a, 0) +
        log1p(exp(-|a|))``, so no exp overflows and no ``log(0)`` occurs.
    dlogits : ndarray, shape (n, k)
        Gradient of ``loss`` with respect to ``logits``:
        ``(sigmoid(logits) - Y) / n`` (rows weighted by
        ``sample_weight / sample_weight.sum()`` when given).

    The dtype of ``logits`` is kept (float32 or float64; integers work in
    float64); ``Y`` is converted to it.
    """
    z = v.as_array(logits, "logits")
    ya = v.as_array(Y, "Y")
    dt = v.work_dtype(z)  # float32 logits stay float32 whatever the dtype of Y
    z = v.as_float(z, "logits", 2, dt)
    v.check_nonempty(z, "logits")
    n, k = z.shape
    if k == 0:
        raise ValueError(f"logits must have at least one column (label); got shape {z.shape}")
    if ya.ndim == 1 and k == 1:
        ya = ya.reshape(-1, 1)
    t = v.as_float(ya, "Y", 2, dt) if ya.ndim == 2 else None
    if t is None or t.shape != z.shape:
        also = f" or ({n},)" if k == 1 else ""
        raise ValueError(f"Y must have the shape of logits {z.shape}{also}; got shape "
                         f"{np.shape(Y)}")
    v.check_unit_interval(t, "Y")
    w = np.empty(n, dtype=dt)
    _loss.row_weights(n, v.as_sample_weight(sample_weight, n), w)
    dz = np.empty_like(z)
    loss, _ = _loss.sigmoid_xent(z, t, w, dz)
    return dt.type(loss), dz


def half_squared_error(y_pred, y_true, sample_weight=None):
    """Regression loss ``sum((y_pred - y_true)**2) / (2 n)`` and its gradient.

    This is half the squared error per row, averaged over rows (scikit-learn's
    MLP loss for one output); its gradient is ``(y_pred - y_true) / n``.

    Parameters
    ----------
    y_pred, y_true : array_like, shape (n,) or (n, k)
    sample_weight : array_like, shape (n,), optional

    Returns
    -------
    loss : scalar of the working dtype
    grad : ndarray, shape of y_pred
    """
    p = v.as_array(y_pred, "y_pred")
    t = v.as_array(y_true, "y_true")
    dt = v.work_dtype(p, t)
    if p.ndim not in (1, 2):
        raise ValueError(f"y_pred must be 1-D (n,) or 2-D (n, k); got {p.ndim}-D with "
                         f"shape {p.shape}")
    shape = p.shape
    v.check_nonempty(p, "y_pred")
    p2 = v.as_float(p.reshape(p.shape[0], 1) if p.ndim == 1 else p, "y_pred", 2, dt)
    if p2.shape[1] == 0:
        raise ValueError(f"y_pred must have at least one column; got shape {shape}")
    if t.shape != shape:
        raise ValueError(f"y_true must have the shape of y_pred {shape}; got {t.shape}")
    t2 = v.as_float(t.reshape(p2.shape), "y_true", 2, dt)
    n = p2.shape[0]
    w = np.empty(n, dtype=dt)
    _loss.row_weights(n, v.as_sample_weight(sample_weight, n), w)
    grad = np.empty_like(p2)
    loss = _loss.half_squared_error(p2, t2, w, grad)
    return dt.type(loss), grad.reshape(shape)


def _as_2d(a, name):
    arr = v.as_array(a, name)
    dt = v.work_dtype(arr)
    out = v.as_float(arr, name, arr.ndim, dt, finite=False).copy()
    if out.ndim == 0:
        return out, out.reshape(1, 1)
    return out, out.reshape(-1, out.shape[-1] if out.shape[-1] else 1)


def activation(a, name="relu"):
    """Element-wise activation ``g(a)`` for any shape; returns a new array."""
    code = v.as_activation(name, "name")
    out, flat = _as_2d(a, "a")
    if out.size:
        _act.activate(flat, code)
    return out


def activation_grad(h, name="relu"):
    """Derivative ``g'(a)`` computed from the output ``h = g(a)``.

    identity: 1; relu: 1 where h > 0 else 0; sigmoid: h (1 - h);
    tanh: 1 - h**2.  Returns a new array of h's shape and dtype.
    """
    code = v.as_activation(name, "name")
    hh, flat = _as_2d(h, "h")
    if hh.size:
        _act.derivative(flat, code, flat)
    return hh


def softmax(logits):
    """Row-wise softmax of a (n, c) array, computed around each row's max."""
    z = v.as_array(logits, "logits")
    z = v.as_float(z, "logits", 2, v.work_dtype(z), finite=False).copy()
    if z.size:
        _loss.softmax_rows(z)
    return z
