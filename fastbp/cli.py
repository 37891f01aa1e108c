"""The ``fastbp`` command: ``train``, ``predict``, ``evaluate``, ``prepare``, ``bench``.

See docs/cli.md.  Every error (bad option, unreadable file, data that does
not fit the model) is one line ``fastbp: error: ...`` on stderr with exit
status 2; a diverging training run exits with status 1.
"""

import argparse
import os
import sys
import time

import numpy as np


class _CliError(Exception):
    """An error reported as one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write(f"fastbp: error: {message}\n")
        sys.exit(2)


def _positive_int(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {s!r}")
    return v


def _float_in(lo, hi, lo_open=False, name="value"):
    def conv(s):
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number; got {s!r}") from None
        if not np.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
            left = "(" if lo_open else "["
            raise argparse.ArgumentTypeError(f"expected a number in {left}{lo}, {hi}]; got {s!r}")
        return v
    return conv


def _layers(s):
    try:
        out = [int(t) for t in s.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated hidden widths such as 256,128; got {s!r}") from None
    if any(w < 1 for w in out):
        raise argparse.ArgumentTypeError(f"hidden widths must be positive; got {s!r}")
    return out


def _target(s):
    if s is None:
        return None
    try:
        return int(s)
    except ValueError:
        return s


def _is_regression(y, task):
    if task != "auto":
        return task == "regression"
    if not np.issubdtype(y.dtype, np.number):
        return False
    return not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0))


def _load_training_data(args):
    import fastbp as fb

    if args.data:
        X, y = fb.load_data(args.data, _target(args.target))
    else:
        if args.target is not None:
            raise _CliError("--target needs --data")
        X, y = fb.load_digits(dtype="float64")
    X = np.asarray(X, dtype=args.dtype)
    y = np.asarray(y)
    regression = _is_regression(y, args.task)
    if regression:
        try:
            y = y.astype(args.dtype)
        except ValueError:
            raise _CliError("--task regression needs numeric targets") from None
        classes = None
    else:
        classes, y = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise _CliError(f"classification needs at least 2 classes in the target; got {classes.size}")
        if not (np.issubdtype(classes.dtype, np.integer) or np.all(np.mod(classes, 1) == 0)) \
                or classes[0] != 0 or classes[-1] != classes.size - 1:
            print(f"note: labels {classes.tolist()[:10]}{'...' if classes.size > 10 else ''} "
                  f"are numbered 0..{classes.size - 1} in this order", file=sys.stderr)
    return X, y.reshape(-1), regression, classes


_MPI_ENV = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def _mpi_comm():
    """MPI.COMM_WORLD when this process is one of several started by mpiexec,
    else None."""
    if not any(k in os.environ for k in _MPI_ENV):
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise _CliError("running under mpiexec needs mpi4py: pip install "
                        "'fastbp[mpi]'") from None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def _load_training_shard(args, comm):
    """This rank's rows of the training data (only they are read from a .npy
    or uncompressed .npz), with the class labels numbered over all ranks."""
    import fastbp as fb

    from .distributed import shard_rows

    rank, size = comm.Get_rank(), comm.Get_size()
    def rows(n):
        return shard_rows(n, rank, size)

    if args.data:
        X, y = fb.load_data(args.data, _target(args.target), rows=rows)
    else:
        if args.target is not None:
            raise _CliError("--target needs --data")
        X, y = fb.load_digits(dtype="float64")
        X, y = X[rows(X.shape[0])], y[rows(X.shape[0])]
    return np.asarray(X, dtype=args.dtype), np.asarray(y).reshape(-1)


def _label_shard(X, y, args, comm):
    """(X, y, regression) with classes numbered 0.. over the union of shards."""
    regression = any(comm.allgather(bool(y.size) and _is_regression(y, args.task)))
    if regression:
        try:
            return X, y.astype(args.dtype), True
        except ValueError:
            raise _CliError("--task regression needs numeric targets") from None
    classes = np.unique(np.concatenate(comm.allgather(np.unique(y))))
    if classes.size < 2:
        raise _CliError(f"classification needs at least 2 classes in the target; "
                        f"got {classes.size}")
    return X, np.searchsorted(classes, y), False


def _plot(history, path, regression):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("loss", "val_loss")] + ([] if regression else [("accuracy", "val_accuracy")])
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5))
    axes = np.atleast_1d(axes)
    for ax, (tr, va) in zip(axes, keys):
        ep = np.arange(1, len(history[tr]) + 1)
        ax.plot(ep, history[tr], label="train")
        if va in history:
            ax.plot(ep, history[va], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(tr)
        ax.legend()
    fig.tight_layout()
    try:
        _write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)


def _check_outputs(args, *options):
    """Report an unwritable output path before any work (not after training)."""
    from ._validation import check_writable_path

    for opt in options:
        path = getattr(args, opt)
        if path is not None:
            check_writable_path(path, f"--{opt}")


def _write_atomically(path, write):
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it
    over ``path``; errors name ``path``, never the temporary file."""
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fastbp-", suffix=f".tmp{suffix}", dir=directory)
        os.close(fd)
    except OSError as exc:
        raise OSError(f"cannot write {path!r}: {exc.strerror or exc}") from None
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError(f"cannot write {path!r}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _train(args):
    import fastbp as fb

    from .distributed import _agree

    comm = _mpi_comm()
    rank = 0 if comm is None else comm.Get_rank()

    def check_outputs():  # before any work; rank 0 writes them
        if rank == 0:
            _check_outputs(args, "out", "plot")

    check_outputs() if comm is None else _agree(comm, check_outputs)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise _CliError("--plot needs matplotlib (pip install matplotlib)") from None
    if comm is None:
        X, y, regression, _ = _load_training_data(args)
    else:
        # each rank reads its own rows; an error anywhere stops every rank
        X, y = _agree(comm, lambda: _load_training_shard(args, comm))
        X, y, regression = _label_shard(X, y, args, comm)
    if args.validation_split > 0:
        def split():
            return fb.train_test_split(X, y, test_size=args.validation_split,
                                       seed=args.seed + rank)

        Xtr, Xva, ytr, yva = split() if comm is None else _agree(comm, split)
        if Xtr.shape[0] == 0 or Xva.shape[0] == 0:
            raise _CliError(f"--validation-split {args.validation_split} leaves an empty set "
                            f"with {X.shape[0]} rows")
        val = (Xva, yva)
    else:
        Xtr, ytr, val = X, y, None
    n_out = 1 if regression else int(y.max()) + 1
    if comm is not None:
        n_out = 1 if regression else comm.allreduce(n_out, op=_mpi_max())
    model = fb.MLP([X.shape[1], *args.layers, n_out], activation=args.activation,
                   output="identity" if regression else "softmax", dtype=args.dtype,
                   seed=args.seed, alpha=args.alpha)
    if args.optimizer == "sgd":
        opt = fb.SGD(lr=args.lr, momentum=args.momentum, nesterov=args.nesterov)
    else:
        opt = fb.Adam(lr=args.lr)
    task = "regression" if regression else "classification"
    n_train, n_val = Xtr.shape[0], 0 if val is None else val[0].shape[0]
    where = ""
    if comm is not None:
        n_train, n_val = comm.allreduce(n_train), comm.allreduce(n_val)
        where = f", on {comm.Get_size()} MPI ranks"
    say = print if rank == 0 else _quiet
    say(f"{model}: {model.n_params} parameters, {task}, {n_train} training rows, "
          f"{n_val} validation rows{where}")
    from ._warmup import compile_notice, compile_pending

    if compile_pending(args.dtype):
        # Say so before the wait, and compile before the progress bar starts
        # so that its rate and ETA measure training.
        say(compile_notice(args.dtype), file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        done = fb.prepare(dtypes=(args.dtype,), what="fit")
        n = len(done) + sum(row[2] for row in done)
        say(f"fastbp: compiled {n} functions in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr, flush=True)
    bar = None
    if args.progress and rank == 0:
        from ._responsive import Progress

        # rows within each epoch, rate, ETA and the running loss
        bar = Progress(args.epochs * n_train, args.epochs, desc="train", file=sys.stderr)
    write = bar.write if bar is not None else say
    history = {}
    try:
        for epoch in range(1, args.epochs + 1):
            t0 = time.perf_counter()
            h = model.fit(Xtr, ytr, epochs=1, batch_size=args.batch_size, optimizer=opt,
                          validation_data=val, comm=comm,
                          progress=False if bar is None else bar)
            dt = time.perf_counter() - t0
            for k, vals in h.items():
                history.setdefault(k, []).append(vals[0])
            parts = [f"epoch {epoch:3d}", f"loss {h['loss'][0]:.4f}"]
            for k in ("accuracy", "val_loss", "val_accuracy"):
                if k in h:
                    parts.append(f"{'acc' if k == 'accuracy' else k.replace('accuracy', 'acc')} "
                                 f"{h[k][0]:.4f}")
            write("  ".join(parts) + f"  ({dt * 1e3:.1f} ms)")
    finally:
        if bar is not None:
            bar.close()
    if rank != 0:
        return 0
    if args.out:
        model.save(args.out)
        print(f"saved {args.out}")
    if args.plot:
        _plot(history, args.plot, regression)
        print(f"wrote {args.plot}")
    return 0


def _quiet(*args, **kwargs):
    """print for ranks other than 0."""


def _mpi_max():
    from mpi4py import MPI

    return MPI.MAX


def _load_model(path):
    import fastbp as fb

    if not os.path.exists(path):
        raise _CliError(f"model file not found: {path}")
    return fb.MLP.load(path)


def _features(path, n_in, target):
    """Feature matrix of a data file, dropping a target column when present."""
    from .datasets import read_table

    data, header = read_table(path)  # its ValueError/OSError end in main
    if isinstance(data, dict):
        if "X" in data:
            data = data["X"]
        elif len(data) == 1:
            data = next(iter(data.values()))
        else:
            raise _CliError(f"{path} must hold an array 'X' (arrays: {', '.join(data)})")
    data = np.asarray(data)
    if data.ndim != 2:
        raise _CliError(f"{path} must hold a 2-D table; got shape {data.shape}")
    if data.shape[1] == n_in + 1:
        col = -1
        if isinstance(target, int):
            col = target
        elif target is not None and header is not None and target in header:
            col = header.index(target)
        data = np.delete(data, col, axis=1)
    if data.shape[1] != n_in:
        raise _CliError(f"{path} has {data.shape[1]} feature columns; the model expects {n_in}")
    return data


def _predict(args):
    _check_outputs(args, "out")
    model = _load_model(args.model)
    X = _features(args.data, int(model.widths[0]), _target(args.target)).astype(model.dtype)
    pred = model.predict(X)
    if args.out:
        fmt = "%d" if model.output in ("softmax", "sigmoid") else "%.8g"
        _write_atomically(args.out, lambda tmp: np.savetxt(
            tmp, np.atleast_2d(pred.T).T, fmt=fmt, delimiter=","))
        print(f"wrote {pred.shape[0]} predictions to {args.out}")
    else:
        for p in np.atleast_2d(pred.T).T:
            print(",".join(str(v) for v in p))
    return 0


def _evaluate(args):
    import fastbp as fb

    model = _load_model(args.model)
    X, y = fb.load_data(args.data, _target(args.target))
    X = np.asarray(X, dtype=model.dtype)
    if model.output == "softmax":
        y = np.asarray(y)
        if not np.all(np.mod(y, 1) == 0):
            raise _CliError("the model classifies; the target column must hold integer labels")
        y = y.astype(np.int64)
    scores = model.evaluate(X, y)
    line = f"loss {scores['loss']:.4f}"
    if "accuracy" in scores:
        line += f"  accuracy {scores['accuracy']:.4f}"
    else:
        line += f"  r2 {model.score(X, y):.4f}"
    print(f"{line}  ({X.shape[0]} rows)")
    return 0


def _prepare(args):
    import fastbp as fb

    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    fb.prepare(dtypes=dtypes, what=args.what, verbose=True)
    return 0


def build_parser():
    p = _Parser(prog="fastbp", description="Train dense neural networks fast (Numba kernels).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train an MLP (built-in digits data by default)")
    t.add_argument("--data", help=".npz, .npy or .csv file (default: built-in digits)")
    t.add_argument("--target", help="target column (name or index) or .npz array name "
                   "(default: last column, or array 'y')")
    t.add_argument("--task", default="auto", choices=["auto", "classification", "regression"],
                   help="auto: regression when the target has non-integer values")
    t.add_argument("--layers", type=_layers, default=[128], help="hidden widths, e.g. 256,128")
    t.add_argument("--activation", default="relu", choices=["relu", "tanh", "sigmoid", "identity"])
    t.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    t.add_argument("--lr", type=_float_in(0, 1e6, lo_open=True), default=0.05)
    t.add_argument("--momentum", type=_float_in(0, 1), default=0.9)
    t.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd)")
    t.add_argument("--alpha", type=_float_in(0, 1e6), default=0.0, help="L2 penalty")
    t.add_argument("--epochs", type=_positive_int, default=20)
    t.add_argument("--batch-size", type=_positive_int, default=32)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--validation-split", type=_float_in(0, 0.99), default=0.2)
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    t.add_argument("--out", help="save the trained model to this .npz file")
    t.add_argument("--plot", metavar="PNG", help="write training curves (needs matplotlib)")
    t.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")
    t.set_defaults(func=_train)

    pr = sub.add_parser("predict", help="predict with a saved model")
    pr.add_argument("model", help="model file written by `fastbp train --out`")
    pr.add_argument("--data", required=True, help=".npz, .npy or .csv features "
                    "(a target column, if present, is dropped)")
    pr.add_argument("--target", help="target column to drop (name or index)")
    pr.add_argument("--out", help="write predictions to this .csv (default: stdout)")
    pr.set_defaults(func=_predict)

    ev = sub.add_parser("evaluate", help="loss and accuracy (or R^2) of a saved model")
    ev.add_argument("model")
    ev.add_argument("--data", required=True, help=".npz, .npy or .csv with targets")
    ev.add_argument("--target", help="target column (name or index) or .npz array name")
    ev.set_defaults(func=_evaluate)

    pp = sub.add_parser("prepare", help="compile the kernels now (once per installation) "
                        "and report what was compiled")
    pp.add_argument("--dtype", default="both", choices=["float32", "float64", "both"])
    pp.add_argument("--what", default="all", choices=["all", "fit"],
                    help="fit: what `fastbp train` needs; all: also the layer functions")
    pp.set_defaults(func=_prepare)

    sub.add_parser("bench", help="benchmarks (arguments go to fastbp.bench)", add_help=False)
    return p


def main(argv=None):
    """The ``fastbp`` command; returns its exit status.  Ctrl-C is one line
    and status 130, the shell's code for SIGINT (under mpiexec, the line
    comes from rank 0 only); nothing is written after it."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        if _mpi_rank_env() == 0:
            print("fastbp: interrupted", file=sys.stderr, flush=True)
        return 130


def _mpi_rank_env():
    """This process's rank as MPICH's or Open MPI's launcher sets it; 0
    without a launcher."""
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _main(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        try:
            from . import bench
        except ImportError as exc:
            print(f"fastbp: error: fastbp bench is not available ({exc})", file=sys.stderr)
            return 2
        return _run(bench.main, argv[1:])
    args = build_parser().parse_args(argv)
    return _run(args.func, args)


def _run(func, args):
    """``func(args)`` with every error reported as one ``fastbp: error:`` line."""
    import fastbp as fb

    from .distributed import RankFailedError

    try:
        return func(args)
    except fb.DivergenceError as exc:
        print(f"fastbp: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - every error is one line (MemoryError too)
        msg = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, (_CliError, ValueError, TypeError, OSError, RankFailedError)):
            msg = f"{type(exc).__name__}: {msg}"
        print(f"fastbp: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
