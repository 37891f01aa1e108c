"""Whole-network kernels: one compiled call per training step or epoch.

A network is data.  ``widths`` (int64, L + 1) holds the layer widths
``d_0 .. d_L`` and ``codes`` (int64, L) the activation code of each layer
(the output layer's is IDENTITY; the loss supplies softmax or sigmoid).  All weights and
biases live in one flat buffer ``params`` laid out layer by layer as
``W_0 (d_0 x d_1, row-major), b_0 (d_1), W_1, b_1, ...``; ``grads`` has the
same layout.  Workspaces (allocated once by the caller, sized for a batch
capacity ``cap``):

* ``acts``: the outputs ``H_1 .. H_L`` back to back, ``cap * sum(d_1..d_L)``;
* ``delta_a``, ``delta_b``: two ping-pong buffers of ``cap * max(d_1..d_L)``
  for the gradients flowing backwards;
* ``rw``: ``cap`` row weights of the loss.

Nothing here allocates except the reshape views, which are free.
"""

import numpy as np
from numba import njit, prange, types
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array

from .blas import NO_TRANS, TRANS, gemm, matmul
from .config import JIT
from .dense import bias_activation_cols, delta_cols, delta_in_place
from .linking import linked
from .optim import (
    BAD_GRADIENT,
    BAD_UPDATE,
    JOURNAL,
    UPDATE_OK,
    adopt_update,
    all_finite,
    fused_update,
)

half_squared_error = linked("losses.half_squared_error")
poisson_log_link = linked("losses.poisson_log_link")
row_weights = linked("losses.row_weights")
sigmoid_xent = linked("losses.sigmoid_xent")
softmax_xent_labels = linked("losses.softmax_xent_labels")
softmax_xent_targets = linked("losses.softmax_xent_targets")

XENT_LABELS = 0
XENT_TARGETS = 1
SQUARED_ERROR = 2
SIGMOID_XENT = 3
POISSON = 4

# train_epoch's statuses beyond the step's (1-3), when it checks its inputs:
# a non-finite value in X, a label outside [0, d_L)
BAD_X = 4
BAD_LABEL = 5

# The mid-level functions below are inlined into their callers at the Numba
# IR level: each is then optimised once, inside the kernel that calls it
# (train_step, loss_and_grad, ...), instead of once on its own and again in
# every caller (cold first fit 9.9 s -> 8.3 s, docs/performance.md).
JIT_INLINE = dict(JIT, inline="always")
# The few kernels with a prange loop; each is a small leaf of its own
JIT_PARALLEL = dict(JIT, parallel=True)


@intrinsic
def view2d(typingctx, buf, offset, rows, cols):
    """A (rows, cols) C-contiguous view of the 1-D C-contiguous buffer from
    ``offset``; IndexError when it does not fit in the buffer.

    An intrinsic rather than ``buf[a:b].reshape(...)`` in an inlined
    function: it is called at a dozen places of each epoch kernel, and
    Numba's IR inliner copied and re-ran the untyped passes of that function
    at every one, and the slice and reshape emit their own clamping and
    size checks (first fit: see docs/performance.md)."""
    if not (isinstance(buf, types.Array) and buf.ndim == 1 and buf.layout == "C"
            and all(isinstance(t, types.Integer) for t in (offset, rows, cols))):
        return None
    ret = buf.copy(ndim=2, layout="C")

    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, value=args[0])
        off, r, c = (context.cast(builder, v, t, types.intp)
                     for v, t in zip(args[1:], sig.args[1:], strict=True))
        zero = context.get_constant(types.intp, 0)
        end = builder.add(off, builder.mul(r, c))
        bad = builder.or_(
            builder.or_(builder.icmp_signed("<", off, zero), builder.icmp_signed("<", r, zero)),
            builder.or_(builder.icmp_signed("<", c, zero),
                        builder.icmp_signed(">", end, src.nitems)))
        with builder.if_then(bad, likely=False):
            context.call_conv.return_user_exc(builder, IndexError,
                                              ("view2d: rows out of the buffer",))
        itemsize = src.itemsize
        out = context.make_array(sig.return_type)(context, builder)
        populate_array(out, data=builder.gep(src.data, [off]), shape=[r, c],
                       strides=[builder.mul(c, itemsize), itemsize], itemsize=itemsize,
                       meminfo=src.meminfo, parent=src.parent)
        return impl_ret_borrowed(context, builder, sig.return_type, out._getvalue())

    return ret(buf, offset, rows, cols), codegen


@intrinsic
def unowned(typingctx, a):
    """The array ``a``, or the record (tuple) ``a`` with each of its arrays,
    without the reference to the memory it views: the same data, shape and
    strides with a NULL meminfo and parent, so that Numba's reference
    counting of it and of every view and slice taken from it is a test for
    NULL instead of an atomic add or subtract on a shared counter.

    Only for arrays that stay inside the compiled call that makes them (the
    caller's references keep the memory alive until it returns); never
    return one to Python.  Why: the step passed its arrays to a dozen
    linked leaves, each taking a reference on entry and dropping it on
    return, and took views of them: 89 atomic reference-count operations
    per step at 64-128-10 b32 float32 (counted with gdb), 2.8 us of a
    24.7 us step in ``perf record`` (docs/performance.md)."""
    if isinstance(a, types.Array):
        fields = None
    elif isinstance(a, types.BaseTuple) and any(isinstance(t, types.Array) for t in a):
        fields = list(a)
    else:
        return None

    def strip(context, builder, ty, value):
        if not isinstance(ty, types.Array):
            return value
        ary = context.make_array(ty)(context, builder, value=value)
        ary.meminfo = context.get_constant_null(types.MemInfoPointer(types.voidptr))
        ary.parent = context.get_constant_null(types.pyobject)
        return ary._getvalue()

    def codegen(context, builder, sig, args):
        if fields is None:
            return strip(context, builder, sig.args[0], args[0])
        out = args[0]
        for i, ty in enumerate(fields):
            item = builder.extract_value(out, i)
            out = builder.insert_value(out, strip(context, builder, ty, item), i)
        return out

    return a(a), codegen


@njit(**JIT)
def forward(params, widths, codes, x, acts):
    """Run the network on x (m, d_0); returns H_L, a (m, d_L) view of acts.
    On one thread: ``forward_blocks`` with one block per layer."""
    return forward_blocks(params, widths, codes, x, acts, 1, acts)


@njit(**JIT_INLINE)
def output_loss(loss_kind, z, y_int, y_f, w, dz):
    """The output loss ``loss_kind`` of the logits z (m, d_L) with row
    weights w (m,): XENT_LABELS reads y_int (m,), the others y_f (m, d_L).
    Writes the gradient with respect to z into dz (m, d_L) and returns
    (sum_i w_i loss_i, n_correct); n_correct is 0 for regression.  The one
    table of losses that forward_loss, distributed.local_sums and
    MLP.evaluate share.
    """
    correct = 0
    if loss_kind == XENT_LABELS:
        loss, correct = softmax_xent_labels(z, y_int, w, dz)
    elif loss_kind == XENT_TARGETS:
        loss, correct = softmax_xent_targets(z, y_f, w, dz)
    elif loss_kind == SIGMOID_XENT:
        loss, correct = sigmoid_xent(z, y_f, w, dz)
    elif loss_kind == POISSON:
        loss = poisson_log_link(z, y_f, w, dz)
    else:
        loss = half_squared_error(z, y_f, w, dz)
    return loss, correct


@njit(**JIT_INLINE)
def gather_targets(perm, start, m, loss_kind, y_int, y_f, sw, yb_int, yb_f, swb, dl):
    """Copy the targets and sample weights of the rows ``perm[start:start + m]``
    into the batch buffers (dl = d_L); returns (y_f rows (m, d_L) view of yb_f, or an
    empty one for XENT_LABELS; sample-weight view (m,), empty when sw is).
    Shared by the dense and sparse epoch kernels."""
    yf = view2d(yb_f, 0, 0, dl)
    if loss_kind == XENT_LABELS:
        for r in range(m):
            yb_int[r] = y_int[perm[start + r]]
    else:
        yf = view2d(yb_f, 0, m, dl)
        for r in range(m):
            ys = y_f[perm[start + r]]
            yr = yf[r]
            for j in range(dl):
                yr[j] = ys[j]
    swv = swb[:0]
    if sw.size > 0:
        swv = swb[:m]
        for r in range(m):
            swv[r] = sw[perm[start + r]]
    return yf, swv


@njit(**JIT_INLINE)
def forward_loss(params, widths, codes, loss_kind, x, y_int, y_f, sw, acts, dz_buf, rw):
    """Forward pass and loss of the batch x (m, d_0), without the L2 term.

    ``loss_kind`` picks the targets used: XENT_LABELS reads y_int (m,),
    XENT_TARGETS, SQUARED_ERROR and SIGMOID_XENT read y_f (m, d_L).  ``sw`` holds sample
    weights or is empty for a plain mean.  Writes the gradient with respect
    to the output into the front of ``dz_buf``.  Returns (loss, n_correct).
    """
    m = x.shape[0]
    out = forward(params, widths, codes, x, acts)
    row_weights(m, sw, rw)
    w = rw[:m]
    dz = view2d(dz_buf, 0, m, widths[widths.size - 1])
    return output_loss(loss_kind, out, y_int, y_f, w, dz)


@njit(**JIT_INLINE)
def backward(params, grads, widths, codes, alpha, x, acts, delta_a, delta_b):
    """Backward pass after ``forward_loss`` (whose output gradient is in
    delta_a); fills ``grads`` and returns the L2 term of the loss.

    The L2 term is ``alpha / (2 m) * sum(W**2)`` (scikit-learn's scaling)
    and adds ``alpha / m * W`` to each dW.
    """
    m = x.shape[0]
    L = widths.size - 1
    zero = params.dtype.type(0)
    l2 = zero
    reg = params.dtype.type(alpha / m)
    # Walk the layers backwards; offsets of layer k are recomputed from the
    # end so no offset table has to be passed in.
    p_end = params.size
    a_end = 0
    for k in range(L):
        a_end += m * widths[k + 1]
    cur = delta_a
    other = delta_b
    for k in range(L - 1, -1, -1):
        d_in = widths[k]
        d_out = widths[k + 1]
        b_off = p_end - d_out
        w_off = b_off - d_in * d_out
        a_end -= m * d_out
        h_out = view2d(acts, a_end, m, d_out)
        if k > 0:
            h_in = view2d(acts, a_end - m * d_in, m, d_in)
        else:
            h_in = x
        da = view2d(cur, 0, m, d_out)
        # da holds dH_k on entry and becomes dA_k (for the output layer the
        # code is IDENTITY, so this only sums db).
        delta_in_place(da, h_out, codes[k], grads[b_off:p_end])
        W = view2d(params, w_off, d_in, d_out)
        dW = view2d(grads, w_off, d_in, d_out)
        matmul(h_in.T, da, dW)
        if alpha != 0.0:
            for i in range(w_off, b_off):
                grads[i] += reg * params[i]
                l2 += params[i] * params[i]
        if k > 0:
            matmul(da, W.T, view2d(other, 0, m, d_in))
            cur, other = other, cur
        p_end = w_off
    return params.dtype.type(0.5) * reg * l2


@njit(**JIT_INLINE)
def l2_alpha(alpha, m, sw):
    """The alpha to hand to ``backward`` so that its ``alpha / m`` becomes
    ``alpha / (total row weight)`` when sample weights ``sw`` are given
    (scikit-learn divides the L2 term by the sum of the sample weights,
    which makes a weight of 2 equal to a repeated row)."""
    if sw.size == 0 or alpha == 0.0:
        return alpha
    s = 0.0
    for i in range(sw.size):
        s += sw[i]
    return alpha * m / s


@njit(**JIT)
def loss_and_grad(
    params, grads, widths, codes, loss_kind, alpha, x, y_int, y_f, sw,
    acts, delta_a, delta_b, rw,
):
    """Loss (L2 term included) and gradient of the batch x; no update.
    Arguments as in ``forward_loss`` and ``backward``.  Returns
    (loss, n_correct)."""
    loss, correct = forward_loss(params, widths, codes, loss_kind, x, y_int, y_f, sw,
                                 acts, delta_a, rw)
    l2 = backward(params, grads, widths, codes, l2_alpha(alpha, x.shape[0], sw), x, acts,
                  delta_a, delta_b)
    return loss + l2, correct


#: columns per thread block are multiples of this (64 bytes of float32): two
#: threads never write one cache line of a row, and BLAS sees aligned blocks
BLOCK_ALIGN = 16
#: a layer's forward product is split between threads only when each gets at
#: least this many output columns (the 10-wide output layer runs on one)
MIN_COLS_PER_THREAD = 32
#: severities of a block's update (``update_block``); the step takes the
#: largest over the blocks: a bad gradient anywhere wins over a bad update,
#: as in optim.check_update
BAD_UPDATE_SEVERITY = 1
BAD_GRADIENT_SEVERITY = 2


@njit(**JIT_INLINE)
def block(d, nt, t):
    """Columns [c0, c1) of d that thread block t of nt owns (may be empty)."""
    c0 = (d * t // nt) // BLOCK_ALIGN * BLOCK_ALIGN
    c1 = d if t == nt - 1 else (d * (t + 1) // nt) // BLOCK_ALIGN * BLOCK_ALIGN
    return c0, c1


@njit(**JIT_INLINE)
def row_block(m, nt, t):
    """Rows [r0, r1) of a batch of m rows that thread t of nt takes in a
    step split by batch rows, and gathers (unaligned: rows are whole)."""
    return m * t // nt, m * (t + 1) // nt


@njit(**JIT)
def forward_block(params, p_off, d_in, d_out, code, h, out, c0, c1):
    """Columns [c0, c1) of one layer: out[:, c0:c1] = g(h @ W[:, c0:c1] +
    b[c0:c1]), W (d_in, d_out) at ``params[p_off]`` and b after it."""
    if c1 > c0:
        b_off = p_off + d_in * d_out
        gemm(NO_TRANS, NO_TRANS, h.shape[0], c1 - c0, d_in, h, 0, d_in, params, p_off + c0,
             d_out, out, c0, d_out)
        bias_activation_cols(out, params[b_off:b_off + d_out], code, c0, c1)


_forward_block = linked("network.forward_block")


@njit(**JIT)
def forward_split(which, t, nt, layer):
    """Thread block t of nt (nt = 2) of a layer split by rows of W, in two
    phases (``layer_par``): FORWARD_ROWS, the part of the product that the
    block's rows [r0, r1) of W give, h[:, r0:r1] @ W[r0:r1, :], into da
    (t = 0) or dh (t = 1); FORWARD_SUM, the block's columns [c0, c1) of
    da = g(da + dh + b).  ``layer`` as ``backward_block`` takes it (W at
    ``params[off]``, h_in, da = the layer's output, dh = the second part,
    code = the layer's activation; grads and alpha are not read)."""
    params, _, off, d_in, d_out, h, out, part, code, _ = layer
    if which == FORWARD_ROWS:
        r0, r1 = block(d_in, nt, t)
        gemm(NO_TRANS, NO_TRANS, h.shape[0], d_out, r1 - r0, h, r0, d_in, params,
             off + r0 * d_out, d_out, out if t == 0 else part, 0, d_out)
        return
    c0, c1 = block(d_out, nt, t)
    if c1 > c0:
        for i in range(out.shape[0]):
            o = out[i, c0:c1]
            q = part[i, c0:c1]
            for j in range(c1 - c0):
                o[j] += q[j]
        b_off = off + d_in * d_out
        bias_activation_cols(out, params[b_off:b_off + d_out], code, c0, c1)


_forward_split = linked("network.forward_split")


@njit(**JIT_INLINE)
def forward_blocks(params, widths, codes, x, acts, nt, part):
    """``forward`` with each wide layer split between nt threads
    (``layer_par``); the narrow ones (the output layer) on one.  Two threads
    split a layer by rows of W (``forward_split``, the second thread's part
    of the product into ``part``, then their sum by columns): each
    thread then reads the same rows of W as its block of the backward pass
    and update (``backward_block``), which stay in its core's cache.  More
    threads split by output columns (a thread reads only its columns of W
    and writes only its columns of out): one buffer of ``part`` holds only
    one thread's part.  ``part``: a buffer of at least m d_out values for
    every layer (the workspace's delta_b, free until the loss)."""
    m = x.shape[0]
    h = x
    p_off = 0
    a_off = 0
    for k in range(widths.size - 1):
        d_in = widths[k]
        d_out = widths[k + 1]
        out = view2d(acts, a_off, m, d_out)
        if nt == 1 or d_out < MIN_COLS_PER_THREAD * nt:
            _forward_block(params, p_off, d_in, d_out, codes[k], h, out, 0, d_out)
        elif nt == 2 and d_in >= 2 * BLOCK_ALIGN:
            # (the layer record as FORWARD below, with dh the second part)
            layer = (params, params, p_off, d_in, d_out, h, out, view2d(part, 0, m, d_out),
                     codes[k], 0.0)
            _layer_par(FORWARD_ROWS, layer, (0, _NO_HP, params, params, 0),
                       (params, params, params), nt, params, _NO_ROWS)
            _layer_par(FORWARD_SUM, layer, (0, _NO_HP, params, params, 0),
                       (params, params, params), nt, params, _NO_ROWS)
        else:
            # (the forward blocks read only the layer record's params, offset,
            # widths, code, h and out; the optimizer and update records are
            # placeholders of the right types)
            _layer_par(FORWARD, (params, params, p_off, d_in, d_out, h, out, out, codes[k], 0.0),
                       (0, _NO_HP, params, params, 0), (params, params, params), nt, params,
                       _NO_ROWS)
        h = out
        p_off += d_in * d_out + d_out
        a_off += m * d_out
    return h


@njit(**JIT)
def update_block(lo, hi, params, grads, opt, nxt):
    """``fused_update`` of the elements [lo, hi) of the flat buffers, with
    the optimizer record ``opt`` (records.py; its step count is this
    update's) into ``nxt`` = (p_next, s1_next, s2_next); returns its
    severity: 0 (UPDATE_OK), BAD_UPDATE_SEVERITY or BAD_GRADIENT_SEVERITY."""
    opt_kind, hp, s1, s2, step = opt
    p_next, s1_next, s2_next = nxt
    status = fused_update(opt_kind, params[lo:hi], grads[lo:hi], s1[lo:hi], s2[lo:hi], hp,
                          step, p_next[lo:hi], s1_next[lo:hi], s2_next[lo:hi])
    if status == UPDATE_OK:
        return 0
    return BAD_GRADIENT_SEVERITY if status == BAD_GRADIENT else BAD_UPDATE_SEVERITY


# a leaf: called at three places of each step, compiled once
_update_block = linked("network.update_block")


@njit(**JIT)
def backward_block(t, nt, layer, opt, nxt, scratch):
    """Thread block t of nt of one layer's backward pass and update
    (``update_block``: ``opt``, ``nxt``).  ``layer`` = (params, grads,
    w_off, d_in, d_out, h_in, da, dh, code_below, alpha): dA of the layer
    is complete in ``da`` (m, d_out); the layer's W (d_in, d_out) is at
    ``params[w_off]``.  The block owns the rows [r0, r1) of W
    (``block(d_in)``): it computes dW[r0:r1] = H_in[:, r0:r1]^T dA, adds the
    L2 term alpha / m * W, computes (unless this is the input layer: dh has
    no rows) its columns of dH = dA W[r0:r1]^T, and updates its parameters
    into p_next (or in place, when p_next is params) while they are in its
    cache; then their g' (``code_below``) and the matching bias gradient
    and update of the layer below.  Writes the
    block's sum of W**2 to scratch[t] and its update severity to
    scratch[nt + t].  No two blocks write the same memory."""
    params, grads, w_off, d_in, d_out, h_in, da, dh, code_below, alpha = layer
    m = da.shape[0]
    zero = params.dtype.type(0)
    reg = params.dtype.type(alpha / m)
    r0, r1 = block(d_in, nt, t)
    acc = zero
    worst = 0
    if r1 > r0:
        lo = w_off + r0 * d_out
        hi = w_off + r1 * d_out
        gemm(TRANS, NO_TRANS, r1 - r0, d_out, m, h_in, r0, d_in, da, 0, d_out, grads, lo,
             d_out)
        if alpha != 0.0:
            gs = grads[lo:hi]  # slices indexed from 0: no wraparound test, vectorises
            ps = params[lo:hi]
            for i in range(gs.size):
                gs[i] += reg * ps[i]
                acc += ps[i] * ps[i]
        if dh.shape[0] > 0:
            # dH before the update: an update in place (train_epoch) must not
            # change the W it reads
            gemm(NO_TRANS, TRANS, m, r1 - r0, d_out, da, 0, d_out, params, lo, d_out, dh, r0,
                 d_in)
        worst = _update_block(lo, hi, params, grads, opt, nxt)
        if dh.shape[0] > 0:
            bp = w_off - d_in  # the bias of the layer below
            delta_cols(dh, h_in, code_below, grads[bp:w_off], r0, r1)
            worst = max(worst, _update_block(bp + r0, bp + r1, params, grads, opt, nxt))
    scratch[t] = acc
    scratch[nt + t] = params.dtype.type(worst)


@njit(**JIT_INLINE)
def copy_rows(X, rows, off, r0, r1, xb):
    """The rows [r0, r1) of a batch: xb[r] = X[rows[off + r]] (xb (m, d_0))."""
    d0 = X.shape[1]
    for r in range(r0, r1):
        src = X[rows[off + r]]
        dst = xb[r]
        for j in range(d0):
            dst[j] = src[j]


@njit(**JIT)
def gather_block(X, rows, off, r0, r1, xb):
    """``copy_rows`` as a leaf, for the thread blocks of ``layer_par``."""
    copy_rows(X, rows, off, r0, r1, xb)


# a leaf: train_epoch's gather in layer_par's thread blocks (on one thread,
# train_epoch inlines copy_rows instead)
_gather_block = linked("network.gather_block")

#: train_epoch updates in place from this many steps a call on (see there)
IN_PLACE_MIN_STEPS = 4

FORWARD = 0
BACKWARD = 1
GATHER = 2
FORWARD_ROWS = 3
FORWARD_SUM = 4
#: hp argument of a forward ``layer_par`` call (not read)
_NO_HP = np.zeros(5)
#: rows argument of a forward or backward ``layer_par`` call (not read)
_NO_ROWS = np.zeros(0, dtype=np.int64)


@njit(**JIT_PARALLEL)
def layer_par(which, layer, opt, nxt, nt, scratch, rows):
    """The nt thread blocks of one layer in parallel, each calling BLAS
    single-threaded.  ``layer`` = (params, grads, off, d_in, d_out, h_in,
    da, dh, code, alpha) as ``backward_block`` takes it.  FORWARD:
    ``forward_block`` of its output columns (h_in, W at ``params[off]``,
    out = ``da``; grads, dh, alpha, opt, nxt and scratch are not read);
    BACKWARD: ``backward_block`` (W at ``params[off]``); GATHER: the gather
    of a batch (``da[r] = h_in[rows[off + r]]`` for the d_in rows r of the
    batch, d_out values each, a block of rows per thread; only off, d_in,
    h_in, da and rows are read); FORWARD_ROWS and FORWARD_SUM: the two
    phases of a layer split by rows of W (``forward_split``; dh holds the
    second thread's part).

    One parallel leaf for all of them, whose loop body is a call of a serial
    leaf: Numba's parfor passes cost about 1 s of CPU per
    parallel function on a cold compile, and took 5-15 s with the block's
    body or the whole step inside (docs/performance.md)."""
    params, _, off, d_in, d_out, h_in, da, _, code, _ = layer
    for t in prange(nt):
        # (prange's index is unsigned; the leaves' signatures say int64)
        if which == FORWARD:
            c0, c1 = block(d_out, nt, np.int64(t))
            _forward_block(params, off, d_in, d_out, code, h_in, da, c0, c1)
        elif which == GATHER:
            r0, r1 = row_block(d_in, nt, np.int64(t))
            _gather_block(h_in, rows, off, r0, r1, da)
        elif which >= FORWARD_ROWS:
            _forward_split(which, np.int64(t), nt, layer)
        else:
            _backward_block(np.int64(t), nt, layer, opt, nxt, scratch)


_backward_block = linked("network.backward_block")
_layer_par = linked("network.layer_par")


#: the update of a step split by the rows of its batch (``batch_update``)
#: adds the threads' gradients and updates this many parameters at a time,
#: so that the sum is still in L1 when the update reads it
BATCH_CHUNK = 4096


@njit(**JIT_INLINE)
def batch_scratch_size(nt, n_params):
    """Values of the workspace's ``scratch`` a step split by the rows of
    its batch between nt threads needs: 3 nt for the threads' sums and
    statuses, then one gradient buffer for each thread but the first
    (``thread_grads``)."""
    return _grads_at(nt) + (nt - 1) * _grads_stride(n_params)


@njit(**JIT_INLINE)
def _grads_at(nt):
    # the threads' gradients start on a 64-byte line of float32
    return (3 * nt + BLOCK_ALIGN - 1) // BLOCK_ALIGN * BLOCK_ALIGN


@njit(**JIT_INLINE)
def _grads_stride(n_params):
    return (n_params + BLOCK_ALIGN - 1) // BLOCK_ALIGN * BLOCK_ALIGN


@njit(**JIT_INLINE)
def thread_grads(grads, scratch, nt, t):
    """The gradient buffer of thread t of a step split by batch rows: the
    network's own for thread 0, a slice of ``scratch`` for the others."""
    if t == 0:
        return grads
    at = _grads_at(nt) + (t - 1) * _grads_stride(grads.size)
    return scratch[at:at + grads.size]


@njit(**JIT)
def batch_pass(t, nt, net, batch, opt, ws, src):
    """Thread t of nt of a step split by the rows of its batch: for the
    rows [r0, r1) = ``row_block(m, nt, t)``, their gather from the source
    ``src`` = (X, perm, start, check) (xb[r] = X[perm[start + r]]), their
    check when ``check`` (``check_batch``), the forward pass, the loss and
    the backward pass, with the gradient (no L2 term) into
    ``thread_grads`` and the rows' share of the activations and deltas
    (rows r0 .. r1 of each buffer, laid out as for a batch of r1 - r0
    rows).  The batch record's x is the workspace's (m, d_0) batch buffer;
    its targets are gathered and the row weights ``rw`` of the whole batch
    made by the caller.  Writes the rows' weighted loss sum to scratch[t],
    their count of correct rows to scratch[nt + t] and the check's status
    (0, BAD_X or BAD_LABEL) to scratch[2 nt + t].  ``opt`` is not read (the
    signature is ``batch_update``'s)."""
    params, grads, widths, codes, _ = net
    x, y_int, y_f, _, loss_kind = batch
    _, _, _, _, acts, delta_a, delta_b, rw, _, _, _, scratch = ws
    X, perm, start, check = src
    m = x.shape[0]
    r0, r1 = row_block(m, nt, t)
    g = thread_grads(grads, scratch, nt, t)
    loss = params.dtype.type(0)
    c = 0
    bad = 0
    if r1 > r0:
        copy_rows(X, perm, start, r0, r1, x)
        xt = x[r0:r1]
        dl = widths[widths.size - 1]
        if check:
            bad = _check_batch(ws[0][r0 * widths[0]:r1 * widths[0]],
                               y_int[r0:r1] if loss_kind == XENT_LABELS else y_int[:0], dl)
        if bad == 0:
            s = 0
            d = 0
            for k in range(1, widths.size):
                s += widths[k]
                d = max(d, widths[k])
            at = acts[r0 * s:r1 * s]
            da = delta_a[r0 * d:r1 * d]
            out = forward(params, widths, codes, xt, at)
            loss, c = output_loss(loss_kind, out, y_int[r0:r1], y_f[r0:r1], rw[r0:r1],
                                  view2d(da, 0, r1 - r0, dl))
            backward(params, g, widths, codes, 0.0, xt, at, da, delta_b[r0 * d:r1 * d])
    else:  # fewer rows than threads: nothing to add
        g[:] = params.dtype.type(0)
    scratch[t] = loss
    scratch[nt + t] = params.dtype.type(c)
    scratch[2 * nt + t] = params.dtype.type(bad)


@njit(**JIT)
def batch_update(t, nt, net, batch, opt, ws, src):
    """Thread t of nt of the update of a step split by the rows of its
    batch, after every ``batch_pass``: for its block of the parameters
    (``block(params.size, nt, t)``), BATCH_CHUNK at a time, the sum of the
    threads' gradients in thread order, the L2 term alpha / m * W on the
    weights (``net``'s alpha as ``l2_alpha`` gives it), then
    ``update_block`` (``opt``: its step count is this update's; into the
    workspace's p_next, s1_next, s2_next).  Writes the block's sum of W**2
    to scratch[t] and its update severity to scratch[nt + t].  ``src`` is
    not read (the signature is ``batch_pass``'s)."""
    params, grads, widths, _, alpha = net
    m = batch[0].shape[0]
    _, _, _, _, _, _, _, _, p_next, s1_next, s2_next, scratch = ws
    nxt = (p_next, s1_next, s2_next)
    lo, hi = block(params.size, nt, t)
    reg = params.dtype.type(alpha / m)
    acc = params.dtype.type(0)
    worst = 0
    w0 = 0
    for k in range(widths.size - 1):
        w1 = w0 + widths[k] * widths[k + 1]  # W_k is [w0, w1), b_k [w1, b1)
        b1 = w1 + widths[k + 1]
        for part in range(2):
            a0 = max(lo, w0 if part == 0 else w1)
            a1 = min(hi, w1 if part == 0 else b1)
            for a in range(a0, a1, BATCH_CHUNK):
                b = min(a1, a + BATCH_CHUNK)
                gs = grads[a:b]  # slices indexed from 0: vectorises
                for u in range(1, nt):
                    gu = thread_grads(grads, scratch, nt, u)[a:b]
                    for i in range(b - a):
                        gs[i] += gu[i]
                if part == 0 and alpha != 0.0:
                    ps = params[a:b]
                    for i in range(b - a):
                        gs[i] += reg * ps[i]
                        acc += ps[i] * ps[i]
                worst = max(worst, _update_block(a, b, params, grads, opt, nxt))
        w0 = b1
    scratch[t] = acc
    scratch[nt + t] = params.dtype.type(worst)


BATCH_PASS = 0
BATCH_UPDATE = 1
_batch_pass = linked("network.batch_pass")
_batch_update = linked("network.batch_update")


@njit(**JIT_PARALLEL)
def batch_par(which, net, batch, opt, ws, src, nt):
    """The nt threads of a step split by the rows of its batch, each
    calling BLAS single-threaded: BATCH_PASS runs ``batch_pass``,
    BATCH_UPDATE ``batch_update``.  A parallel leaf of its own, compiled on
    the first such step (``layer_par``'s records cannot carry a whole
    network); a fit whose steps are split this way compiles no other."""
    for t in prange(nt):
        if which == BATCH_PASS:
            _batch_pass(np.int64(t), nt, net, batch, opt, ws, src)
        else:
            _batch_update(np.int64(t), nt, net, batch, opt, ws, src)


_batch_par = linked("network.batch_par")


@njit(**JIT)
def batch_split_step(net, batch, opt, ws, src, nt):
    """``train_step`` split by the rows of its batch between nt threads
    (``batch_par``), with its gather from ``src`` = (X, perm, start, check)
    into the batch record's x, and the check of that batch when ``check``:
    each thread gathers its rows and makes their whole forward and backward
    pass, then, once all are done, each updates its block of the
    parameters with the threads' gradients summed.  No thread waits for
    another between layers, and the gather, the element-wise passes, the
    loss and the update all run on every thread; the price is a gradient
    buffer per extra thread and their sum (docs/performance.md, "Issue 16,
    seventh round").  The batch's targets are gathered by the caller.
    Returns what ``train_step`` does, or status BAD_X or BAD_LABEL (as
    ``check_batch``) before any update."""
    net = unowned(net)
    batch = unowned(batch)
    opt = unowned(opt)
    ws = unowned(ws)
    src = unowned(src)
    params, grads, widths, codes, alpha = net
    x, _, _, sw, _ = batch
    opt_kind, hp, s1, s2, step = opt
    rw, p_next, s1_next, s2_next, scratch = ws[7], ws[8], ws[9], ws[10], ws[11]
    m = x.shape[0]
    row_weights(m, sw, rw)
    _batch_par(BATCH_PASS, net, batch, opt, ws, src, nt)
    loss = params.dtype.type(0)
    c = 0
    bad = 0
    for t in range(nt):  # in thread order: the same sum on every run
        loss += scratch[t]
        c += int(scratch[nt + t])
        b = int(scratch[2 * nt + t])
        if b != 0 and (bad == 0 or b < bad):
            bad = b  # BAD_X before BAD_LABEL, as one check of the batch finds
    if bad != 0:
        return bad, loss, c, step
    if not np.isfinite(loss):
        return 1, loss, c, step
    a = l2_alpha(alpha, m, sw)
    _batch_par(BATCH_UPDATE, (params, grads, widths, codes, a), batch,
               (opt_kind, hp, s1, s2, step + 1), ws, src, nt)
    l2 = params.dtype.type(0)
    worst = 0
    for t in range(nt):
        l2 += scratch[t]
        worst = max(worst, int(scratch[nt + t]))
    loss += params.dtype.type(0.5) * params.dtype.type(a / m) * l2
    status = step_status(loss, worst, opt_kind, hp, params, s1, s2, p_next, s1_next,
                         s2_next)
    if status != 0:
        return status, loss, c, step
    return 0, loss, c, step + 1


# a leaf: compiled on the first step split by batch rows, not by other fits
_batch_split_step = linked("network.batch_split_step")


@njit(**JIT_INLINE)
def backward_update(params, grads, widths, codes, alpha, x, acts, delta_a, delta_b, opt, nxt,
                    nt, scratch):
    """``backward`` with the optimizer update fused in (``update_block``:
    ``opt``, ``nxt``), each layer split between nt threads
    (``backward_block``), after the forward pass and loss (whose output
    gradient is in delta_a).  Returns (the L2 term of
    the loss, the largest severity of the blocks' updates, see
    ``update_block``).  ``scratch``: 2 nt values of the parameters' dtype
    from the workspace (nothing is allocated per step).

    Every parameter, gradient and state value is read and written once
    per step, by one thread.  The L2 sums of the blocks are added in block
    order: for a given thread count the result is the same on every run,
    and with one thread it is the one-pass sum of before.
    """
    m = x.shape[0]
    L = widths.size - 1
    l2 = params.dtype.type(0)
    p_end = params.size
    a_end = 0
    for k in range(L):
        a_end += m * widths[k + 1]
    cur = delta_a
    other = delta_b
    # the output layer's bias: dA_L is the loss gradient (IDENTITY code)
    d_last = widths[L]
    delta_in_place(view2d(cur, 0, m, d_last), view2d(acts, a_end - m * d_last, m, d_last),
                   codes[L - 1], grads[p_end - d_last:p_end])
    worst = _update_block(p_end - d_last, p_end, params, grads, opt, nxt)
    for k in range(L - 1, -1, -1):
        d_in = widths[k]
        d_out = widths[k + 1]
        w_off = p_end - d_out - d_in * d_out
        a_end -= m * d_out
        if k > 0:
            h_in = view2d(acts, a_end - m * d_in, m, d_in)
            code_below = codes[k - 1]
        else:
            h_in = x
            code_below = 0
        da = view2d(cur, 0, m, d_out)
        # dH of the layer below (none below the input layer, whose width may
        # exceed the delta buffers)
        dh = view2d(other, 0, m if k > 0 else 0, d_in)
        layer = (params, grads, w_off, d_in, d_out, h_in, da, dh, code_below, alpha)
        if nt == 1:
            _backward_block(0, 1, layer, opt, nxt, scratch)
        else:
            _layer_par(BACKWARD, layer, opt, nxt, nt, scratch, _NO_ROWS)
        for t in range(nt):
            l2 += scratch[t]
            worst = max(worst, int(scratch[nt + t]))
        cur, other = other, cur
        p_end = w_off
    return params.dtype.type(0.5) * params.dtype.type(alpha / m) * l2, worst


@njit(**JIT_INLINE)
def step_status(loss, worst, opt_kind, hp, params, s1, s2, p_next, s1_next, s2_next):
    """The status of a step whose update has been made (``train_step``,
    ``sparse.train_step_sparse``): 1 for a non-finite loss, else from the
    update's largest severity ``worst`` (``update_block``).  A failed step
    made in place with a journal (``opt_kind`` has JOURNAL added) puts the
    old values it kept in p_next, s1_next, s2_next back."""
    if not np.isfinite(loss):  # the L2 term overflowed
        status = 1
    elif worst == BAD_GRADIENT_SEVERITY:
        status = BAD_GRADIENT
    elif worst == BAD_UPDATE_SEVERITY:
        status = BAD_UPDATE
    else:
        status = UPDATE_OK
    if status != 0 and opt_kind >= JOURNAL:
        # the update was made in place: back to the old values it kept
        adopt_update(opt_kind - JOURNAL, hp, p_next, s1_next, s2_next, params, s1, s2)
    return status


@njit(**JIT_INLINE)
def epoch_buffers(nb, opt_kind, hp, params, s1, s2, p_next, s1_next, s2_next):
    """How an epoch call of nb steps updates (``train_epoch``,
    ``sparse.train_epoch_sparse``): (the steps' optimizer kind, the
    buffers they write).  From IN_PLACE_MIN_STEPS steps on, in place after
    a copy of params, s1, s2 into the second buffers (made here); below,
    in place with a journal of the old values in the second buffers."""
    if nb >= IN_PLACE_MIN_STEPS:
        adopt_update(opt_kind, hp, params, s1, s2, p_next, s1_next, s2_next)
        return opt_kind, params, s1, s2
    return opt_kind + JOURNAL, p_next, s1_next, s2_next


@njit(**JIT)
def train_step(net, batch, opt, ws, nt):
    """One step on the contiguous batch: forward, loss, backward and the
    optimizer update, written into the workspace's p_next, s1_next, s2_next
    (``optim.fused_update``); the parameters and the optimizer's state are
    only read.  The records ``net``, ``batch``, ``opt`` and ``ws`` are
    those of ``records.py``; the workspace's batch buffers are not read.
    Returns (status, loss, n_correct, step): status 0 is success, and the
    caller adopts the new values; 1 is a non-finite loss, 2 a non-finite
    gradient, 3 an update that would make a parameter or optimizer state
    value non-finite; then the step's values are to be dropped and params,
    s1, s2 hold the last good ones.

    Threads: the step uses ``nt`` threads, chosen by the caller
    (``fastbp._threads.step_threads``: Numba's thread count, or 1 for a
    small step; an argument because ``numba.get_num_threads()`` in here
    would keep Numba from caching the kernel); ``scratch`` holds 2 nt
    values of the parameters' dtype.  With more than one, each layer's
    products are split by blocks of rows of W (two threads) or of columns
    (``forward_blocks``, ``backward_update``), each thread calling OpenBLAS
    single-threaded on its own block; the caller sets OpenBLAS's own threads to 1 around the
    call (``fastbp._threads.BLAS_SINGLE``), so that BLAS's threads and the
    step's never run at once.  The loss of the (narrow) output layer runs
    on one thread.  (A step split by the rows of its batch is
    ``batch_split_step``, which ``train_epoch`` calls for a negative nt.)

    Why a second buffer: the finiteness check and the update are one pass
    over the parameters (each read once), done block by block right after
    that block's gradient, and a failed step is undone by not adopting the
    buffer (issue 16).  When p_next, s1_next, s2_next are params, s1, s2
    themselves, the update is made in place and the caller undoes a failed
    step from its own copy (train_epoch, IN_PLACE_MIN_STEPS steps or more).
    With ``optim.JOURNAL`` added to the optimizer kind (shorter epochs,
    train_on_batch) it is made in place with the old values kept in the
    second buffers, and a failed step copies them back before returning."""
    params, grads, widths, codes, alpha = unowned(net)
    x, y_int, y_f, sw, loss_kind = unowned(batch)
    opt_kind, hp, s1, s2, step = unowned(opt)
    _, _, _, _, acts, delta_a, delta_b, rw, p_next, s1_next, s2_next, scratch = unowned(ws)
    m = x.shape[0]
    out = forward_blocks(params, widths, codes, x, acts, nt, delta_b)
    row_weights(m, sw, rw)
    loss, c = output_loss(loss_kind, out, y_int, y_f, rw[:m],
                          view2d(delta_a, 0, m, widths[widths.size - 1]))
    status = 1
    if np.isfinite(loss):
        l2, worst = backward_update(params, grads, widths, codes, l2_alpha(alpha, m, sw), x,
                                    acts, delta_a, delta_b, (opt_kind, hp, s1, s2, step + 1),
                                    (p_next, s1_next, s2_next), nt, scratch)
        loss += l2
        status = step_status(loss, worst, opt_kind, hp, params, s1, s2, p_next, s1_next,
                             s2_next)
    if status != 0:
        return status, loss, c, step
    return 0, loss, c, step + 1


@njit(**JIT)
def check_batch(x, labels, dl):
    """train_epoch's check of a gathered batch when its caller did not check
    the inputs: BAD_X if a value of x (flat) is not finite, BAD_LABEL if a
    label is outside [0, dl), else 0."""
    if not all_finite(x):
        return BAD_X
    ok = True
    for r in range(labels.size):
        ok &= (labels[r] >= 0) & (labels[r] < dl)
    return 0 if ok else BAD_LABEL


# a leaf, compiled on its first call (train_on_batch's), not by a fit
_check_batch = linked("network.check_batch")


# train_epoch calls the step through the table: the step is compiled once, on
# its own, and is the same compiled code train_on_batch runs.
_train_step = linked("network.train_step")


@njit(**JIT)
def train_epoch(data, perm, batch_size, net, opt, ws, nt, loss_sum0, check_inputs):
    """One pass over the rows ``perm`` of the data in minibatches of
    ``batch_size``; ``data``, ``net``, ``opt`` and ``ws`` are the records of
    ``records.py``.

    Each step gathers its rows into the workspace's contiguous buffers xb /
    yb_* / swb, computes loss and gradients, checks them and updates the
    parameters with the optimizer (its state s1, s2; ``step`` updates so
    far).
    Returns (status, batch, loss_sum, n_correct, step): status 0 is success;
    1 means the loss of batch ``batch`` was not finite, 2 that a gradient
    was not and 3 that the update would not be (``train_step``); that
    batch's update was not applied.
    loss_sum is loss_sum0 (float64) plus the sum over batches of
    batch_loss * batch_rows, added in batch order: an epoch cut into
    consecutive calls, each given the sum so far, adds exactly as one call
    (fastbp._responsive.run_epoch; tests/test_interrupt.py).
    The workspace's p_next, s1_next, s2_next: second buffers the size of
    params.  A call of fewer than IN_PLACE_MIN_STEPS batches updates in
    place with each step's old values kept in them (``optim.JOURNAL``),
    and a failed step copies them back; a longer call updates in place,
    after copying params, s1, s2 into them, and a failed step restores that copy and replays the good
    steps before it.  On return params, s1, s2 hold the values of the last
    good step.  nt and the
    workspace's scratch: threads and their scratch values (``train_step``).
    check_inputs: check each batch as it is gathered, before its step:
    status BAD_X for a non-finite value of X, BAD_LABEL for a label outside
    [0, d_L) (XENT_LABELS).  train_on_batch leaves these checks to the
    kernel (a pass over data the gather reads anyway, instead of two NumPy
    calls of ~2 us each; issue 16, item 5); fit checks X and y once, before
    its epochs, and passes False.
    """
    # the records' arrays without reference counting (``unowned``: nothing
    # made from them outlives this call)
    X, y_int, y_f, sw, loss_kind = unowned(data)
    params, grads, widths, codes, alpha = unowned(net)
    opt_kind, hp, s1, s2, step = unowned(opt)
    xb, yb_int, yb_f, swb, acts, delta_a, delta_b, rw, p_next, s1_next, s2_next, scratch = (
        unowned(ws))
    perm = unowned(perm)
    n = perm.size
    d0 = widths[0]
    dl = widths[widths.size - 1]
    loss_sum = loss_sum0
    correct = 0
    nb = (n + batch_size - 1) // batch_size
    # Four steps or more update in place, after a copy of the parameters
    # and state into the second buffers: a failed step restores the copy and
    # replays the good steps before it (the same code on the same threads:
    # bit for bit the same values).  In place, each thread's block of W,
    # its state and its gradient stay in that core's cache from one step to
    # the next (with forward_blocks' split by rows): 0.86x the step time at
    # 784-256-128-10 b64 (docs/performance.md, "Issue 16, fifth round").
    # Fewer steps update in place too, each keeping the old values in the
    # second buffers as it writes the new ones (JOURNAL, optim.sgd_journal;
    # train_step copies them back when the step fails).  The copy costs
    # about one update, which steps without a journal repay from about three
    # on: at 1024-2048-2048-10 b64, two steps a call ran at 1.47x the floor
    # after a copy and 1.30-1.31x with the journal, eight steps at
    # 1.16-1.18x in place and 1.23-1.27x with the journal.
    in_place = nb >= IN_PLACE_MIN_STEPS
    step0 = step
    step_kind, p_nxt, s1_nxt, s2_nxt = epoch_buffers(nb, opt_kind, hp, params, s1, s2, p_next,
                                                     s1_next, s2_next)
    status = 0
    failed = 0  # the status of a failed step being replayed up to
    fail_at = nb
    bi = 0
    if nt < -1 and scratch.size < batch_scratch_size(-nt, params.size):
        nt = 1  # no room for the threads' gradients (MLP makes it first)
    while bi < fail_at:
        start = bi * batch_size
        m = min(batch_size, n - start)
        xv = view2d(xb, 0, m, d0)
        yf, swv = gather_targets(perm, start, m, loss_kind, y_int, y_f, sw, yb_int, yb_f,
                                 swb, dl)
        net_r = (params, grads, widths, codes, alpha)
        batch_r = (xv, yb_int[:m], yf, swv, loss_kind)
        opt_r = (step_kind, hp, s1, s2, step)
        ws_r = (xb, yb_int, yb_f, swb, acts, delta_a, delta_b, rw, p_nxt, s1_nxt, s2_nxt, scratch)
        if nt < -1:  # split by batch rows: each thread gathers and checks its rows
            status, loss, c, step = _batch_split_step(net_r, batch_r, opt_r, ws_r,
                                                      (X, perm, start, check_inputs), -nt)
            if status >= BAD_X:
                break
        else:
            if nt > 1:  # a split step: the gather on the step's threads too
                _layer_par(GATHER, (params, grads, start, m, d0, X, xv, xv, 0, 0.0),
                           (0, _NO_HP, s1, s2, 0), (p_nxt, s1_nxt, s2_nxt), nt, scratch,
                           perm)
            else:  # inline, not the leaf: the one-thread fit compiles no more
                copy_rows(X, perm, start, 0, m, xv)
            if check_inputs:
                status = _check_batch(xb[:m * d0], yb_int[:m] if loss_kind == XENT_LABELS
                                      else yb_int[:0], dl)
                if status != 0:
                    break
            status, loss, c, step = _train_step(net_r, batch_r, opt_r, ws_r, nt)
        if status != 0:
            if not in_place:  # the step put its old values back (train_step)
                break
            # back to the copy, then the good steps again
            adopt_update(opt_kind, hp, p_next, s1_next, s2_next, params, s1, s2)
            if failed != 0:  # a replayed step failed (never seen): stop at the copy
                step = step0
                loss_sum = loss_sum0
                correct = 0
                bi = 0
                break
            failed = status
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
    return status, bi, loss_sum, correct, step
