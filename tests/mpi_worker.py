"""MPI worker for tests/test_mpi.py: ``mpiexec -n P python tests/mpi_worker.py OUT [names]``.

Runs the named scenarios (default: all of ``SCENARIOS`` that fit the rank
count) on this rank's shard and writes what each rank ends with to
``OUT/<scenario>.rank<r>.npz`` (final parameters, history, the error raised).
The checks run in the test process, against one process stepping on the
union batches with ``train_on_batch``.
"""

import json
import os
import sys
import time

import numpy as np

import fastbp as fb
from fastbp.distributed import shard_rows

# set under mpiexec (see the end); tests/test_mpi.py imports this module for
# its data and shards without initialising MPI
comm = None
rank, size = 0, 1


def data(n, d=6, classes=3, seed=0, dtype="float64", multilabel=False):
    """The full data set; every rank makes it and keeps its own rows.
    ``multilabel``: y is a 0/1 indicator matrix (n, classes) instead of labels."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, classes, n)
    sw = rng.uniform(0.2, 2.0, n)
    if multilabel:
        y = (rng.uniform(size=(n, classes)) < 0.4).astype(np.float64)
    return X, y, sw


def model(seed=3, alpha=0.0, activation="tanh", output="softmax"):
    # the other ranks draw other initial weights on purpose: fit broadcasts rank 0's
    return fb.MLP([6, 7, 5, 3], activation=activation, dtype="float64",
                  seed=seed + 100 * rank, alpha=alpha, output=output)


def save(out, name, m, history=None, error=None):
    extra = {}
    if error is not None:
        extra = {"error_type": type(error).__name__, "error": str(error),
                 "epoch": getattr(error, "epoch", -1), "step": getattr(error, "step", -1)}
    np.savez(os.path.join(out, f"{name}.rank{rank}.npz"), params=m.flat_params,
             info=json.dumps({"history": history, **extra}))


def run(name, out, n, opt, epochs=2, batch_size=8, weighted=False, alpha=0.0,
        shuffle=False, checkpoint=None, output="softmax"):
    X, y, sw = data(n, multilabel=output == "sigmoid")
    part = shard_rows(n, rank, size)
    m = model(alpha=alpha, output=output)
    h = m.fit(X[part], y[part], epochs=epochs, batch_size=batch_size, optimizer=opt,
              shuffle=shuffle, sample_weight=sw[part] if weighted else None,
              checkpoint=checkpoint, validation_data=(X[part], y[part]), comm=comm)
    save(out, name, m, history=h)


def sgd(out):
    run("sgd", out, 45, fb.SGD(lr=0.1, momentum=0.9), alpha=1e-3)


def adam(out):
    run("adam", out, 40, fb.Adam(lr=0.01), epochs=3)


def weighted(out):
    run("weighted", out, 41, fb.SGD(lr=0.1, momentum=0.9, nesterov=True), weighted=True)


def uneven(out):
    # 23 rows: shards of 12/11 (2 ranks) or 8/8/7 (3 ranks); batch 5 per rank
    run("uneven", out, 23, fb.Adam(lr=0.02), epochs=2, batch_size=5)


def multilabel(out):
    # sigmoid output, 0/1 indicator targets; weighted, uneven (27 rows: 14/13,
    # batch 6 per rank), L2
    run("multilabel", out, 27, fb.SGD(lr=0.2, momentum=0.9), epochs=2, batch_size=6,
        weighted=True, alpha=1e-3, output="sigmoid")


def shuffled(out):
    run("shuffled", out, 30, fb.SGD(lr=0.05, momentum=0.5), epochs=2, shuffle=True)


def checkpoint(out):
    run("checkpoint", out, 30, fb.Adam(lr=0.01), epochs=2, checkpoint=os.path.join(
        out, "ckpt.npz"))


def resume(out):
    """Continue the checkpoint written by a run with another rank count."""
    X, y, _ = data(30)
    part = shard_rows(30, rank, size)
    m = fb.MLP.load(os.path.join(out, "ckpt.npz"))
    h = m.fit(X[part], y[part], epochs=1, batch_size=8, shuffle=False, comm=comm)
    save(out, "resume", m, history=h)


def diverge(out):
    """Rank 1 holds a huge row in its second batch: every rank must stop."""
    X, y, _ = data(32)
    part = shard_rows(32, rank, size)
    Xs = X[part].copy()
    if rank == 1:
        Xs[9] = np.finfo(np.float64).max  # overflows to inf, then NaN, in the ReLU net
    m = model(activation="relu")
    err = None
    try:
        m.fit(Xs, y[part], epochs=1, batch_size=8, optimizer=fb.SGD(lr=0.1), shuffle=False,
              comm=comm)
    except fb.DivergenceError as exc:
        err = exc
    save(out, "diverge", m, error=err)


def diverge_update(out):
    """Adam's first step size lr / (1 - beta1) overflows: the update is not
    finite, is not applied, and every rank raises."""
    X, y, _ = data(32)
    part = shard_rows(32, rank, size)
    m = model()
    err = None
    try:
        m.fit(X[part], y[part], epochs=1, batch_size=8, optimizer=fb.Adam(lr=1e308),
              shuffle=False, comm=comm)
    except fb.DivergenceError as exc:
        err = exc
    save(out, "diverge_update", m, error=err)


def diverge_state(out):
    """A non-finite update at a later step (Adam's step 3 after one epoch
    of 2 steps, with lr raised to 1e308: lr / (1 - beta1**3) overflows):
    every rank raises, parameters, optimizer state and step count as after
    step 2."""
    X, y, _ = data(32)
    part = shard_rows(32, rank, size)
    m = model()
    opt = fb.Adam(lr=0.01)
    m.fit(X[part], y[part], epochs=1, batch_size=8, optimizer=opt, shuffle=False, comm=comm)
    before = [m.flat_params.copy(), *(s.copy() for s in opt.state_)]
    step = opt.step_
    opt.lr = 1e308
    err = None
    try:
        m.fit(X[part], y[part], epochs=1, batch_size=8, optimizer=opt, shuffle=False,
              comm=comm)
    except fb.DivergenceError as exc:
        err = exc
    save(out, "diverge_state", m, error=err)
    np.savez(os.path.join(out, f"diverge_state_opt.rank{rank}.npz"),
             params_before=before[0], s1_before=before[1], s2_before=before[2],
             s1=opt.state_[0], s2=opt.state_[1], step=[step, opt.step_])


def diverge_mid(out):
    """An update that grows 99-fold a step (weight decay 1e4 at lr 0.01, from
    weights near 1e300) is not finite at the 4th of the epoch's 8 steps:
    every rank raises with the parameters, state and step count after step
    3, bit for bit those of a fit over the 3 batches before it.  The steps
    update in place: the failed one restores the epoch's copy and replays
    the good steps."""
    X, y, _ = data(32)
    part = shard_rows(32, rank, size)

    def fresh():
        m = fb.MLP([6, 3], dtype="float64", seed=3 + 100 * rank)
        m.flat_params[:] *= 1e300
        return m, fb.SGD(lr=0.01, momentum=0.5, weight_decay=1e4)

    m, opt = fresh()
    err = None
    try:
        m.fit(X[part], y[part], epochs=1, batch_size=2, optimizer=opt, shuffle=False,
              comm=comm)
    except fb.DivergenceError as exc:
        err = exc
    save(out, "diverge_mid", m, error=err)
    ref, ref_opt = fresh()
    good = 2 * (err.step - 1) if err is not None else 0
    ref.fit(X[part][:good], y[part][:good], epochs=1, batch_size=2, optimizer=ref_opt,
            shuffle=False, comm=comm)
    np.savez(os.path.join(out, f"diverge_mid_ref.rank{rank}.npz"), params=ref.flat_params,
             s1=opt.state_[0], s1_ref=ref_opt.state_[0], step=[opt.step_, ref_opt.step_])


def bad_input(out):
    """Rank 1 passes the wrong number of columns: every rank raises."""
    X, y, _ = data(20)
    part = shard_rows(20, rank, size)
    Xs = X[part] if rank != 1 else X[part][:, :5]
    m = model()
    err = None
    try:
        m.fit(Xs, y[part], epochs=1, batch_size=4, comm=comm)
    except (ValueError, TypeError) as exc:
        err = exc
    save(out, "bad_input", m, error=err)
    try:  # checked locally, before any collective
        m.fit(X[part], y[part], comm="COMM_WORLD")
    except TypeError as exc:
        save(out, "bad_comm", m, error=exc)
    try:  # an output the data-parallel step has no loss branch for
        fb.MLP([6, 7, 5, 3], output="exp", dtype="float64").fit(
            X[part], np.abs(X[part][:, :3]), epochs=1, batch_size=4, comm=comm)
    except ValueError as exc:
        save(out, "bad_output", m, error=exc)


def midsaves(out):
    """A checkpoint after every step (checkpoint_every of a microsecond):
    what each save writes must be the parameters of the step just taken,
    wherever the alternating steps left them.  Rank 0 records them."""
    import datetime

    X, y, _ = data(30)
    part = shard_rows(30, rank, size)
    m = model()
    saved = []
    real_save = m.save

    def save_and_record(path, include_optimizer=False):
        saved.append(m.flat_params.copy())
        real_save(path, include_optimizer=include_optimizer)

    m.save = save_and_record
    m.fit(X[part], y[part], epochs=2, batch_size=4, optimizer=fb.Adam(lr=0.01),
          shuffle=False, checkpoint=os.path.join(out, "midsaves.npz"),
          checkpoint_every=datetime.timedelta(microseconds=1), comm=comm)
    np.savez(os.path.join(out, f"midsaves_saved.rank{rank}.npz"),
             saved=np.array(saved if saved else np.zeros((0, m.n_params))))
    save(out, "midsaves", m)


SCENARIOS = {f.__name__: f for f in (sgd, adam, weighted, uneven, multilabel, shuffled, checkpoint,
                                       resume, diverge, diverge_update, diverge_state, diverge_mid,
                                       bad_input, midsaves)}

if __name__ == "__main__":
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    out = sys.argv[1]
    # Rank 0 compiles (or loads) the kernels alone while the others sleep, so
    # that the ranks do not all compile the same code at once on a small CI
    # machine; the others then load it from Numba's disk cache.
    flag = os.path.join(out, f".warm{size}")
    if rank == 0:
        X, y, _ = data(16)
        model().fit(X, y, epochs=1, batch_size=8, validation_data=(X, y),
                    comm=MPI.COMM_SELF)
        open(flag, "w").close()
    else:
        while not os.path.exists(flag):
            time.sleep(0.05)
    comm.Barrier()
    for name in sys.argv[2:] or SCENARIOS:
        SCENARIOS[name](out)
    comm.Barrier()
