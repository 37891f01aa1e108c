"""Kernels for data-parallel training: the two halves of a step around an
all-reduce of the flat gradient buffer.

``gbuf`` holds the gradient (the layout of ``params``, P elements) followed
by ``TAIL`` totals, so that one all-reduce (sum) of ``gbuf`` combines the
ranks' gradients and totals:

* ``gbuf[P + WEIGHT]``: the row-weight total of the batch (rows when unweighted),
* ``gbuf[P + ROWS]``: the number of rows,
* ``gbuf[P + LOSS]``: the row-weighted loss sum (no L2 term),
* ``gbuf[P + CORRECT]``: rows classified right (arg-max for softmax, every
  label's decision for sigmoid),
* ``gbuf[P + FAILED]``: ranks that failed outside the kernels (set by Python).

``local_sums`` writes *unnormalised* sums (row weights are the raw sample
weights, or 1), so summing over ranks gives the union batch's sums;
``finish_step`` divides by the global weight total, adds the L2 term and
computes the optimizer update (in place: ``fastbp.distributed`` keeps a
copy to go back to when a new value is not finite), on every rank alike.
"""

import numpy as np
from numba import njit

from .config import JIT, JIT_INLINE
from .network import XENT_LABELS, backward, forward, output_loss, unowned, view2d
from .optim import BAD_GRADIENT, UPDATE_OK, fused_update

WEIGHT = 0
ROWS = 1
LOSS = 2
CORRECT = 3
FAILED = 4
TAIL = 5


@njit(**JIT)
def local_sums(data, perm, start, m, net, ws, gbuf):
    """Gradient sum of the rows ``perm[start:start + m]`` of the data into
    ``gbuf``; ``data``, ``net`` and ``ws`` are the records of
    ``records.py`` (the network's grads and alpha, and the workspace's swb,
    second buffers and scratch are not read).

    Gathers the rows into the workspace's xb / yb_int / yb_f, runs forward
    and the loss with row weights ``rw[:m]`` = the rows' sample weights
    (``sw``, or 1 when sw is empty), and backward without the L2 term, so
    ``gbuf[:P]`` receives ``sum_i w_i dloss_i/dparams``.  Writes the totals into the tail (FAILED
    set to 0).  When the loss is not finite the backward pass is skipped
    (the gradient part is then stale; the non-finite loss in the tail makes
    ``finish_step`` refuse the step).  Requires m >= 1.
    """
    # without reference counting: network.unowned
    X, y_int, y_f, sw, loss_kind = unowned(data)
    params, _, widths, codes, _ = unowned(net)
    xb, yb_int, yb_f, _, acts, delta_a, delta_b, rw, _, _, _, _ = unowned(ws)
    perm, gbuf = unowned(perm), unowned(gbuf)
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
    loss, correct = output_loss(loss_kind, out, yb_int[:m], yf, w, dz)
    if np.isfinite(loss):
        backward(params, gbuf[:P], widths, codes, 0.0, xv, acts, delta_a, delta_b)
    t = gbuf.dtype.type
    gbuf[P + WEIGHT] = t(total)
    gbuf[P + ROWS] = t(m)
    gbuf[P + LOSS] = loss
    gbuf[P + CORRECT] = t(correct)
    gbuf[P + FAILED] = t(0)


#: elements per chunk of ``finish_step``'s pass: the chunk of the gradient,
#: the parameters and the state (4 x 16 KiB in float32) is still in the
#: core's cache when the update reads what the scaling wrote
CHUNK = 4096


@njit(**JIT_INLINE)
def scale_chunk(params, g, lo, hi, alpha, inv, reg, l2):
    """g[lo:hi] = g * inv + reg * W in place (weights; with alpha 0, or for
    biases, g * inv); returns l2 plus sum(W[lo:hi] ** 2) when alpha is not 0,
    the sum taken in index order as one loop over the whole layer would."""
    gw = g[lo:hi]  # slices indexed from 0: the loops vectorise
    pw = params[lo:hi]
    if alpha != 0.0:
        for i in range(gw.size):
            l2 += pw[i] * pw[i]
        for i in range(gw.size):
            gw[i] = gw[i] * inv + reg * pw[i]
    else:
        for i in range(gw.size):
            gw[i] = gw[i] * inv
    return l2


@njit(**JIT)
def finish_step(net, gbuf, opt, nxt):
    """After the all-reduce: scale, regularise, check and update, in one
    pass over the parameters.

    ``net`` and ``opt`` are the network and optimizer records of
    ``records.py`` (the network's grads and codes are not read); ``nxt`` =
    (p_next, s1_next, s2_next), the second parameter and state buffers.
    ``gbuf`` holds the summed gradients and totals (see the module).  With S
    the summed weight total, the gradient becomes ``g / S + alpha / S * W``
    (the L2 term on weights, not biases, scikit-learn's scaling) and the
    optimizer (state s1, s2; ``step`` updates so far) computes the new
    parameters and state into p_next, s1_next, s2_next
    (``optim.fused_update``, which also tells whether every new value is
    finite); params, s1 and s2 are only read.  With ``nxt`` = (params, s1,
    s2) the update is made in place (``fastbp.distributed`` does so: a
    failed step there goes back to a copy and replays the good steps).  The
    scaling and the update go chunk by chunk (``CHUNK``), each chunk
    updated while in cache; the L2 sum of a chunk is taken before its
    update.

    Returns (status, batch_loss, step): status 0 success; 1 non-finite loss
    (or a zero weight total), 2 non-finite gradient, 3 non-finite update:
    the values written are then to be dropped (second buffers), or the
    caller's copy restored (in place).  batch_loss is the weighted mean
    loss plus the L2 term.
    """
    # without reference counting (network.unowned): 7 slices per chunk
    params, _, widths, _, alpha = unowned(net)
    opt_kind, hp, s1, s2, step = unowned(opt)
    p_next, s1_next, s2_next = unowned(nxt)
    gbuf = unowned(gbuf)
    P = params.size
    t = params.dtype.type
    S = gbuf[P + WEIGHT]
    loss_sum = gbuf[P + LOSS]
    if not np.isfinite(loss_sum) or not S > 0:
        return 1, loss_sum, step
    g = gbuf[:P]
    inv = t(1) / S
    reg = t(alpha) / S
    l2 = t(0)
    worst = UPDATE_OK
    off = 0
    for k in range(widths.size - 1):
        n_w = widths[k] * widths[k + 1]
        end = off + n_w + widths[k + 1]  # the layer's weights, then its biases
        lo = off
        while lo < end:
            # a chunk never straddles the weights and the biases: only the
            # weights take the L2 term
            hi = min(lo + CHUNK, off + n_w if lo < off + n_w else end)
            l2 = scale_chunk(params, g, lo, hi, alpha if lo < off + n_w else 0.0, inv, reg,
                             l2)
            if worst != BAD_GRADIENT:
                # a non-finite gradient element stays non-finite after the
                # scaling; BAD_GRADIENT anywhere wins over BAD_UPDATE (and
                # after it the update is not worth computing)
                status = fused_update(opt_kind, params[lo:hi], g[lo:hi], s1[lo:hi],
                                      s2[lo:hi], hp, step + 1, p_next[lo:hi],
                                      s1_next[lo:hi], s2_next[lo:hi])
                if status != UPDATE_OK:
                    worst = status
            lo = hi
        off = end
    batch_loss = loss_sum * inv + t(0.5) * reg * l2
    if not np.isfinite(batch_loss):
        return 1, batch_loss, step
    if worst != UPDATE_OK:
        return worst, batch_loss, step
    return 0, batch_loss, step + 1
