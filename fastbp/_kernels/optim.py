"""Fused in-place optimizer updates over the flat parameter buffer.

All parameters of a network live in one 1-D buffer and their gradients in a
second of the same layout, so one loop updates the whole network.
Hyper-parameters arrive as float64 scalars and are cast once to the
parameter dtype, so float32 training never computes in float64.
"""

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .config import JIT, JIT_INLINE
from .linking import linked

SGD = 0
ADAM = 1
#: added to an optimizer kind in the step's optimizer record: update in
#: place and keep the old values in the second buffers (``fused_update``)
JOURNAL = 4

# Status codes of ``check_update`` (and of network.train_step, which adds
# 1 for a non-finite loss).
UPDATE_OK = 0
BAD_GRADIENT = 2
BAD_UPDATE = 3


# The checks divide as the updates do; Numba's default error model puts a
# zero-divisor test (Python's ZeroDivisionError) in every division, which
# stops the loop from vectorising.  The "numpy" model divides as IEEE 754
# does, bit for bit the same quotient.
JIT_CHECK = dict(JIT, error_model="numpy")
JIT_VALUES = dict(JIT_CHECK, inline="always")


@njit(**JIT_INLINE)
def all_finite(x):
    """True if every element of the 1-D float array x is finite."""
    # ``v - v`` is 0 for a finite v and NaN for inf or NaN, and NaN == 0 is
    # false.  No allowed fastmath flag may fold ``v - v`` to 0 (that needs
    # nnan and ninf), and the and-reduction of booleans is an integer
    # reduction, so the loop vectorises.  (An earlier version compared the
    # exponent bits through ``x.view(uint32/uint64)``: the same speed, but
    # the view and both integer widths cost ~1.3 s of CPU on a cold compile.)
    zero = x.dtype.type(0)
    ok = True
    for i in range(x.size):
        ok &= x[i] - x[i] == zero
    return ok


@njit(**JIT)
def sgd_update(p, g, v, lr, momentum, dampening, weight_decay, nesterov, first):
    """SGD with optional momentum, Nesterov momentum and L2 weight decay.

    With d = g + weight_decay * p:  v = momentum * v + (1 - dampening) * d,
    except on the ``first`` step, where v = d;
    p -= lr * (d + momentum * v) if nesterov else lr * v  (PyTorch's rule;
    with momentum 0 it is p -= lr * d).  p, g, v: 1-D, one dtype.
    """
    t = p.dtype.type
    lr_ = t(lr)
    mu = t(momentum)
    # PyTorch starts the momentum buffer at the first gradient, undamped
    # (test_optim.py::test_matches_torch with dampening > 0).
    keep = mu  # weight of the old buffer
    damp = t(1.0 - dampening)
    if first:
        keep = t(0.0)
        damp = t(1.0)
    wd = t(weight_decay)
    if momentum == 0.0:
        for i in range(p.size):
            p[i] -= lr_ * (g[i] + wd * p[i])
    elif nesterov:
        for i in range(p.size):
            d = g[i] + wd * p[i]
            vi = keep * v[i] + damp * d
            v[i] = vi
            p[i] -= lr_ * (d + mu * vi)
    else:
        for i in range(p.size):
            d = g[i] + wd * p[i]
            vi = keep * v[i] + damp * d
            v[i] = vi
            p[i] -= lr_ * vi


@njit(**JIT_CHECK)  # IEEE division (see JIT_CHECK): the loop vectorises
def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """Adam (Kingma & Ba) with bias correction; ``step`` counts from 1.

    m = b1 m + (1 - b1) d;  v = b2 v + (1 - b2) d^2 with d = g + wd * p;
    p -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps).
    """
    b1, b2, c1, c2, wd, step_size, inv_bc2, eps_ = _adam_constants(p, step, lr, beta1, beta2,
                                                                   eps, weight_decay)
    for i in range(p.size):
        d = g[i] + wd * p[i]
        mi = b1 * m[i] + c1 * d
        vi = b2 * v[i] + c2 * d * d
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * mi / (np.sqrt(vi * inv_bc2) + eps_)


@njit(**JIT_VALUES)
def _sgd_values(p, g, v, lr_, mu, keep, damp, wd, mode):
    """(new v, new p) of one element, as ``sgd_update`` computes them; mode
    0: no momentum (v is neither read nor written: 0 is returned for it),
    1: Nesterov, 2: plain momentum."""
    d = g + wd * p
    if mode == 0:
        return lr_ - lr_, p - lr_ * d  # a zero of p's dtype (lr_ is finite)
    vi = keep * v + damp * d
    if mode == 1:
        return vi, p - lr_ * (d + mu * vi)
    return vi, p - lr_ * vi


@njit(**JIT_VALUES)
def _sgd_constants(p, lr, momentum, dampening, weight_decay, nesterov, first):
    """``_sgd_values``' constants in the dtype of p: (lr, momentum, weight
    of the old buffer, of the new gradient, weight decay, mode: 0 without
    momentum, 1 Nesterov, 2 plain), as ``sgd_update`` sets them."""
    t = p.dtype.type
    keep = t(momentum)
    damp = t(1.0 - dampening)
    if first:
        keep = t(0.0)
        damp = t(1.0)
    mode = 0 if momentum == 0.0 else (1 if nesterov else 2)
    return t(lr), t(momentum), keep, damp, t(weight_decay), mode


@njit(**JIT_CHECK)
def sgd_check(p, g, v, lr, momentum, dampening, weight_decay, nesterov, first):
    """Status of the step ``sgd_update`` would make, computed without
    writing: BAD_GRADIENT if an element of g is not finite, BAD_UPDATE if a
    new parameter or momentum value would not be, else UPDATE_OK.

    The arithmetic is ``sgd_update``'s, operation for operation (no
    ``contract`` flag, so no fused multiply-add differs), so the verdict is
    exact.  The first loop's test ``|v'| + |p'| < inf`` is false for any
    inf or NaN (a non-finite g makes p' or v' non-finite: 0 * inf is NaN)
    and is a boolean AND, which vectorises without any fastmath flag; only
    when it fails (divergence, or finite values near the overflow
    threshold) does a second loop tell a bad gradient from a bad update
    exactly.
    """
    inf = p.dtype.type(np.inf)
    lr_, mu, keep, damp, wd, mode = _sgd_constants(p, lr, momentum, dampening, weight_decay,
                                                   nesterov, first)
    ok = True
    for i in range(p.size):
        vi, pi = _sgd_values(p[i], g[i], v[i], lr_, mu, keep, damp, wd, mode)
        ok &= abs(vi) + abs(pi) < inf
    if ok:
        return UPDATE_OK
    bad_g = False
    bad_u = False
    for i in range(p.size):
        vi, pi = _sgd_values(p[i], g[i], v[i], lr_, mu, keep, damp, wd, mode)
        bad_g |= not abs(g[i]) < inf
        bad_u |= (not abs(vi) < inf) | (not abs(pi) < inf)
    if bad_g:
        return BAD_GRADIENT
    return BAD_UPDATE if bad_u else UPDATE_OK


@njit(**JIT_VALUES)
def _adam_values(p, g, m, v, b1, b2, c1, c2, wd, step_size, inv_bc2, eps_):
    """(new m, new v, new p) of one element, as ``adam_update`` computes them."""
    d = g + wd * p
    mi = b1 * m + c1 * d
    vi = b2 * v + c2 * d * d
    return mi, vi, p - step_size * mi / (np.sqrt(vi * inv_bc2) + eps_)


@njit(**JIT_VALUES)
def _adam_constants(p, step, lr, beta1, beta2, eps, weight_decay):
    """``_adam_values``' constants in the dtype of p, as ``adam_update`` sets
    them (the bias corrections of step ``step``)."""
    t = p.dtype.type
    return (t(beta1), t(beta2), t(1.0 - beta1), t(1.0 - beta2), t(weight_decay),
            t(lr / (1.0 - beta1**step)), t(1.0 / (1.0 - beta2**step)), t(eps))


@njit(**JIT_CHECK)
def adam_check(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """Status of the step ``adam_update`` would make, without writing (as
    ``sgd_check``): the new p, m and v must all be finite."""
    inf = p.dtype.type(np.inf)
    b1, b2, c1, c2, wd, step_size, inv_bc2, eps_ = _adam_constants(p, step, lr, beta1, beta2,
                                                                   eps, weight_decay)
    ok = True
    for i in range(p.size):
        mi, vi, pi = _adam_values(p[i], g[i], m[i], v[i], b1, b2, c1, c2, wd, step_size,
                                  inv_bc2, eps_)
        ok &= abs(mi) + abs(vi) + abs(pi) < inf
    if ok:
        return UPDATE_OK
    bad_g = False
    bad_u = False
    for i in range(p.size):
        mi, vi, pi = _adam_values(p[i], g[i], m[i], v[i], b1, b2, c1, c2, wd, step_size,
                                  inv_bc2, eps_)
        bad_g |= not abs(g[i]) < inf
        bad_u |= (not abs(mi) < inf) | (not abs(vi) < inf) | (not abs(pi) < inf)
    if bad_g:
        return BAD_GRADIENT
    return BAD_UPDATE if bad_u else UPDATE_OK


_sgd_check = linked("optim.sgd_check")
_adam_check = linked("optim.adam_check")


@njit(**JIT_INLINE)
def _bad_kind(g):
    """The status of an in-place update that made a value non-finite:
    BAD_GRADIENT if a value of g is not finite (as ``sgd_check`` and
    ``adam_check`` decide it), else BAD_UPDATE."""
    inf = g.dtype.type(np.inf)
    bad_g = False
    for i in range(g.size):
        bad_g |= not abs(g[i]) < inf
    return BAD_GRADIENT if bad_g else BAD_UPDATE


@njit(**JIT_CHECK)
def sgd_fused(p, g, v, pn, vn, lr, momentum, dampening, weight_decay, nesterov, first):
    """``sgd_update`` and ``sgd_check`` in one pass: reads p, g, v once and
    writes the new parameters into pn and the new momentum into vn (vn is
    not touched without momentum); p, g and v are not written.  Returns the
    status ``sgd_check`` would (UPDATE_OK, BAD_GRADIENT, BAD_UPDATE); the
    caller adopts pn, vn only on UPDATE_OK, so a failed step changes
    nothing, as before (tests/test_optim.py::test_fused_equals_check_then_update).

    Why: a step read each parameter, gradient and state value twice (the
    check, then the update) and wrote it once; one pass into a second buffer
    reads them once (issue 16; docs/performance.md, "one pass").
    The arithmetic is ``sgd_update``'s, operation for operation, so the
    values written are bit for bit those of the in-place update."""
    inf = p.dtype.type(np.inf)
    lr_, mu, keep, damp, wd, mode = _sgd_constants(p, lr, momentum, dampening, weight_decay,
                                                   nesterov, first)
    ok = True
    for i in range(p.size):
        # the arithmetic of sgd_update and sgd_check, shared (_sgd_values)
        vi, pi = _sgd_values(p[i], g[i], v[i], lr_, mu, keep, damp, wd, mode)
        if mode != 0:
            vn[i] = vi
        pn[i] = pi
        ok &= abs(vi) + abs(pi) < inf
    if ok:
        return UPDATE_OK
    # rare (divergence): tell a bad gradient from a bad update exactly
    return _sgd_check(p, g, v, lr, momentum, dampening, weight_decay, nesterov, first)


@njit(**JIT_CHECK)
def adam_fused(p, g, m, v, pn, mn, vn, step, lr, beta1, beta2, eps, weight_decay):
    """``adam_update`` and ``adam_check`` in one pass, as ``sgd_fused``:
    reads p, g, m, v once, writes the new values into pn, mn, vn and
    returns the status; p, g, m, v are not written."""
    inf = p.dtype.type(np.inf)
    b1, b2, c1, c2, wd, step_size, inv_bc2, eps_ = _adam_constants(p, step, lr, beta1, beta2,
                                                                   eps, weight_decay)
    ok = True
    for i in range(p.size):
        mi, vi, pi = _adam_values(p[i], g[i], m[i], v[i], b1, b2, c1, c2, wd, step_size,
                                  inv_bc2, eps_)
        mn[i] = mi
        vn[i] = vi
        pn[i] = pi
        ok &= abs(mi) + abs(vi) + abs(pi) < inf
    if ok:
        return UPDATE_OK
    return _adam_check(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay)


@njit(**JIT_CHECK)
def sgd_in_place(p, g, v, lr, momentum, dampening, weight_decay, nesterov, first):
    """``sgd_fused`` writing over p and v (train_epoch's steps of a call of
    several, which keeps a copy to go back to: the caller restores it on a
    status other than UPDATE_OK).  A loop of its own: with pn = p, LLVM's
    alias checks send ``sgd_fused``'s loop to its scalar version (1.2x the
    step time at 784-256-128-10 b64).  Each new value is tested, not their
    sum, so that the status is the exact one without the old values."""
    inf = p.dtype.type(np.inf)
    lr_, mu, keep, damp, wd, mode = _sgd_constants(p, lr, momentum, dampening, weight_decay,
                                                   nesterov, first)
    ok = True
    for i in range(p.size):
        vi, pi = _sgd_values(p[i], g[i], v[i], lr_, mu, keep, damp, wd, mode)
        if mode != 0:
            v[i] = vi
        p[i] = pi
        ok &= (abs(vi) < inf) & (abs(pi) < inf)
    return UPDATE_OK if ok else _bad_kind(g)


@njit(**JIT_CHECK)
def sgd_journal(p, g, v, pn, vn, lr, momentum, dampening, weight_decay, nesterov, first):
    """``sgd_in_place`` that writes the old p and v into pn and vn as it
    goes, for a step that has no copy to go back to (``train_on_batch``, a
    short epoch): on a status other than UPDATE_OK the caller copies them
    back.  The same reads and writes as ``sgd_fused``, without the copy of
    the new values into p and v that a single step into second buffers
    needs after it (235 k parameters and momenta: ~0.1 ms, 0.3x the
    products of a 784-256-128-10 b64 step)."""
    inf = p.dtype.type(np.inf)
    lr_, mu, keep, damp, wd, mode = _sgd_constants(p, lr, momentum, dampening, weight_decay,
                                                   nesterov, first)
    ok = True
    for i in range(p.size):
        p0 = p[i]
        v0 = v[i]
        vi, pi = _sgd_values(p0, g[i], v0, lr_, mu, keep, damp, wd, mode)
        pn[i] = p0
        p[i] = pi
        if mode != 0:
            vn[i] = v0
            v[i] = vi
        ok &= (abs(vi) < inf) & (abs(pi) < inf)
    return UPDATE_OK if ok else _bad_kind(g)


@njit(**JIT_CHECK)
def adam_journal(p, g, m, v, pn, mn, vn, step, lr, beta1, beta2, eps, weight_decay):
    """``adam_in_place`` keeping the old values in pn, mn, vn, as
    ``sgd_journal``."""
    inf = p.dtype.type(np.inf)
    b1, b2, c1, c2, wd, step_size, inv_bc2, eps_ = _adam_constants(p, step, lr, beta1, beta2,
                                                                   eps, weight_decay)
    ok = True
    for i in range(p.size):
        p0 = p[i]
        m0 = m[i]
        v0 = v[i]
        mi, vi, pi = _adam_values(p0, g[i], m0, v0, b1, b2, c1, c2, wd, step_size, inv_bc2,
                                  eps_)
        pn[i] = p0
        mn[i] = m0
        vn[i] = v0
        m[i] = mi
        v[i] = vi
        p[i] = pi
        ok &= (abs(mi) < inf) & (abs(vi) < inf) & (abs(pi) < inf)
    return UPDATE_OK if ok else _bad_kind(g)


@njit(**JIT_CHECK)
def adam_in_place(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """``adam_fused`` writing over p, m and v, as ``sgd_in_place``."""
    inf = p.dtype.type(np.inf)
    b1, b2, c1, c2, wd, step_size, inv_bc2, eps_ = _adam_constants(p, step, lr, beta1, beta2,
                                                                   eps, weight_decay)
    ok = True
    for i in range(p.size):
        mi, vi, pi = _adam_values(p[i], g[i], m[i], v[i], b1, b2, c1, c2, wd, step_size,
                                  inv_bc2, eps_)
        m[i] = mi
        v[i] = vi
        p[i] = pi
        ok &= (abs(mi) < inf) & (abs(vi) < inf) & (abs(pi) < inf)
    return UPDATE_OK if ok else _bad_kind(g)


# The dispatchers below call the loops through the table of linking.py: each
# loop is compiled once, on its own, when first used.
_sgd_update = linked("optim.sgd_update")
_adam_update = linked("optim.adam_update")
_sgd_fused = linked("optim.sgd_fused")
_adam_fused = linked("optim.adam_fused")
_sgd_in_place = linked("optim.sgd_in_place")
_adam_in_place = linked("optim.adam_in_place")
_sgd_journal = linked("optim.sgd_journal")
_adam_journal = linked("optim.adam_journal")


@njit(**JIT_INLINE)
def check_update(kind, p, g, s1, s2, hp, step):
    """Status (UPDATE_OK, BAD_GRADIENT, BAD_UPDATE) of the update
    ``apply_update`` would make with the same arguments; writes nothing."""
    if kind == ADAM:
        return _adam_check(p, g, s1, s2, step, hp[0], hp[1], hp[2], hp[3], hp[4])
    return _sgd_check(p, g, s1, hp[0], hp[1], hp[2], hp[3], hp[4] != 0.0, step == 1)


@njit(**JIT_INLINE)
def apply_update(kind, p, g, s1, s2, hp, step):
    """Dispatch on optimizer kind.  hp (float64): SGD [lr, momentum,
    dampening, weight_decay, nesterov]; Adam [lr, beta1, beta2, eps,
    weight_decay].  ``step`` is the 1-based update count (Adam)."""
    if kind == ADAM:
        _adam_update(p, g, s1, s2, step, hp[0], hp[1], hp[2], hp[3], hp[4])
    else:
        _sgd_update(p, g, s1, hp[0], hp[1], hp[2], hp[3], hp[4] != 0.0, step == 1)


@njit(**JIT)
def checked_update(kind, p, g, s1, s2, hp, step):
    """``check_update``, then ``apply_update`` when it passes: the status,
    with p, s1, s2 updated in place only on UPDATE_OK (``Optimizer.step``).

    Two passes, one call.  A single pass needs the old values kept
    somewhere; a journal of them (``fused_update`` with JOURNAL) measured
    0.7-0.9x the two passes for Adam up to 65 k parameters but 1.1-1.8x for
    SGD from 32 k and for Adam from 131 k, with 2-3 extra buffers of the
    parameters' size (docs/performance.md, "Optimizer.step")."""
    status = check_update(kind, p, g, s1, s2, hp, step)
    if status == UPDATE_OK:
        apply_update(kind, p, g, s1, s2, hp, step)
    return status


@njit(**JIT_INLINE)
def fused_update(kind, p, g, s1, s2, hp, step, pn, s1n, s2n):
    """``check_update`` and ``apply_update`` in one pass that writes the new
    parameters and state into pn, s1n, s2n (read p, s1, s2; write the
    others) and returns the status; on UPDATE_OK the caller adopts them.
    With pn = p (and s1n, s2n = s1, s2) the update is made in place
    (``sgd_in_place``), and on another status the caller restores p, s1, s2
    from its copy.  With ``JOURNAL`` added to ``kind`` it is made in place
    and the old values go into pn, s1n, s2n (``sgd_journal``), which the
    caller copies back on another status."""
    if kind >= JOURNAL:
        if kind - JOURNAL == ADAM:
            return _adam_journal(p, g, s1, s2, pn, s1n, s2n, step, hp[0], hp[1], hp[2], hp[3],
                                 hp[4])
        return _sgd_journal(p, g, s1, pn, s1n, hp[0], hp[1], hp[2], hp[3], hp[4] != 0.0,
                            step == 1)
    if pn.ctypes.data == p.ctypes.data:
        if kind == ADAM:
            return _adam_in_place(p, g, s1, s2, step, hp[0], hp[1], hp[2], hp[3], hp[4])
        return _sgd_in_place(p, g, s1, hp[0], hp[1], hp[2], hp[3], hp[4] != 0.0, step == 1)
    if kind == ADAM:
        return _adam_fused(p, g, s1, s2, pn, s1n, s2n, step, hp[0], hp[1], hp[2], hp[3],
                           hp[4])
    return _sgd_fused(p, g, s1, pn, s1n, hp[0], hp[1], hp[2], hp[3], hp[4] != 0.0,
                      step == 1)


@intrinsic
def copy_into(typingctx, dst, src):
    """dst[:] = src for two C-contiguous 1-D arrays of one dtype (the
    smaller size is copied): one ``llvm.memcpy``.  Why not a loop: the step
    and the epoch copy at three places (``adopt_update``), and each inlined,
    vectorised copy loop cost the first fit's compile ~0.1 s (a leaf of its
    own cost as much again); ``dst[:] = src`` compiles NumPy's
    shape-mismatch message formatting."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array)
            and dst.ndim == src.ndim == 1 and dst.layout == src.layout == "C"
            and dst.dtype == src.dtype and dst.mutable):
        return None

    def codegen(context, builder, sig, args):
        d = context.make_array(sig.args[0])(context, builder, value=args[0])
        s = context.make_array(sig.args[1])(context, builder, value=args[1])
        count = builder.select(builder.icmp_signed("<", d.nitems, s.nitems), d.nitems,
                               s.nitems)
        itemsize = context.get_abi_sizeof(context.get_data_type(sig.args[0].dtype))
        cgutils.raw_memcpy(builder, d.data, s.data, count, itemsize)
        return context.get_dummy_value()

    return types.none(dst, src), codegen


@njit(**JIT_INLINE)
def adopt_update(kind, hp, pn, s1n, s2n, p, s1, s2):
    """Copy what ``fused_update`` wrote (pn, and the state it writes) into
    p, s1, s2: at the end of an epoch whose last step left the values in the
    second buffers (or, the other way round, to keep a copy of them).  SGD
    without momentum writes no state, so none is copied (its s1n holds
    nothing)."""
    copy_into(p, pn)
    if kind == ADAM:
        copy_into(s1, s1n)
        copy_into(s2, s2n)
    elif hp[1] != 0.0:
        copy_into(s1, s1n)
