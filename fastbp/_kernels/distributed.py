"""Kernels for data-parallel training: the two halves of a step around an
all-reduce of the flat gradient buffer.

``gbuf`` holds the gradient (the layout of ``params``, P elements) followed
by ``TAIL`` totals, so that one all-reduce (sum) of ``gbuf`` combines the
ranks' gradients and totals:

* ``gbuf[P + WEIGHT]``: the row-weight total of the batch (rows when unweighted),
* ``gbuf[P + ROWS]``: the number of rows,
* ``gbuf[P + LOSS]``: the row-weighted loss sum (no L2 term),
* ``gbuf[P + CORRECT]``: rows whose arg-max matches the target,
* ``gbuf[P + FAILED]``: ranks that failed outside the kernels (set by Python).

``local_sums`` writes *unnormalised* sums (row weights are the raw sample
weights, or 1), so summing over ranks gives the union batch's sums;
``finish_step`` divides by the global weight total, adds the L2 term and
applies the optimizer update with a check, on every rank alike.
"""

import numpy as np
from numba import njit

from .config import JIT
from .losses import half_squared_error, softmax_xent_labels, softmax_xent_targets
from .network import XENT_LABELS, XENT_TARGETS, backward, forward, view2d
from .optim import all_finite, apply_update

WEIGHT = 0
ROWS = 1
LOSS = 2
CORRECT = 3
FAILED = 4
TAIL = 5


@njit(**JIT)
def local_sums(
    X, y_int, y_f, sw, perm, start, m, params, gbuf, widths, codes, loss_kind,
    xb, yb_int, yb_f, rw, acts, delta_a, delta_b,
):
    """Gradient sum of the rows ``perm[start:start + m]`` of X into ``gbuf``.

    Gathers the rows into xb / yb_int / yb_f, runs forward and the loss with
    row weights ``rw[:m]`` = the rows' sample weights (``sw``, or 1 when sw is
    empty), and backward without the L2 term, so ``gbuf[:P]`` receives
    ``sum_i w_i dloss_i/dparams``.  Writes the totals into the tail (FAILED
    set to 0).  When the loss is not finite the backward pass is skipped
    (the gradient part is then stale; the non-finite loss in the tail makes
    ``finish_step`` refuse the step).  Requires m >= 1.
    """
    d0 = widths[0]
    dl = widths[widths.size - 1]
    P = params.size
    xv = view2d(xb, 0, m, d0)
    yf = view2d(yb_f, 0, 0, dl)
    if loss_kind != XENT_LABELS:
        yf = view2d(yb_f, 0, m, dl)
    w = rw[:m]
    total = 0.0
    for r in range(m):
        src = perm[start + r]
        xr = xv[r]
        Xs = X[src]
        for j in range(d0):
            xr[j] = Xs[j]
        if loss_kind == XENT_LABELS:
            yb_int[r] = y_int[src]
        else:
            ys = y_f[src]
            yr = yf[r]
            for j in range(dl):
                yr[j] = ys[j]
        if sw.size > 0:
            w[r] = rw.dtype.type(sw[src])
            total += sw[src]
        else:
            w[r] = rw.dtype.type(1)
            total += 1.0
    out = forward(params, widths, codes, xv, acts)
    dz = view2d(delta_a, 0, m, dl)
    correct = 0
    if loss_kind == XENT_LABELS:
        loss, correct = softmax_xent_labels(out, yb_int[:m], w, dz)
    elif loss_kind == XENT_TARGETS:
        loss, correct = softmax_xent_targets(out, yf, w, dz)
    else:
        loss = half_squared_error(out, yf, w, dz)
    if np.isfinite(loss):
        backward(params, gbuf[:P], widths, codes, 0.0, xv, acts, delta_a, delta_b)
    t = gbuf.dtype.type
    gbuf[P + WEIGHT] = t(total)
    gbuf[P + ROWS] = t(m)
    gbuf[P + LOSS] = loss
    gbuf[P + CORRECT] = t(correct)
    gbuf[P + FAILED] = t(0)


@njit(**JIT)
def finish_step(params, gbuf, widths, alpha, opt_kind, hp, s1, s2, step, keep_p, keep_1,
                keep_2):
    """After the all-reduce: check, scale, regularise and update.

    ``gbuf`` holds the summed gradients and totals (see the module).  With S
    the summed weight total, the gradient becomes ``g / S + alpha / S * W``
    (the L2 term on weights, not biases, scikit-learn's scaling) and the
    optimizer ``opt_kind`` (state s1, s2; ``step`` updates so far) updates
    ``params``.  ``keep_p``, ``keep_1``, ``keep_2`` receive copies of params
    and the state used (s1 for SGD with momentum and Adam, s2 for Adam; pass
    the others empty) so that an update with a non-finite result is undone.

    Returns (status, batch_loss, step): status 0 success, 1 non-finite loss
    (or a zero weight total), 2 non-finite gradient, 3 non-finite update
    (undone); batch_loss is the weighted mean loss plus the L2 term.
    """
    P = params.size
    t = params.dtype.type
    S = gbuf[P + WEIGHT]
    loss_sum = gbuf[P + LOSS]
    if not np.isfinite(loss_sum) or not S > 0:
        return 1, loss_sum, step
    g = gbuf[:P]
    if not all_finite(g):
        return 2, loss_sum, step
    inv = t(1) / S
    reg = t(alpha) / S
    l2 = t(0)
    off = 0
    # loops over slices: they vectorise (indexing from ``off`` measured 5x slower)
    for k in range(widths.size - 1):
        n_w = widths[k] * widths[k + 1]
        gw = g[off : off + n_w]
        pw = params[off : off + n_w]
        if alpha != 0.0:
            for i in range(n_w):
                l2 += pw[i] * pw[i]
            for i in range(n_w):
                gw[i] = gw[i] * inv + reg * pw[i]
        else:
            for i in range(n_w):
                gw[i] = gw[i] * inv
        off += n_w
        gb = g[off : off + widths[k + 1]]
        for i in range(gb.size):
            gb[i] = gb[i] * inv
        off += widths[k + 1]
    batch_loss = loss_sum * inv + t(0.5) * reg * l2
    if not np.isfinite(batch_loss):
        return 1, batch_loss, step
    keep_p[:] = params
    if keep_1.size:
        keep_1[:] = s1
    if keep_2.size:
        keep_2[:] = s2
    apply_update(opt_kind, params, g, s1, s2, hp, step + 1)
    ok = all_finite(params)
    if ok and keep_1.size:
        ok = all_finite(s1)
    if ok and keep_2.size:
        ok = all_finite(s2)
    if not ok:
        params[:] = keep_p
        if keep_1.size:
            s1[:] = keep_1
        if keep_2.size:
            s2[:] = keep_2
        return 3, batch_loss, step
    return 0, batch_loss, step + 1

