"""Kernels for a sparse first layer: X in CSR form, the rest of the network dense.

A CSR matrix of ``m`` rows is three arrays: ``data`` (values), ``indices``
(int64 column of each value) and ``indptr`` (int64, ``m + 1``): row ``r``
holds ``data[indptr[r]:indptr[r + 1]]`` at columns
``indices[indptr[r]:indptr[r + 1]]``.  ``indptr`` need not start at 0, so a
slice ``indptr[s:e + 1]`` of a larger matrix is rows ``s .. e - 1`` of it
with no copy.  Duplicate columns within a row are summed, unsorted columns
are fine.  The callers have checked every index (kernels do no bounds
checks).

Only the first layer sees X:

    forward    A_1 = X @ W_0 + b_0          (csr_matmul: rows of W_0 scaled and summed)
    backward   dW_0 = X.T @ dA_1            (csr_weight_grad: rows of dA_1 scattered
                                             into the rows of dW_0 named by the columns)

and no gradient with respect to X is formed.  Layers 1 .. L are run by the
dense whole-network functions of network.py, called on the sub-network that
starts at layer 1 (its widths, codes, parameters and activations are tail
slices of the full ones, laid out identically).  These entry points are
separate functions, so a user who never passes sparse X never compiles them
and the dense kernels are not changed by them.
"""

import numpy as np
from numba import njit, prange

from .blas import matmul
from .config import JIT
from .dense import bias_activation, delta_in_place
from .linking import linked
from .network import (
    IN_PLACE_MIN_STEPS,
    JIT_INLINE,
    JIT_PARALLEL,
    _update_block,
    backward,
    epoch_buffers,
    forward,
    forward_loss,
    gather_targets,
    l2_alpha,
    step_status,
    unowned,
    view2d,
)
from .optim import adopt_update


@njit(**JIT)
def csr_matmul(data, indices, indptr, W, out):
    """out = X @ W for the CSR rows X (data, indices, indptr).

    W (d_in, d_out) C-contiguous, out (m, d_out) C-contiguous with
    m = indptr.size - 1; every index in [0, d_in).  Each output row is the
    sum of the rows of W named by its columns, scaled by the values, added
    in storage order (deterministic); the inner loop runs over d_out.
    """
    m, d = out.shape
    zero = out.dtype.type(0)
    for r in range(m):
        o = out[r]
        for j in range(d):
            o[j] = zero
        for k in range(indptr[r], indptr[r + 1]):
            v = data[k]
            w = W[indices[k]]
            for j in range(d):
                o[j] += v * w[j]


@njit(**JIT)
def csr_weight_grad(data, indices, indptr, da, W, reg, dW, acc):
    """dW = X.T @ da (+ reg * W when reg != 0) for the CSR rows X.

    da (m, d_out), W and dW (d_in, d_out), all C-contiguous, one dtype;
    reg a scalar of that dtype; acc (d_out,) scratch.  dW is overwritten:
    first zero (or reg * W), then ``dW[indices[k], :] += data[k] * da[r, :]``
    for the entries k of each row r in order (deterministic; the inner loops
    run over d_out).  Returns sum(W**2) when reg != 0 (for the L2 term of
    the loss), else 0; it is summed per column in ``acc`` first, so that
    the loop vectorises without reordering any floating-point sum.
    """
    m, d = da.shape
    zero = dW.dtype.type(0)
    ss = zero
    if reg != zero:
        for j in range(d):
            acc[j] = zero
        for i in range(W.shape[0]):
            w = W[i]
            o = dW[i]
            for j in range(d):
                o[j] = reg * w[j]
                acc[j] += w[j] * w[j]
        for j in range(d):
            ss += acc[j]
    else:
        flat = dW.reshape(dW.size)
        for i in range(flat.size):
            flat[i] = zero
    for r in range(m):
        g = da[r]
        for k in range(indptr[r], indptr[r + 1]):
            v = data[k]
            o = dW[indices[k]]
            for j in range(d):
                o[j] += v * g[j]
    return ss


@njit(**JIT)
def gather_rows(data, indices, indptr, rows, bdata, bindices, bindptr):
    """Copy the CSR rows ``rows`` (in that order) of X into the buffers
    bdata / bindices / bindptr as a CSR batch starting at 0.

    The buffers must hold at least the batch's entries and rows.size + 1
    row pointers.  Returns the number of entries copied.
    """
    pos = 0
    bindptr[0] = 0
    for r in range(rows.size):
        src = rows[r]
        for k in range(indptr[src], indptr[src + 1]):
            bdata[pos] = data[k]
            bindices[pos] = indices[k]
            pos += 1
        bindptr[r + 1] = pos
    return pos


@njit(**JIT_INLINE)
def first_layer(params, widths, codes, data, indices, indptr, acts):
    """H_1 = g(X @ W_0 + b_0) into the front of acts; returns the (m, d_1) view."""
    m = indptr.size - 1
    d0 = widths[0]
    d1 = widths[1]
    h1 = view2d(acts, 0, m, d1)
    csr_matmul(data, indices, indptr, view2d(params, 0, d0, d1), h1)
    bias_activation(h1, params[d0 * d1 : d0 * d1 + d1], codes[0])
    return h1


@njit(**JIT)
def forward_sparse(params, widths, codes, data, indices, indptr, acts):
    """Network outputs H_L for the CSR rows X; arguments as in network.forward
    with X given as (data, indices, indptr).  Returns an (m, d_L) view of acts."""
    m = indptr.size - 1
    h1 = first_layer(params, widths, codes, data, indices, indptr, acts)
    p1 = widths[0] * widths[1] + widths[1]
    return forward(params[p1:], widths[1:], codes[1:], h1, acts[m * widths[1]:])


@njit(**JIT_INLINE)
def forward_loss_sparse(params, widths, codes, loss_kind, data, indices, indptr,
                        y_int, y_f, sw, acts, dz_buf, rw):
    """network.forward_loss for CSR rows X: the first layer here, the rest and
    the loss by forward_loss on the sub-network from layer 1.  Returns
    (loss, n_correct, h1)."""
    m = indptr.size - 1
    h1 = first_layer(params, widths, codes, data, indices, indptr, acts)
    p1 = widths[0] * widths[1] + widths[1]
    loss, correct = forward_loss(params[p1:], widths[1:], codes[1:], loss_kind, h1,
                                 y_int, y_f, sw, acts[m * widths[1]:], dz_buf, rw)
    return loss, correct, h1


@njit(**JIT_INLINE)
def backward_tail(params, grads, widths, codes, alpha, m, h1, acts, delta_a, delta_b):
    """The backward pass of layers 1 .. L (network.backward on the
    sub-network from layer 1) and the first layer's delta: fills grads
    but for W_0.  Returns (the L2 term of layers 1 .. L, dA_1 (m, d_1), a
    free delta buffer of at least m d_1 values).

    network.backward leaves dA_1 in ``delta_a`` after an even number of
    buffer swaps (one per layer below its top, L - 2 in all) and in
    ``delta_b`` otherwise; with no hidden layer (L == 1) the output gradient
    is still in ``delta_a``.  (The sparse-versus-dense tests in
    tests/test_sparse.py fail if that convention changes.)
    """
    L = widths.size - 1
    d0 = widths[0]
    d1 = widths[1]
    p1 = d0 * d1 + d1
    l2 = backward(params[p1:], grads[p1:], widths[1:], codes[1:], alpha, h1,
                  acts[m * d1:], delta_a, delta_b)
    if L == 1 or (L - 2) % 2 == 0:
        cur = delta_a
        other = delta_b
    else:
        cur = delta_b
        other = delta_a
    if L == 1:
        da = view2d(cur, 0, m, d1)
    else:
        # dH_1 = dA_2 @ W_1.T
        d2 = widths[2]
        da = view2d(other, 0, m, d1)
        matmul(view2d(cur, 0, m, d2), view2d(params, p1, d1, d2).T, da)
    delta_in_place(da, h1, codes[0], grads[d0 * d1 : p1])
    # with L == 1, ``other`` is unused; else ``cur`` (dA_2) is no longer needed
    return l2, da, other if L == 1 else cur


@njit(**JIT_INLINE)
def backward_sparse(params, grads, widths, codes, alpha, data, indices, indptr, h1,
                    acts, delta_a, delta_b):
    """network.backward for CSR rows X, after forward_loss_sparse; fills grads
    and returns the L2 term of the loss (``backward_tail``, then dW_0 by
    ``csr_weight_grad``)."""
    m = indptr.size - 1
    d0 = widths[0]
    d1 = widths[1]
    l2, da, free = backward_tail(params, grads, widths, codes, alpha, m, h1, acts, delta_a,
                                 delta_b)
    reg = params.dtype.type(alpha / m)
    ss = csr_weight_grad(data, indices, indptr, da, view2d(params, 0, d0, d1), reg,
                         view2d(grads, 0, d0, d1), free[:d1])
    return l2 + params.dtype.type(0.5) * reg * ss


@njit(**JIT_INLINE)
def batch_columns(bindices, bindptr, m, d0, cptr, crow, cent):
    """The batch's entries by column: column c's entries are e in
    [cptr[c], cptr[c + 1]), each from batch row crow[e], entry cent[e] of
    the CSR batch, in the order of the CSR batch (row, then storage): a
    stable counting sort, so that ``first_layer_rows`` adds each dW_0
    element's terms in ``csr_weight_grad``'s order."""
    for c in range(d0 + 1):
        cptr[c] = 0
    for k in range(bindptr[0], bindptr[m]):
        cptr[bindices[k] + 1] += 1
    for c in range(d0):
        cptr[c + 1] += cptr[c]
    for r in range(m):
        for k in range(bindptr[r], bindptr[r + 1]):
            e = cptr[bindices[k]]
            crow[e] = r
            cent[e] = k
            cptr[bindices[k]] = e + 1
    for c in range(d0, 0, -1):  # cptr[c] ended at the start of c + 1
        cptr[c] = cptr[c - 1]
    cptr[0] = 0


#: rows of W_0 that ``first_layer_rows`` takes through its three passes
#: while they are in cache
FIRST_LAYER_ROWS = 256


@njit(**JIT)
def first_layer_rows(t, nt, params, grads, d1, reg, da, bdata, cptr, crow, cent, acc2d, opt,
                     nxt, scratch):
    """Thread block t of nt of the first layer's weights in a sparse step:
    for each FIRST_LAYER_ROWS rows of its rows of W_0 (d_0 = cptr.size - 1
    rows of d_1), dW_0 = reg * W_0 (with the column sums of W_0 ** 2 in
    acc2d[t]) or 0, then the batch's terms X^T dA_1 of those rows
    (``batch_columns``), then their update (``network.update_block``,
    ``opt``, ``nxt``), all while the rows are in cache.  The values are
    those of ``csr_weight_grad`` and one update over all parameters, bit
    for bit: each element's terms in the same order.  Writes the block's
    sum of its column sums to scratch[t] and its update severity to
    scratch[nt + t].

    Why: ``csr_weight_grad`` wrote all of dW_0 and the update then read it,
    two passes over d_0 d_1 values that a sparse step otherwise does not
    need (0.5-0.8 ms of a 2.2 ms step at 20000-100-10 b200)."""
    d0 = cptr.size - 1
    zero = params.dtype.type(0)
    reg_ = params.dtype.type(reg)
    acc = acc2d[t]
    for j in range(d1):
        acc[j] = zero
    worst = 0
    # blocks dealt round-robin: the batch's entries crowd in a few columns
    # (word frequencies), and whole halves of W_0 would give one thread
    # most of the scatter
    for c0 in range(t * FIRST_LAYER_ROWS, d0, nt * FIRST_LAYER_ROWS):
        c1 = min(c0 + FIRST_LAYER_ROWS, d0)
        W = view2d(params, c0 * d1, c1 - c0, d1)
        dW = view2d(grads, c0 * d1, c1 - c0, d1)
        if reg_ != zero:
            for i in range(c1 - c0):
                w = W[i]
                o = dW[i]
                for j in range(d1):
                    o[j] = reg_ * w[j]
                    acc[j] += w[j] * w[j]
        else:
            flat = grads[c0 * d1:c1 * d1]
            for i in range(flat.size):
                flat[i] = zero
        for c in range(c0, c1):
            o = dW[c - c0]
            for e in range(cptr[c], cptr[c + 1]):
                v = bdata[cent[e]]
                g = da[crow[e]]
                for j in range(d1):
                    o[j] += v * g[j]
        worst = max(worst, _update_block(c0 * d1, c1 * d1, params, grads, opt, nxt))
    ss = zero
    for j in range(d1):
        ss += acc[j]
    scratch[t] = ss
    scratch[nt + t] = params.dtype.type(worst)


_first_layer_rows = linked("sparse.first_layer_rows")


@njit(**JIT_PARALLEL)
def first_layer_par(nt, params, grads, d1, reg, da, bdata, cptr, crow, cent, acc2d, opt, nxt,
                    scratch):
    """``first_layer_rows`` on nt threads, a block of rows each: its loop
    body a call of the leaf (a parallel function compiles in about 1 s,
    network.layer_par)."""
    for t in prange(nt):
        # (prange's index is unsigned; the leaf's signature says int64)
        _first_layer_rows(np.int64(t), nt, params, grads, d1, reg, da, bdata, cptr, crow,
                          cent, acc2d, opt, nxt, scratch)


_first_layer_par = linked("sparse.first_layer_par")


@njit(**JIT)
def loss_and_grad_sparse(params, grads, widths, codes, loss_kind, alpha,
                         data, indices, indptr, y_int, y_f, sw, acts, delta_a, delta_b, rw):
    """network.loss_and_grad with X as CSR rows (data, indices, indptr).
    Returns (loss, n_correct)."""
    loss, correct, h1 = forward_loss_sparse(params, widths, codes, loss_kind, data, indices,
                                            indptr, y_int, y_f, sw, acts, delta_a, rw)
    l2 = backward_sparse(params, grads, widths, codes, l2_alpha(alpha, indptr.size - 1, sw),
                         data, indices, indptr, h1, acts, delta_a, delta_b)
    return loss + l2, correct


@njit(**JIT_INLINE)
def train_step_sparse(params, grads, widths, codes, loss_kind, alpha, sbatch, m, y_int, y_f,
                      sw, opt_kind, hp, s1, s2, step, acts, delta_a, delta_b, rw, p_next,
                      s1_next, s2_next, nt, scratch):
    """network.train_step with X as the CSR batch of m rows in ``sbatch``
    (``train_epoch_sparse``): the same checks and statuses (0 success, 1
    non-finite loss, 2 non-finite gradient, 3 non-finite update; then the
    step's values are to be dropped), and the same one-pass checked update
    (``optim.fused_update``): in place when p_next is params; in place
    with the old values kept in the second buffers when ``opt_kind`` has
    JOURNAL added, and then copied back here if the step fails.

    On nt > 1 threads (and at least nt rows) the first layer's weights go
    through ``first_layer_rows`` (dW_0 and its update a block of rows at a
    time, the blocks dealt to the threads; ``scratch``: 2 nt values), the
    other parameters after them; on one, dW_0 is computed whole
    (``csr_weight_grad``) and then every parameter updated.  Each element
    of the update is computed as one thread computes it: the same
    parameters on any thread count.  With threads the sum of W_0 ** 2 of
    the loss's L2 term is added per thread, so the loss may differ in its
    last bits from one thread count to another, and a loss made
    non-finite by the L2 term is found after the update, which is then
    undone as a failed update is.
    Returns (status, loss, n_correct, step)."""
    bdata, bindices, bindptr, cptr, crow, cent = sbatch
    indptr = bindptr[:m + 1]
    loss, c, h1 = forward_loss_sparse(params, widths, codes, loss_kind, bdata, bindices,
                                      indptr, y_int, y_f, sw, acts, delta_a, rw)
    if not np.isfinite(loss):
        return 1, loss, c, step
    a = l2_alpha(alpha, m, sw)
    d0 = widths[0]
    d1 = widths[1]
    opt = (opt_kind, hp, s1, s2, step + 1)
    nxt = (p_next, s1_next, s2_next)
    # (one call of the inlined backward_tail for both ways below: two
    # doubled the cold compile of a sparse fit, 7.1 -> 10.7 s of CPU)
    l2, da, free = backward_tail(params, grads, widths, codes, a, m, h1, acts, delta_a,
                                 delta_b)
    if nt > 1 and m >= nt:
        batch_columns(bindices, indptr, m, d0, cptr, crow, cent)
        _first_layer_par(nt, params, grads, d1, a / m, da, bdata, cptr, crow, cent,
                         view2d(free, 0, nt, d1), opt, nxt, scratch)
        ss = params.dtype.type(0)
        worst = 0
        for t in range(nt):
            ss += scratch[t]
            worst = max(worst, int(scratch[nt + t]))
        worst = max(worst, _update_block(d0 * d1, params.size, params, grads, opt, nxt))
        loss += l2 + params.dtype.type(0.5) * params.dtype.type(a / m) * ss
    else:
        # one thread: dW_0 in one pass (backward_sparse's), then one update
        # of every parameter; the blocks of first_layer_rows measured
        # 1.03-1.13x this on one thread (their streams restart every
        # block), and 0.76-1.00x the split update alone on two
        reg = params.dtype.type(a / m)
        ss = csr_weight_grad(bdata, bindices, indptr, da, view2d(params, 0, d0, d1), reg,
                             view2d(grads, 0, d0, d1), free[:d1])
        loss += l2 + params.dtype.type(0.5) * reg * ss
        if not np.isfinite(loss):  # the L2 term overflowed: before the update
            return 1, loss, c, step
        worst = _update_block(0, params.size, params, grads, opt, nxt)
    status = step_status(loss, worst, opt_kind, hp, params, s1, s2, p_next, s1_next, s2_next)
    if status != 0:
        return status, loss, c, step
    return 0, loss, c, step + 1


@njit(**JIT)
def train_epoch_sparse(sdata, perm, batch_size, net, opt, ws, sbatch, loss_sum0, nt):
    """network.train_epoch for X given as CSR rows: ``sdata`` is the sparse
    data record and ``net``, ``opt``, ``ws`` the other records of
    ``records.py`` (the workspace's xb and scratch are not read).

    Each step gathers its rows ``perm[start:start + m]`` into the CSR batch
    buffers ``sbatch`` = (bdata, bindices, bindptr, cptr, crow, cent): room
    for the largest batch's entries, batch_size + 1 row pointers, and the
    batch by columns (``batch_columns``: d_0 + 1 pointers, two int64 per
    entry); and its targets as train_epoch does.  The update is made in place as in train_epoch: a
    call of IN_PLACE_MIN_STEPS batches or more first copies params, s1, s2
    into the second buffers (p_next, s1_next, s2_next) and a failed step
    restores that copy and replays the good steps before it; a shorter call
    keeps each step's old values in them (JOURNAL).  On return params, s1,
    s2 hold the values of the last good step.

    Why not steps alternating between the two sets of buffers, as before:
    the update of every parameter dominates a sparse step (its products
    touch only the rows of W_0 that the batch's columns name), and in place
    it takes 0.49-0.56x the time of one into the other set at 0.2-6 M
    parameters (docs/performance.md, "Issue 16, sixth round").
    nt: threads of each step's first-layer pass and update
    (``train_step_sparse``); the caller holds OpenBLAS to one thread when
    nt > 1 (``_threads.sparse_threads``).
    Returns (status, batch, loss_sum, n_correct, step, last_loss): as
    train_epoch, plus the loss of the last step taken (the failed one, if
    a step failed).
    """
    # without reference counting: network.unowned
    data, indices, indptr, y_int, y_f, sw, loss_kind = unowned(sdata)
    params, grads, widths, codes, alpha = unowned(net)
    opt_kind, hp, s1, s2, step = unowned(opt)
    _, yb_int, yb_f, swb, acts, delta_a, delta_b, rw, p_next, s1_next, s2_next, scratch = (
        unowned(ws))
    sbatch = unowned(sbatch)
    bdata, bindices, bindptr = sbatch[0], sbatch[1], sbatch[2]
    perm = unowned(perm)
    n = perm.size
    dl = widths[widths.size - 1]
    loss_sum = loss_sum0
    correct = 0
    last = params.dtype.type(0)
    failed_loss = last
    nb = (n + batch_size - 1) // batch_size
    in_place = nb >= IN_PLACE_MIN_STEPS
    step0 = step
    step_kind, p_nxt, s1_nxt, s2_nxt = epoch_buffers(nb, opt_kind, hp, params, s1, s2, p_next,
                                                     s1_next, s2_next)
    status = 0
    failed = 0  # the status of a failed step being replayed up to
    fail_at = nb
    bi = 0
    while bi < fail_at:
        start = bi * batch_size
        m = min(batch_size, n - start)
        gather_rows(data, indices, indptr, perm[start:start + m], bdata, bindices, bindptr)
        yf, swv = gather_targets(perm, start, m, loss_kind, y_int, y_f, sw, yb_int, yb_f,
                                 swb, dl)
        status, loss, c, step = train_step_sparse(
            params, grads, widths, codes, loss_kind, alpha, sbatch, m, yb_int[:m], yf, swv,
            step_kind, hp, s1, s2, step, acts, delta_a, delta_b, rw, p_nxt, s1_nxt, s2_nxt,
            nt, scratch,
        )
        last = loss
        if status != 0:
            if not in_place:  # the step put its old values back (train_step_sparse)
                break
            # back to the copy, then the good steps again (network.train_epoch)
            adopt_update(opt_kind, hp, p_next, s1_next, s2_next, params, s1, s2)
            if failed != 0:  # a replayed step failed (never seen): stop at the copy
                step = step0
                loss_sum = loss_sum0
                correct = 0
                bi = 0
                break
            failed = status
            failed_loss = loss
            fail_at = bi
            step = step0
            loss_sum = loss_sum0
            correct = 0
            bi = 0
            continue
        loss_sum += float(loss) * m
        correct += c
        bi += 1
    if failed != 0:
        status = failed
        last = failed_loss
    return status, bi, loss_sum, correct, step, last
