"""Child process for tests/test_interrupt.py: long work that a SIGINT from the
parent interrupts.

    python interrupt_worker.py MODE [REPEATS]

Prepares (compiles on tiny data), then REPEATS times: prints "ready", runs
the long work of MODE, and on KeyboardInterrupt prints one JSON line with
the time it was raised (``time.time()``, compared by the parent with the
time it sent the signal) and what the model holds then.  MODE "resume"
also continues the interrupted fit, checkpoint included, and compares with
an uninterrupted run.  Under mpiexec (MODE "mpi") every rank prints.
"""

import json
import os
import signal
import sys
import tempfile
import time

import numpy as np

import fastbp as fb

# SIGINT raises KeyboardInterrupt even when the tests run with SIGINT ignored
# (a shell's background job), which this process would inherit
signal.signal(signal.SIGINT, signal.default_int_handler)

WIDTHS = [64, 256, 256, 10]
N = 6000
BATCH = 16


def data(seed=0, n=N):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, WIDTHS[0])).astype(np.float32)
    y = rng.integers(0, WIDTHS[-1], n)
    return X, y


def say(**fields):
    print(json.dumps(fields), flush=True)


def model_state(m):
    return {"step": None if m.optimizer is None else m.optimizer.step_,
            "epochs": m.epochs_trained, "partial": m.partial_epoch,
            "history": len(m.history.get("loss", [])),
            "finite": bool(np.isfinite(m.flat_params).all())}


def interrupted(**extra):
    say(t=time.time(), **extra)


def run(mode, repeats):
    X, y = data()
    m = fb.MLP(WIDTHS, seed=0)
    if mode == "sparse":
        import scipy.sparse as sp

        X[np.abs(X) < 1.0] = 0
        X = sp.csr_matrix(X)
    if mode == "lbfgs":
        from fastbp.sklearn import MLPClassifier

        est = MLPClassifier(WIDTHS[1:-1], solver="lbfgs", max_iter=3, random_state=0)
        est.fit(X[:64], y[:64])
        Xb, yb = data(1, 60000)
    else:
        m.fit(X[:64], y[:64], epochs=1, batch_size=BATCH)
        m.predict(X[:64])
        m.loss_and_grad(X[:64], y[:64])
        # made before "ready": the parent times fastbp, not the data
        Xb, yb = data(2, {"predict": 200000, "loss_and_grad": 200000,
                          "progress": 60000}.get(mode, 64))
    for _ in range(repeats):
        print("ready", flush=True)
        try:
            if mode in ("fit", "sparse"):
                m.fit(X, y, epochs=10**6, batch_size=BATCH)
            elif mode == "progress":  # one long epoch (~1 s on 2 cores)
                m.fit(Xb, yb, epochs=10**6, batch_size=BATCH, progress=True)
            elif mode == "predict":
                while True:
                    m.predict_proba(Xb)
            elif mode == "loss_and_grad":
                while True:
                    m.loss_and_grad(Xb, yb)
            elif mode == "lbfgs":
                est.set_params(max_iter=10**6, tol=0)
                est.fit(Xb, yb)
            say(error="not interrupted")
        except KeyboardInterrupt:
            if mode == "lbfgs":
                w = np.concatenate([c.ravel() for c in est.coefs_])
                interrupted(finite=bool(np.isfinite(w).all()))
            else:
                interrupted(**model_state(m))


def resume():
    """Interrupt a fit (checkpointed), continue it in memory and from the
    checkpoint, and compare both with an uninterrupted fit of as many
    epochs (the one with the partial epoch completed)."""
    X, y = data()
    ck = os.path.join(tempfile.mkdtemp(), "ck.npz")
    m = fb.MLP(WIDTHS, seed=0)
    m.fit(X[:64], y[:64], epochs=1, batch_size=BATCH, optimizer=fb.Adam(1e-3))
    print("ready", flush=True)
    try:
        m.fit(X, y, epochs=10**6, batch_size=BATCH, checkpoint=ck)
    except KeyboardInterrupt:
        t = time.time()
    state = model_state(m)
    loaded = fb.MLP.load(ck)
    same_file = bool(np.array_equal(loaded.flat_params, m.flat_params)
                     and loaded.optimizer.step_ == m.optimizer.step_
                     and loaded.partial_epoch == m.partial_epoch)
    m.fit(X, y, epochs=1, batch_size=BATCH)  # the rest of the interrupted epoch
    loaded.fit(X, y, epochs=1, batch_size=BATCH)
    ref = fb.MLP(WIDTHS, seed=0)
    ref.fit(X[:64], y[:64], epochs=1, batch_size=BATCH, optimizer=fb.Adam(1e-3))
    ref.fit(X, y, epochs=m.epochs_trained - 1, batch_size=BATCH)
    say(t=t, same_file=same_file, **state,
        continued=bool(np.array_equal(m.flat_params, ref.flat_params)),
        from_checkpoint=bool(np.array_equal(loaded.flat_params, ref.flat_params)),
        step_after=m.optimizer.step_, step_ref=ref.optimizer.step_,
        history_acc=m.history["accuracy"] == ref.history["accuracy"],
        history_loss=bool(np.allclose(m.history["loss"], ref.history["loss"],
                                      rtol=1e-12, atol=0)))


def mpi():
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    X, y = data(rank, 4000)
    m = fb.MLP(WIDTHS, seed=0)
    m.fit(X[:64], y[:64], epochs=1, batch_size=BATCH, comm=comm)
    comm.Barrier()
    say(rank=rank, pid=os.getpid())
    try:
        m.fit(X, y, epochs=10**6, batch_size=BATCH, comm=comm)
    except KeyboardInterrupt:
        interrupted(rank=rank, **model_state(m))
        sys.exit(130)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "resume":
        resume()
    elif mode == "mpi":
        mpi()
    else:
        run(mode, int(sys.argv[2]) if len(sys.argv) > 2 else 1)
