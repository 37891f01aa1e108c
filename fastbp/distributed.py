"""Data-parallel training over MPI (through mpi4py): ``MLP.fit(..., comm=comm)``.

Every rank passes its own shard of the rows.  The contract (docs/distributed.md):

* At the start of ``fit`` the parameters, the optimizer state and step count,
  ``epochs_trained`` and the history are broadcast from rank 0, so every rank
  holds identical parameters and optimizer state throughout.
* Step t on each rank uses that rank's next ``batch_size`` rows (``batch_size``
  is per rank).  Each rank computes the row-weighted *sum* of its rows'
  gradients and its row-weight total (the raw sample weights, or 1 per row);
  one ``Allreduce`` (sum) of the flat gradient buffer, with the totals as
  extra elements, combines them; every rank then divides by the global total,
  adds the L2 term ``alpha / total * W`` and applies the same optimizer
  update (checked first: a non-finite update writes nothing).  So one step
  equals one process's step over the union of the ranks' step-t batches.
* Every rank runs the same number of steps per epoch, the largest over the
  ranks; a rank whose shard is exhausted contributes no rows (zeros).
* With ``shuffle=True``, at each epoch rank 0 draws a 63-bit integer ``s``
  from the model's generator and broadcasts it; rank r shuffles its shard
  with ``numpy.random.default_rng([s, r])``.
* A non-finite loss, gradient or update anywhere makes every rank raise the
  same ``DivergenceError`` with the parameters from before that step.  An
  error on one rank (bad input, a failing checkpoint write, an exception
  during a step) is agreed on through a collective, so every rank raises;
  anything that escapes that aborts the job with ``comm.Abort`` rather than
  leave the other ranks waiting forever.
* Ctrl-C (SIGINT on any rank, in the main thread) sets a flag that rides
  in the per-step all-reduce (an element after the kernels' tail): at the
  next step every rank stops before updating, keeps the state of the last
  complete step (``model.partial_epoch`` says where the epoch stands),
  writes the checkpoint if one is given, and raises KeyboardInterrupt.  A
  second Ctrl-C raises at once (and so aborts the job).  ``checkpoint_every``
  as a time ("10min") is decided by rank 0's clock through the same
  all-reduce, so every rank saves at the same step.
* History (loss, accuracy, validation scores) and ``evaluate`` are global.
  Checkpoints are written by rank 0 only; a checkpoint resumes on any number
  of ranks (every rank loads it; rank 0's copy is broadcast).

The all-reduce is called from Python between two compiled calls per step
(``_kernels.distributed.local_sums`` and ``finish_step``); its cost is
measured in docs/distributed.md.
"""

import sys
import time
import traceback

import numpy as np

from . import _responsive as _r
from . import _validation as v
from ._kernels import distributed as _dk
from ._kernels import network as _net
from ._kernels import records as _rec
from ._kernels.optim import ADAM
from .network import CLASSIFIER_OUTPUTS

__all__ = ["RankFailedError", "evaluate", "fit", "shard_rows"]

#: Figures of this process's last data-parallel ``fit``: "steps",
#: "allreduce_s" (seconds in the per-step Allreduce, waiting for slower
#: ranks included) and "fit_s" (the whole call).  Read by fastbp.bench_mpi.
last_fit_stats = {}


class RankFailedError(RuntimeError):
    """Raised on every other rank when one rank failed; names that rank."""


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError("comm= needs mpi4py: pip install 'fastbp[mpi]'") from None
    return MPI


def _check_comm(comm):
    MPI = _mpi()
    if not isinstance(comm, MPI.Comm) or not comm.Is_intra():
        raise TypeError(f"comm must be an mpi4py intra-communicator such as "
                        f"MPI.COMM_WORLD; got {type(comm).__name__}")
    return MPI


def shard_rows(n, rank, size):
    """The slice of ``range(n)`` that rank ``rank`` of ``size`` reads:
    contiguous blocks, sizes differing by at most one (the first ranks
    take the extra rows)."""
    base, extra = divmod(int(n), int(size))
    lo = rank * base + min(rank, extra)
    return slice(lo, lo + base + (rank < extra))


def _agree(comm, fn):
    """Run ``fn()`` on every rank; if it raised anywhere, raise everywhere.

    The failing rank re-raises its own exception; the others raise the same
    type for ValueError/TypeError (with the failing rank named) and
    RankFailedError otherwise.
    """
    err = None
    result = None
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - agreed on, then re-raised
        err = exc
    notes = comm.allgather(None if err is None else (type(err).__name__, str(err)))
    failed = [(r, note) for r, note in enumerate(notes) if note is not None]
    if not failed:
        return result
    if err is not None:
        raise err
    r, (name, msg) = failed[0]
    kind = {"ValueError": ValueError, "TypeError": TypeError}.get(name, RankFailedError)
    raise kind(f"rank {r} failed: {name}: {msg}")


def _sample_weight(sample_weight, n):
    """Local row weights: empty (weight 1 per row) or float64 (n,), >= 0.
    A zero local sum is allowed; the global sum is checked later."""
    if sample_weight is None:
        return np.empty(0, dtype=np.float64)
    sw = v.as_float(sample_weight, "sample_weight", 1, np.float64)
    if sw.shape[0] != n:
        raise ValueError(f"sample_weight must have shape ({n},); got {sw.shape}")
    if (sw < 0).any():
        raise ValueError(f"sample_weight must be non-negative; got minimum {sw.min()}")
    return sw


def _check_shard(model, X, y, name="X", yname="y"):
    """Validated (X, kind, y_int, y_f) of a local shard, which may be empty."""
    model._check_structure()
    if hasattr(X, "tocsr"):
        raise TypeError(f"{name}: data-parallel fit (comm=) takes dense arrays; got a "
                        f"scipy.sparse {type(X).__name__}")
    X = v.as_float(X, name, 2, model.dtype)
    if X.shape[1] != model.widths[0]:
        raise ValueError(f"{name} must have {model.widths[0]} columns (widths[0]); "
                         f"got shape {X.shape}")
    kind, y_int, y_f = model._check_y(y, X.shape[0], yname)
    if kind not in (_net.XENT_LABELS, _net.XENT_TARGETS, _net.SQUARED_ERROR,
                    _net.SIGMOID_XENT):
        raise ValueError(f"data-parallel fit (comm=) supports softmax, sigmoid and "
                         f"identity outputs; this model's output is {model.output!r}")
    return X, kind, y_int, y_f


def _settings(model, opt, batch_size, epochs, shuffle, has_val):
    """What every rank must agree on, as a comparable tuple."""
    return (tuple(model.widths.tolist()), tuple(model.codes.tolist()), model.output,
            str(model.dtype), float(model.alpha), type(opt).__name__,
            tuple(opt.hyperparameters().tolist()), batch_size, epochs, shuffle, has_val)


def _divergence(status, epoch, step, batch_size):
    from .network import DivergenceError

    what = {1: "loss", 2: "gradient", 3: "update"}[int(status)]
    return DivergenceError(
        f"training diverged: non-finite {what} at epoch {epoch}, step {step} "
        f"(batch_size={batch_size} per rank); parameters are those before that step "
        "on every rank. Try a smaller learning rate or scaled inputs.", epoch, step)


class _Agreed(Exception):
    """Wraps an exception every rank raises together (no abort needed)."""

    def __init__(self, exc):
        super().__init__(str(exc))
        self.exc = exc


def fit(model, X, y, comm, epochs=10, batch_size=32, optimizer=None, validation_data=None,
        shuffle=True, sample_weight=None, progress=False, checkpoint=None,
        checkpoint_every=1):
    """``MLP.fit`` over the ranks of ``comm``; see the module docstring and
    ``MLP.fit`` for the arguments (``X``, ``y``, ``sample_weight`` and
    ``validation_data`` are this rank's shard; ``batch_size`` is per rank).
    Returns the global history on every rank."""
    _check_comm(comm)
    try:
        return _fit(model, X, y, comm, epochs, batch_size, optimizer, validation_data,
                    shuffle, sample_weight, progress, checkpoint, checkpoint_every)
    except _Agreed as agreed:
        raise agreed.exc from None
    except Exception:
        # Not agreed on: the other ranks may wait in a collective forever.
        if comm.Get_size() > 1:
            sys.stderr.write(f"fastbp: rank {comm.Get_rank()} failed during data-parallel "
                             "fit; aborting the job\n")
            traceback.print_exc()
            sys.stderr.flush()
            comm.Abort(1)
        raise
    except BaseException:
        if comm.Get_size() > 1:
            comm.Abort(1)
        raise


def _setup(model, X, y, comm, epochs, batch_size, optimizer, validation_data, shuffle,
           sample_weight, progress, checkpoint, checkpoint_every):
    X, kind, y_int, y_f = _check_shard(model, X, y)
    sw = _sample_weight(sample_weight, X.shape[0])
    epochs = v.as_positive_int(epochs, "epochs")
    batch_size = v.as_positive_int(batch_size, "batch_size")
    shuffle = v.as_bool(shuffle, "shuffle")
    if not isinstance(progress, _r.Progress):
        v.as_bool(progress, "progress")
    checkpoint_every = _r.parse_every(checkpoint_every)
    if checkpoint is not None:
        # rank 0 writes it: checked there now, not after the first epoch
        checkpoint = (v.check_writable_path if comm.Get_rank() == 0 else v.as_path)(
            checkpoint, "checkpoint")
    val = None
    if validation_data is not None:
        try:
            Xv, yv = validation_data
        except (TypeError, ValueError):
            raise TypeError("validation_data must be a tuple (X_val, y_val)") from None
        Xv, _, _, _ = _check_shard(model, Xv, yv, "validation_data[0]", "validation_data[1]")
        val = (Xv, yv)
    opt = model._resolve_optimizer(optimizer)
    opt.checked_hyperparameters(model.dtype)
    model._make_writeable()
    total_w = float(sw.sum()) if sw.size else float(X.shape[0])
    info = (_settings(model, opt, batch_size, epochs, shuffle, val is not None),
            X.shape[0], total_w)
    return (X, kind, y_int, y_f, sw, epochs, batch_size, shuffle, checkpoint,
            checkpoint_every, val, opt, info)


def _fit(model, X, y, comm, epochs, batch_size, optimizer, validation_data, shuffle,
         sample_weight, progress, checkpoint, checkpoint_every):
    MPI = _mpi()
    rank = comm.Get_rank()
    t_fit = time.perf_counter()
    t_allreduce = 0.0
    n_steps = 0
    try:
        out = _agree(comm, lambda: _setup(
            model, X, y, comm, epochs, batch_size, optimizer, validation_data, shuffle,
            sample_weight, progress, checkpoint, checkpoint_every))
    except Exception as exc:  # noqa: BLE001 - raised on every rank alike
        raise _Agreed(exc) from None
    (X, kind, y_int, y_f, sw, epochs, batch_size, shuffle, checkpoint, checkpoint_every,
     val, opt, info) = out
    infos = comm.allgather(info)
    for r, other in enumerate(infos):
        if other[0] != infos[0][0]:
            names = ("widths", "codes", "output", "dtype", "alpha", "optimizer",
                     "optimizer settings", "batch_size", "epochs", "shuffle",
                     "validation_data given")
            diff = [nm for nm, a, b in zip(names, other[0], infos[0][0]) if a != b]
            raise _Agreed(ValueError(
                f"every rank must call fit with the same model and settings; rank {r} "
                f"differs from rank 0 in: {', '.join(diff)}"))
    n_local = X.shape[0]
    n_global = sum(i[1] for i in infos)
    if n_global == 0 or not sum(i[2] for i in infos) > 0:
        raise _Agreed(ValueError("the ranks' shards hold no rows with positive weight "
                                 f"({n_global} rows in all)"))
    steps = max(-(-i[1] // batch_size) for i in infos)

    # rank 0's parameters, optimizer state and bookkeeping everywhere
    s1, s2 = opt.bind(model._params)
    comm.Bcast(model._params, root=0)
    comm.Bcast(s1, root=0)
    comm.Bcast(s2, root=0)
    opt.step_, model.epochs_trained, model.history, partial = comm.bcast(
        (opt.step_, model.epochs_trained, model.history, model.__dict__.get("_partial")),
        root=0)
    model._partial = partial
    size = comm.Get_size()
    partial = model._take_partial(n_local, batch_size, shuffle, size)
    hp = opt.hyperparameters()
    P = model.n_params
    dt = model.dtype
    # the kernels' tail, then two flags of this module's own: a Ctrl-C on
    # some rank, and rank 0's clock asking for a checkpoint
    gbuf = np.zeros(P + _dk.TAIL + 2, dtype=dt)
    INTERRUPT, SAVE = P + _dk.TAIL, P + _dk.TAIL + 1
    ws = model._workspace(max(1, min(batch_size, n_local)))
    tail = gbuf[P:]
    # The steps update the model's buffers in place (finish_step with them as
    # its "next" buffers), as the single-process epoch of several steps does:
    # each epoch first copies the parameters and state into the workspace's
    # second buffers, and a failed step (the same status on every rank: all
    # hold the same values and the same summed gradient) restores that copy
    # and replays the epoch's good steps, their gradients summed again (MPI
    # advises that a reduction of the same arguments in the same order give
    # the same result; MPICH's does), so that the model holds the last good
    # step's values.  Steps alternating between the two sets of buffers cost
    # 1.9-2.3x the update in place at 0.2-6 M parameters (docs/performance.md,
    # "Issue 16, sixth round").
    own = (model._params, s1, s2)
    second = (ws["p_next"], ws["s1_next"], ws["s2_next"])
    # the kernels' records (_kernels/records.py)
    data = _rec.data(X, y_int, y_f, sw, kind)
    net = _rec.network(model._params, model._grads, model.widths, model.codes, model.alpha)
    ws_record = _rec.workspace(ws)

    def copy(src, dst):
        np.copyto(dst[0], src[0])
        if opt.kind == ADAM or hp[1] != 0.0:  # what the update writes (adopt_update)
            np.copyto(dst[1], src[1])
        if opt.kind == ADAM:
            np.copyto(dst[2], src[2])

    def summed_gradient(perm, t, replay=False):
        """local_sums of step t and the Allreduce; None on success, else the
        local exception (the failure flag is set in gbuf for the others).
        A replay raises no flags of its own (Ctrl-C, checkpoint)."""
        nonlocal t_allreduce, n_steps
        start = t * batch_size
        m = min(batch_size, n_local - start)
        err = None
        try:
            if m > 0:
                _dk.local_sums(data, perm, start, m, net, ws_record, gbuf)
            else:
                gbuf[:P + _dk.TAIL].fill(0)
        except Exception as exc:  # noqa: BLE001 - agreed on by the caller
            err = exc
            gbuf[:P + _dk.TAIL].fill(0)
            tail[_dk.FAILED] = 1
        gbuf[INTERRUPT] = 0 if replay else _r.pending()
        gbuf[SAVE] = (not replay and rank == 0 and every_s is not None
                      and checkpoint is not None
                      and time.monotonic() - last_save >= every_s)
        t0 = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, gbuf, op=MPI.SUM)
        t_allreduce += time.perf_counter() - t0
        n_steps += 1
        return err

    def replay(perm, t0, t1, step):
        """Back to the epoch's copy (steps before t0 taken), then its steps
        t0 .. t1 - 1 again; returns the step count after them."""
        copy(second, own)
        for t in range(t0, t1):
            summed_gradient(perm, t, replay=True)
            status, _, step = _dk.finish_step(
                net, gbuf, _rec.optimizer(opt.kind, hp, s1, s2, step), own)
            if tail[_dk.FAILED] != 0 or status != 0:  # never seen: stop at the copy
                copy(second, own)
                return None
        return step

    classify = model.output in CLASSIFIER_OUTPUTS
    history = {"loss": []}
    if classify:
        history["accuracy"] = []
    if val is not None:
        history["val_loss"] = []
        if classify:
            history["val_accuracy"] = []
    every_e, every_s = checkpoint_every
    bar = None
    if rank == 0 and progress is not False:
        bar = progress if isinstance(progress, _r.Progress) else _r.Progress(
            epochs * n_global, epochs, desc=f"fit ({size} ranks)",
            first_epoch=model.epochs_trained + 1)
    last_save = time.monotonic()
    state = rng_state = None

    def save(mid_epoch):
        nonlocal last_save
        model._partial = None if not mid_epoch else model._partial_record(
            rng_state, n_local, batch_size, state, size)
        try:
            _agree(comm, lambda: model.save(checkpoint, include_optimizer=True)
                   if rank == 0 else None)
        except Exception as exc:  # noqa: BLE001 - raised on every rank alike
            raise _Agreed(exc) from None
        finally:
            model._partial = None
        last_save = time.monotonic()

    try:
        with _r.deferred(collective=True):
            for _ in range(epochs):
                epoch = model.epochs_trained + 1
                state = _r.EpochState()
                if partial is not None:
                    if partial["rng_state"] is not None and rank == 0:
                        model._rng.bit_generator.state = partial["rng_state"]
                    state = _r.EpochState(partial["batches"], partial["loss_sum"],
                                          partial["correct"])
                    partial = None
                rng_state = model._rng.bit_generator.state if shuffle else None
                if shuffle:
                    seed = comm.bcast(int(model._rng.integers(2**63)) if rank == 0
                                      else None, root=0)
                    perm = np.random.default_rng([seed, rank]).permutation(n_local)
                else:
                    perm = np.arange(n_local)
                step = opt.step_
                # the copy a failed step goes back to (see above)
                copy(own, second)
                kept_t, kept_step = state.done, step
                if bar is not None:
                    bar.start_epoch(epoch)
                # the running figures shown: of the steps taken in this call
                shown_at, rows_new = time.monotonic(), 0
                shown_loss = shown_correct = shown_rows = 0.0
                for t in range(state.done, steps):
                    err = summed_gradient(perm, t)
                    if tail[_dk.FAILED] != 0:
                        if err is not None:
                            raise _Agreed(err)
                        raise _Agreed(RankFailedError(
                            f"another rank failed at epoch {epoch}, step {t + 1}"))
                    if gbuf[INTERRUPT] != 0:
                        # a Ctrl-C on some rank: every rank stops before this
                        # step, with the state of the last one
                        _r.take()
                        if checkpoint is not None:
                            save(True)
                        model._partial = model._partial_record(
                            rng_state, n_local, batch_size, state, size)
                        raise _Agreed(KeyboardInterrupt())
                    status, batch_loss, new_step = _dk.finish_step(
                        net, gbuf, _rec.optimizer(opt.kind, hp, s1, s2, step), own)
                    if status != 0:
                        # the update may have been made in part: the last good step again
                        back = replay(perm, kept_t, t, kept_step)
                        opt.step_ = int(kept_step if back is None else back)
                        raise _Agreed(_divergence(status, epoch, t + 1, batch_size))
                    step = new_step
                    opt.step_ = int(step)
                    state.loss_sum += float(batch_loss) * float(tail[_dk.ROWS])
                    state.correct += float(tail[_dk.CORRECT])
                    state.done = t + 1
                    rows_new += int(tail[_dk.ROWS])
                    if gbuf[SAVE] != 0 and t + 1 < steps:
                        save(True)
                    if bar is not None:
                        shown_loss += float(batch_loss) * float(tail[_dk.ROWS])
                        shown_correct += float(tail[_dk.CORRECT])
                        shown_rows += float(tail[_dk.ROWS])
                        if time.monotonic() - shown_at >= 0.1:
                            bar.advance(rows_new, shown_loss / shown_rows,
                                        shown_correct / shown_rows if classify else None)
                            # the running figures shown: of the steps taken in this call
                shown_at, rows_new = time.monotonic(), 0
                shown_loss = shown_correct = shown_rows = 0.0
                if bar is not None and rows_new:
                    bar.advance(rows_new)
                try:
                    scores = None if val is None else evaluate(model, val[0], val[1],
                                                               comm=comm)
                except Exception as exc:  # noqa: BLE001 - raised on every rank alike
                    raise _Agreed(exc) from None
                model.epochs_trained += 1
                history["loss"].append(state.loss_sum / n_global)
                if classify:
                    history["accuracy"].append(state.correct / n_global)
                if scores is not None:
                    history["val_loss"].append(scores["loss"])
                    if classify:
                        history["val_accuracy"].append(scores["accuracy"])
                for k, vals in history.items():
                    model.history.setdefault(k, []).append(vals[-1])
                if checkpoint is not None and (
                        (every_e is not None and model.epochs_trained % every_e == 0)
                        or (every_s is not None and _agreed_time(comm, rank, last_save,
                                                                 every_s))):
                    save(False)
                if bar is not None:
                    bar.end_epoch({k: vals[-1] for k, vals in history.items()})
            # a Ctrl-C after the last step (validation, checkpoint): agreed on
            if comm.allreduce(int(_r.take()), op=MPI.SUM):
                raise _Agreed(KeyboardInterrupt())
    finally:
        if bar is not None and not isinstance(progress, _r.Progress):
            bar.close()
        last_fit_stats.update(steps=n_steps, allreduce_s=t_allreduce,
                              fit_s=time.perf_counter() - t_fit)
    return history


def _agreed_time(comm, rank, since, seconds):
    """Rank 0's clock says ``seconds`` have passed ``since``: on every rank."""
    return bool(comm.bcast(rank == 0 and time.monotonic() - since >= seconds, root=0))


def evaluate(model, X, y, sample_weight=None, comm=None):
    """``MLP.evaluate`` over the ranks' shards: the loss (without the L2
    term) is the row-weighted mean over all ranks' rows and the accuracy
    the (weighted) fraction over all of them.  A rank's shard may be empty.
    """
    MPI = _check_comm(comm)
    buf = np.zeros(4, dtype=np.float64)  # weight, weighted loss, weighted hits, failed
    err = None
    try:
        X, _, _, _ = _check_shard(model, X, y)
        n = X.shape[0]
        sw = _sample_weight(sample_weight, n)
        if n:
            w = float(sw.sum()) if sw.size else float(n)
            if w > 0:
                s = model.evaluate(X, y, None if not sw.size else sw)
                buf[:3] = w, s["loss"] * w, s.get("accuracy", 0.0) * w
    except Exception as exc:  # noqa: BLE001 - agreed on below
        err = exc
        buf[3] = 1
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    if buf[3]:
        if err is not None:
            raise err
        raise RankFailedError("evaluate failed on another rank")
    if not buf[0] > 0:
        raise ValueError("evaluate: the ranks' shards hold no rows with positive weight")
    scores = {"loss": float(buf[1] / buf[0])}
    if model.output in CLASSIFIER_OUTPUTS:
        scores["accuracy"] = float(buf[2] / buf[0])
    return scores

