"""Output losses fused with their gradient with respect to the logits.

Every kernel returns the *sum* over rows of ``row_weight * row_loss`` and
writes the gradient of ``sum(row_weight * row_loss)``; callers choose the row
weights (``1/n`` for a plain mean).  Passing the weights in, rather than
dividing afterwards, keeps one pass over memory and lets sample weights cost
nothing extra.
"""

import numpy as np
from numba import njit

from .config import JIT, JIT_INLINE
from .elementary import exp


@njit(**JIT_INLINE)
def exp_in_place(a):
    """a = exp(a) in place for a C-contiguous array, as one flat loop (the
    softmax kernels' middle pass: a loop over each short row vectorised
    badly, ``softmax_xent_labels``)."""
    flat = a.reshape(a.size)
    for k in range(flat.size):
        flat[k] = exp(flat[k])


@njit(**JIT)
def row_weights(n, sample_weight, out):
    """out[:n] = 1/n, or sample_weight / sample_weight.sum() if given.

    A batch whose rows all weigh 0 gets weights 0 (it contributes no loss
    and no gradient) instead of dividing 0 by 0.
    """
    if sample_weight.size == 0:
        c = out.dtype.type(1.0) / out.dtype.type(n)
        for i in range(n):
            out[i] = c
    else:
        s = 0.0
        for i in range(n):
            s += sample_weight[i]
        if s > 0.0:
            for i in range(n):
                out[i] = out.dtype.type(sample_weight[i] / s)
        else:
            for i in range(n):
                out[i] = out.dtype.type(0.0)


@njit(**JIT)
def softmax_xent_labels(z, y, w, dz):
    """Softmax cross-entropy for integer labels.

    z (n, c) logits, y (n,) int64 labels in [0, c), w (n,) row weights,
    dz (n, c) output (may alias z).  Returns (sum_i w_i * loss_i, n_correct)
    where n_correct counts rows whose arg-max is the label.

    Loss_i = logsumexp(z_i) - z_i[y_i], computed around the row maximum so
    neither exp overflows nor log sees 0.  Gradient: w_i * (softmax(z_i) - e_y),
    the ``P - Y`` form, which is exact here because a one-hot row sums to 1.
    """
    n, c = z.shape
    zero = z.dtype.type(0)
    loss = zero
    correct = 0
    # Three passes: each row's maximum, arg-max and shifted logits; exp over
    # the whole block as one flat loop; each row's sum (in order, no
    # reassociation), loss and gradient.  exp row by row ran as a vector
    # loop of c (10) elements with its remainder per row: 34 ns a row at
    # 32 x 10 float32, 43 at 200 x 10 float64; the flat loop 22 and 29
    # (docs/performance.md, "Issue 17: mid-size products ... and the
    # softmax").  The loss adds each row's max - z[label] in the first pass
    # and its log-sum in the third.
    for i in range(n):
        zi = z[i]
        di = dz[i]
        m = zi[0]
        arg = 0
        for j in range(1, c):
            if zi[j] > m:
                m = zi[j]
                arg = j
        lab = y[i]
        if arg == lab:
            correct += 1
        loss += w[i] * (m - zi[lab])  # z[label] read before dz (which may alias z) is written
        for j in range(c):
            di[j] = zi[j] - m
    exp_in_place(dz)
    for i in range(n):
        di = dz[i]
        s = zero
        for j in range(c):
            s += di[j]
        loss += w[i] * np.log(s)
        scale = w[i] / s
        for j in range(c):
            di[j] = di[j] * scale
        di[y[i]] -= w[i]
    return loss, correct


@njit(**JIT)
def softmax_xent_targets(z, t, w, dz):
    """Softmax cross-entropy for target rows (one-hot or soft).

    z, t, dz (n, c); w (n,) row weights.  Loss_i = sum_j t_ij (lse_i - z_ij).
    Gradient: w_i * (sum_j t_ij * p_i - t_i), which is ``P - T`` when the row
    sums to 1 and stays exact when it does not.  Returns
    (sum_i w_i loss_i, n_correct) with n_correct counting rows whose arg-max
    matches the arg-max of the target row.
    """
    n, c = z.shape
    zero = z.dtype.type(0)
    loss = zero
    correct = 0
    # three passes, as softmax_xent_labels: the loss adds each row's
    # tsum * max - sum(t * z) in the first and tsum * log-sum in the third
    # (tsum summed again there: nowhere to keep it without a buffer)
    for i in range(n):
        zi = z[i]
        ti = t[i]
        di = dz[i]
        m = zi[0]
        arg = 0
        targ = 0
        tm = ti[0]
        for j in range(1, c):
            if zi[j] > m:
                m = zi[j]
                arg = j
            if ti[j] > tm:
                tm = ti[j]
                targ = j
        tsum = zero
        tz = zero
        for j in range(c):
            tsum += ti[j]
            tz += ti[j] * zi[j]
        loss += w[i] * (tsum * m - tz)
        if arg == targ:
            correct += 1
        for j in range(c):  # z read above: dz may alias it
            di[j] = zi[j] - m
    exp_in_place(dz)
    for i in range(n):
        ti = t[i]
        di = dz[i]
        s = zero
        tsum = zero
        for j in range(c):
            s += di[j]
            tsum += ti[j]
        loss += w[i] * (tsum * np.log(s))
        scale = w[i] * tsum / s
        for j in range(c):
            di[j] = di[j] * scale - w[i] * ti[j]
    return loss, correct


@njit(**JIT)
def half_squared_error(p, t, w, dp):
    """Regression loss: returns sum_i w_i * 0.5 * ||p_i - t_i||^2 and writes
    dp_i = w_i * (p_i - t_i).  p, t, dp (n, k); dp may alias p."""
    n, k = p.shape
    zero = p.dtype.type(0)
    half = p.dtype.type(0.5)
    loss = zero
    for i in range(n):
        pi = p[i]
        ti = t[i]
        di = dp[i]
        acc = zero
        for j in range(k):
            r = pi[j] - ti[j]
            acc += r * r
            di[j] = w[i] * r
        loss += w[i] * half * acc
    return loss


@njit(**JIT)
def softmax_rows(z):
    """z = softmax(z) row by row, in place, (n, c) C-contiguous."""
    n, c = z.shape
    zero = z.dtype.type(0)
    one = z.dtype.type(1)
    # three passes, as softmax_xent_labels (the same values as row by row)
    for i in range(n):
        zi = z[i]
        m = zi[0]
        for j in range(1, c):
            m = max(m, zi[j])
        for j in range(c):
            zi[j] = zi[j] - m
    exp_in_place(z)
    for i in range(n):
        zi = z[i]
        s = zero
        for j in range(c):
            s += zi[j]
        inv = one / s
        for j in range(c):
            zi[j] *= inv


@njit(**JIT)
def sigmoid_xent(z, t, w, dz):
    """Sigmoid binary cross-entropy, summed over the k outputs of each row.

    z (n, k) logits, t (n, k) targets in [0, 1] (0/1 indicators or
    probabilities), w (n,) row weights, dz (n, k) output (may alias z).
    Returns (sum_i w_i * loss_i, n_correct).

    Loss_i = sum_j softplus(z_ij) - t_ij z_ij, which equals
    -t log(p) - (1 - t) log(1 - p) with p = sigmoid(z).  With
    e = exp(-|z|) <= 1 (no overflow) it is computed as
    ``(1 - t) max(z, 0) - t min(z, 0) + log(1 + e)``, where
    ``max(z, 0) - t z`` is split so that a confidently right label does not
    cancel two large terms, and where the logs of up to 64 factors
    ``1 + e`` in (1, 2] are taken at once as the log of their product (no
    overflow, never log(0); one log per 64 labels instead of one each).
    Gradient: w_i * (p_ij - t_ij), p = 1 / (1 + e) for z >= 0 and
    e / (1 + e) below.  n_correct counts rows whose k decisions ``p > 1/2``
    all equal ``t > 1/2`` (exact-match accuracy, as scikit-learn scores
    multilabel output).

    The inner loop has no branch (selects through ``max`` / ``min``): a
    branch on the sign of random logits is mispredicted half the time and
    cost twice the time of this whole loop (measured, see
    docs/performance.md).
    """
    n, k = z.shape
    zero = z.dtype.type(0)
    one = z.dtype.type(1)
    half = z.dtype.type(0.5)
    loss = zero
    correct = 0
    for i in range(n):
        zi = z[i]
        ti = t[i]
        di = dz[i]
        wi = w[i]
        acc = zero
        wrong = 0
        for j0 in range(0, k, 64):
            prod = one
            for j in range(j0, min(j0 + 64, k)):
                a = zi[j]
                y = ti[j]
                e = np.exp(-abs(a))
                s = one + e
                # numerator 1 for a >= 0, e below
                p = max(e, z.dtype.type(a >= zero)) / s
                acc += (one - y) * max(a, zero) - y * min(a, zero)
                prod *= s
                di[j] = wi * (p - y)
                wrong += (p > half) != (y > half)
            acc += np.log(prod)
        loss += wi * acc
        if wrong == 0:
            correct += 1
    return loss, correct


@njit(**JIT)
def poisson_log_link(z, t, w, dz):
    """Poisson loss with a log link (scikit-learn's ``loss="poisson"``).

    z (n, k) outputs before the exponential, t (n, k) non-negative targets,
    w (n,) row weights, dz (n, k) output (may alias z).  With mu = exp(z),
    Loss_i = sum_j t log(t / mu) - t + mu (the half Poisson deviance, 0 when
    mu == t; t log t taken as 0 at t == 0) and the gradient w_i * (mu - t).
    Returns sum_i w_i * Loss_i.
    """
    n, k = z.shape
    zero = z.dtype.type(0)
    loss = zero
    for i in range(n):
        zi = z[i]
        ti = t[i]
        di = dz[i]
        acc = zero
        for j in range(k):
            mu = np.exp(zi[j])
            y = ti[j]
            tlogt = y * np.log(y) if y > zero else zero
            acc += tlogt - y * zi[j] - y + mu
            di[j] = w[i] * (mu - y)
        loss += w[i] * acc
    return loss
