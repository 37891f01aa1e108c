"""Data-parallel speed: ``python -m fastbp.bench_mpi`` (needs mpi4py and mpiexec).

For each network it compares, side by side in one run, P ranks x 1 thread
(``fit(..., comm=MPI.COMM_WORLD)``, batch B per rank) with 1 process x P
threads (plain ``fit``, batch P*B): the same rows per step and the same
arithmetic.  Both run as persistent workers that sleep between commands
(polling a file, not an MPI call, so that an idle MPI rank does not spin
on a core the other side needs); rounds alternate which goes first, and
medians over rounds are reported:

* ``ratio``: (1-process step time) / (P-rank step time), >= 1 when the ranks
  are faster;
* ``efficiency``: (1 process x 1 thread step time at batch P*B) / (P x the
  P-rank step time), the parallel efficiency of the ranks (1 is perfect);
* ``allreduce share``: the time the ranks spend in the per-step Allreduce
  (waiting for the slower rank included) over their step time, and the time
  of a bare Allreduce of the same buffer (``bare_ms``, after a barrier).

Step time = the ``fit`` call over ``steps`` steps (one epoch, shuffled,
SGD with momentum, float32) divided by ``steps``.
"""

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

DEFAULT_SIZES = "1024-2048-2048-10:512,784-256-128-10:256"


def _poll(path, proc=None, timeout=1800.0):
    t0 = time.monotonic()
    while not os.path.exists(path):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"benchmark worker exited with status {proc.returncode}")
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"no {path} after {timeout} s")
        time.sleep(0.005)


def _write(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
    os.replace(tmp, path)


def _read(path):
    with open(path) as fh:
        return json.load(fh)


def _problem(widths, rows, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, widths[0]), dtype=np.float32)
    y = rng.integers(0, widths[-1], rows)
    return X, y


def _worker(kind, folder):
    """Serve commands cmd.<kind>.<k>.json until one says stop."""
    import fastbp as fb

    comm = None
    rank = 0
    if kind == "ranks":
        from mpi4py import MPI

        from . import distributed

        comm = MPI.COMM_WORLD
        rank = comm.Get_rank()
    cache = {}
    k = 0
    while True:
        cmd_path = os.path.join(folder, f"cmd.{kind}.{k}.json")
        _poll(cmd_path)
        cmd = _read(cmd_path)
        if cmd.get("stop"):
            return
        widths, batch, steps = tuple(cmd["widths"]), cmd["batch"], cmd["steps"]
        key = (widths, batch, steps)
        if key not in cache:
            X, y = _problem(widths, batch * steps, seed=1 + rank)
            model = fb.MLP(list(widths), dtype="float32", seed=0)
            cache[key] = (X, y, model, fb.SGD(lr=1e-3, momentum=0.9))
        X, y, model, opt = cache[key]
        res = {}
        if comm is not None:
            comm.Barrier()
        t0 = time.perf_counter()
        model.fit(X, y, epochs=1, batch_size=batch, optimizer=opt, shuffle=True, comm=comm)
        step = (time.perf_counter() - t0) / steps
        if comm is not None:
            st = distributed.last_fit_stats
            ar = st["allreduce_s"] / st["steps"]
            buf = np.zeros(model.n_params + 5, dtype=np.float32)
            comm.Barrier()
            t1 = time.perf_counter()
            for _ in range(5):
                comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            bare = (time.perf_counter() - t1) / 5
            step, ar, bare = (comm.allreduce(x, op=MPI.MAX) for x in (step, ar, bare))
            res = {"allreduce": ar, "bare": bare}
        res["step"] = step
        if rank == 0:
            _write(os.path.join(folder, f"res.{kind}.{k}.json"), res)
        k += 1


def allreduce_sweep(repeats=21):
    """Under mpiexec: median time of an in-place Allreduce (sum) of float32
    buffers from 4 KB to 32 MB, printed by rank 0, with the fit of
    t = a + b * bytes (least squares on the medians)."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, p = comm.Get_rank(), comm.Get_size()
    sizes = [2**k for k in range(10, 24, 1)]  # elements: 4 KB .. 32 MB
    rows = []
    for n in sizes:
        buf = np.ones(n, dtype=np.float32)
        times = []
        for _ in range(repeats):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
        rows.append((4 * n, statistics.median(times)))
    if rank == 0:
        nbytes = np.array([r[0] for r in rows], dtype=float)
        t = np.array([r[1] for r in rows])
        b, a = np.polyfit(nbytes, t, 1)
        print(f"# Allreduce (sum, in place) of float32 buffers on {p} ranks; "
              f"medians of {repeats}")
        for nb, ti in rows:
            print(f"{nb / 1e6:>10.3f} MB {ti * 1e3:>10.3f} ms "
                  f"{2 * (p - 1) / p * nb / ti / 1e9:>8.2f} GB/s (ring-equivalent)")
        print(f"fit: t = {a * 1e6:.1f} us + bytes / ({1 / b / 1e9:.2f} GB/s); as a ring: "
              f"latency {a / (2 * (p - 1)) * 1e6:.1f} us per hop, bandwidth "
              f"{2 * (p - 1) / p / b / 1e9:.2f} GB/s")


def _steps_for(widths, batch):
    """Enough steps for about a second of work at 50 GFLOP/s per rank."""
    flops = 6.0 * batch * sum(a * b for a, b in itertools.pairwise(widths))
    return int(min(32, max(4, 50e9 / flops)))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastbp.bench_mpi", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=DEFAULT_SIZES,
                   help="widths:batch-per-rank items (default %(default)s)")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--mpiexec", default=shutil.which(
        "mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec"))
    p.add_argument("--allreduce-sweep", action="store_true",
                   help="run under mpiexec: time Allreduce from 4 KB to 32 MB")
    p.add_argument("--worker", choices=["ranks", "single", "serial"], help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.folder)
        return 0
    if args.allreduce_sweep:
        allreduce_sweep()
        return 0
    if not args.mpiexec:
        p.error("mpiexec not found: pip install 'fastbp[mpi]'")
    sizes = []
    for item in args.sizes.split(","):
        net, _, b = item.partition(":")
        sizes.append((tuple(int(w) for w in net.split("-")), int(b)))
    P = args.ranks
    folder = tempfile.mkdtemp(prefix="fastbp-bench-mpi-")
    env = {k: val for k, val in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    me = [sys.executable, "-m", "fastbp.bench_mpi", "--folder", folder, "--worker"]
    one = dict(env, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    many = dict(env, OPENBLAS_NUM_THREADS=str(P), NUMBA_NUM_THREADS=str(P),
                OMP_NUM_THREADS=str(P))
    procs = {
        "ranks": subprocess.Popen([args.mpiexec, "-n", str(P), *me, "ranks"], env=one),
        "single": subprocess.Popen([*me, "single"], env=many),
        "serial": subprocess.Popen([*me, "serial"], env=one),
    }
    count = dict.fromkeys(procs, 0)

    def run(kind, widths, batch, steps):
        k = count[kind]
        count[kind] += 1
        _write(os.path.join(folder, f"cmd.{kind}.{k}.json"),
               {"widths": widths, "batch": batch, "steps": steps})
        path = os.path.join(folder, f"res.{kind}.{k}.json")
        _poll(path, procs[kind])
        return _read(path)

    print(f"# {P} ranks x 1 thread vs 1 process x {P} threads, float32, SGD momentum; "
          f"medians of {args.rounds} rounds")
    print(f"{'network':>20} {'batch/rank':>10} {'steps':>5} {'1x1 ms':>8} {'1-proc ms':>10} "
          f"{'ranks ms':>9} {'ratio':>6} {'effic.':>6} {'allreduce ms':>12} {'share':>6} "
          f"{'bare ms':>8}")
    try:
        for widths, batch in sizes:
            steps = _steps_for(widths, batch)
            w = list(widths)
            got = {kind: [] for kind in procs}
            for r in range(args.rounds + 1):  # round 0 warms up: compile, first touch
                order = list(procs) if r % 2 == 0 else list(procs)[::-1]
                for kind in order:
                    out = run(kind, w, batch if kind == "ranks" else batch * P, steps)
                    if r > 0:
                        got[kind].append(out)
            single, ranks = got["single"], got["ranks"]
            ts = statistics.median(o["step"] for o in got["serial"])
            t1 = statistics.median(o["step"] for o in single)
            tp = statistics.median(o["step"] for o in ranks)
            ar = statistics.median(o["allreduce"] for o in ranks)
            bare = statistics.median(o["bare"] for o in ranks)
            ratios = sorted(s["step"] / q["step"] for s, q in zip(single, ranks))
            print(f"{'-'.join(map(str, widths)):>20} {batch:>10} {steps:>5} {ts * 1e3:>8.2f} "
                  f"{t1 * 1e3:>10.2f} {tp * 1e3:>9.2f} {t1 / tp:>6.3f} {ts / (P * tp):>6.3f} "
                  f"{ar * 1e3:>12.3f} {ar / tp:>6.1%} "
                  f"{bare * 1e3:>8.3f}   (ratio range {ratios[0]:.3f}-{ratios[-1]:.3f})",
                  flush=True)
    finally:
        for kind in procs:
            _write(os.path.join(folder, f"cmd.{kind}.{count[kind]}.json"), {"stop": True})
        for proc in procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
