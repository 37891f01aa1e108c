"""Cost of data-parallel ``finish_step`` against its two former versions.

``OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/mpi_finish_step.py
[--alpha 1e-4]``: times ``_kernels.distributed.finish_step`` (one pass: the
scaling, the L2 term and ``optim.fused_update`` chunk by chunk, the new
values written to second buffers that the caller adopts when all are
finite; the timed loop alternates the buffers as the MPI fit does) against
the former versions below: three passes (scale and L2 over the whole
buffer, then ``optim.check_update``, then the update in place; until issue
16's third round) and copy-and-undo (copies of the parameters and optimizer
state, the update, finiteness checks of the results, restore on failure).
float32, alone, interleaved over rounds, medians; checks that all three
give bit-identical parameters and losses.  Each timed call includes one
copy of the gradient buffer (the kernels scale it in place).
"""

import argparse
import itertools
import statistics
import time

import numpy as np
from numba import njit

import fastbp as fb
from fastbp._kernels import distributed as dk
from fastbp._kernels import records as rec
from fastbp._kernels.config import JIT
from fastbp._kernels.optim import all_finite, apply_update, check_update

WEIGHT, ROWS, LOSS = dk.WEIGHT, dk.ROWS, dk.LOSS


@njit(**dict(JIT, inline="always"))
def scale_gradient(params, g, widths, alpha, inv, reg):
    """The former first pass: g = g * inv + reg * W on the weights (g * inv
    on the biases) over the whole buffer; returns sum(W**2) (0 when alpha
    is 0)."""
    t = params.dtype.type
    l2 = t(0)
    off = 0
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
    return l2


@njit(**JIT)
def finish_step_3pass(params, gbuf, widths, alpha, opt_kind, hp, s1, s2, step):
    """The former finish_step: scale and L2 over the whole buffer, then the
    check, then the update (three passes over the parameters)."""
    P = params.size
    t = params.dtype.type
    S = gbuf[P + WEIGHT]
    loss_sum = gbuf[P + LOSS]
    if not np.isfinite(loss_sum) or not S > 0:
        return 1, loss_sum, step
    g = gbuf[:P]
    inv = t(1) / S
    reg = t(alpha) / S
    l2 = scale_gradient(params, g, widths, alpha, inv, reg)
    batch_loss = loss_sum * inv + t(0.5) * reg * l2
    if not np.isfinite(batch_loss):
        return 1, batch_loss, step
    status = check_update(opt_kind, params, g, s1, s2, hp, step + 1)
    if status != 0:
        return status, batch_loss, step
    apply_update(opt_kind, params, g, s1, s2, hp, step + 1)
    return 0, batch_loss, step + 1


@njit(**JIT)
def finish_step_undo(params, gbuf, widths, alpha, opt_kind, hp, s1, s2, step, keep_p, keep_1,
                keep_2):
    """The former finish_step (until the check-then-update change), kept
    here as the reference: check, scale, regularise and update.

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
    l2 = scale_gradient(params, g, widths, alpha, inv, reg)
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


ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--alpha", type=float, default=1e-4, help="L2 term (default 1e-4)")
ap.add_argument("--rounds", type=int, default=9)
alpha = ap.parse_args().alpha
rounds = ap.parse_args().rounds
KINDS = ("undo", "3pass", "new")
for widths in ((64, 128, 10), (784, 256, 128, 10), (1024, 2048, 2048, 10)):
    w = np.array(widths, dtype=np.int64)
    P = sum(a * b + b for a, b in itertools.pairwise(widths))
    rng = np.random.default_rng(0)
    for name, opt in (("SGD(momentum=0.9)", fb.SGD(lr=1e-3, momentum=0.9)),
                      ("Adam", fb.Adam(lr=1e-3))):
        hp = opt.hyperparameters()
        kind = opt.kind
        p0 = rng.standard_normal(P).astype(np.float32)
        g0 = np.zeros(P + dk.TAIL, np.float32)
        g0[:P] = rng.standard_normal(P)
        g0[P], g0[P + 1], g0[P + 2] = 64, 64, 10
        bufs = {k: [p0.copy(), g0.copy(), np.zeros(P, np.float32), np.zeros(P, np.float32)]
                for k in KINDS}
        # the current version alternates with second buffers (as the MPI fit does)
        second = [np.zeros(P, np.float32) for _ in range(3)]
        keep = (np.empty(P, np.float32), np.empty(P, np.float32),
                np.empty(P if kind == 1 else 0, np.float32))
        times = {k: [] for k in KINDS}
        losses = {}
        reps = 3 if P > 1e6 else (50 if P > 1e5 else 500)
        for r in range(rounds):
            order = KINDS if r % 2 else KINDS[::-1]
            for k in order:
                p, g, s1, s2 = bufs[k]
                t0 = time.perf_counter()
                for _ in range(reps):
                    g[:] = g0  # the same gradient each time (copy timed in all)
                    if k == "undo":
                        st = finish_step_undo(p, g, w, alpha, kind, hp, s1, s2, 5, *keep)
                    elif k == "3pass":
                        st = finish_step_3pass(p, g, w, alpha, kind, hp, s1, s2, 5)
                    else:
                        st = dk.finish_step(rec.network(p, p[:0], w, w[:0], alpha), g,
                                            rec.optimizer(kind, hp, s1, s2, 5), tuple(second))
                        assert st[0] == 0
                        bufs[k][0], bufs[k][2], bufs[k][3], second = (
                            second[0], second[1], second[2], [p, s1, s2])
                        p, s1, s2 = bufs[k][0], bufs[k][2], bufs[k][3]
                    assert st[0] == 0
                losses[k] = float(st[1])
                if r:
                    times[k].append((time.perf_counter() - t0) / reps)
        # the same arithmetic: the same parameters and loss after the same calls
        for k in KINDS[:-1]:
            assert np.array_equal(bufs[k][0], bufs["new"][0]), k
            assert losses[k] == losses["new"], (k, losses)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{'-'.join(map(str, widths)):>18} P={P:>8} {name:>18}: "
              + "  ".join(f"{k} {v * 1e3:7.3f} ms" for k, v in med.items())
              + f"  new/3pass {med['new'] / med['3pass']:.3f}", flush=True)
