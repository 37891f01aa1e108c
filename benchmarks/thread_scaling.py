"""Speed-up of a training step from 1 thread to N, against the speed-up of
its GEMM floor (issue 16, item 3), interleaved in one run.

    python benchmarks/thread_scaling.py [--threads N] [--rounds R] [SIZES]

SIZES as for ``fastbp bench`` ("560-288-144-10:32,560-288-144-10:128" by
default: shapes no other benchmark names).  For each size and round, the
epoch (``fit`` over 16 batches, per step) and the floor (the step's matrix
products alone, NumPy into preallocated outputs) are timed with 1 thread and
with N threads (``fastbp.set_num_threads``: Numba and every BLAS), in
rotating order, wall time, min of 3 calls of at least 0.05 s each.  Prints
the medians, the two speed-ups and their ratio (target: >= 0.9), and
whether N threads were ever slower than 1 for the epoch.
"""

import argparse
import os
import statistics
import time

os.environ.pop("OPENBLAS_CORETYPE", None)
os.environ.pop("OPENBLAS_L2_SIZE", None)

import numba

import fastbp as fb
from fastbp.bench import make_fastbp_epoch, make_floor, parse_sizes

N_BATCHES = 16


def _time(fn, steps, min_time=0.05):
    fn()
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    n = max(1, int(min_time / max(one, 1e-9)))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / (n * steps))
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sizes", nargs="?", default="560-288-144-10:32,560-288-144-10:128")
    p.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--min-flops", type=float, default=None,
                   help="override fastbp._threads.PARALLEL_MIN_FLOPS (0: always split)")
    args = p.parse_args(argv)
    if args.min_flops is not None:
        fb._threads.PARALLEL_MIN_FLOPS = args.min_flops
    nt = args.threads
    print(f"threads 1 vs {nt}, {args.dtype}, {args.rounds} rounds, wall time (us per step)")
    for widths, batch in parse_sizes(args.sizes):
        epoch = make_fastbp_epoch(widths, batch, args.dtype, N_BATCHES)
        floor = make_floor(widths, batch, args.dtype)
        cases = {("epoch", 1): (epoch, N_BATCHES), ("epoch", nt): (epoch, N_BATCHES),
                 ("floor", 1): (floor, 1), ("floor", nt): (floor, 1)}
        times = {c: [] for c in cases}
        keys = list(cases)
        for r in range(args.rounds):
            for c in keys[r % 4:] + keys[:r % 4]:
                fb.set_num_threads(c[1])
                times[c].append(_time(*cases[c]))
        fb.set_num_threads(nt)
        med = {c: statistics.median(v) * 1e6 for c, v in times.items()}
        s_epoch = med[("epoch", 1)] / med[("epoch", nt)]
        s_floor = med[("floor", 1)] / med[("floor", nt)]
        per_round = [times[("epoch", 1)][i] / times[("epoch", nt)][i]
                     for i in range(args.rounds)]
        name = "-".join(map(str, widths)) + f" b{batch}"
        print(f"{name:22s} epoch {med[('epoch', 1)]:8.1f} -> {med[('epoch', nt)]:8.1f}  "
              f"floor {med[('floor', 1)]:8.1f} -> {med[('floor', nt)]:8.1f}  "
              f"speed-up epoch {s_epoch:.2f} floor {s_floor:.2f}  ratio {s_epoch / s_floor:.2f}"
              f"  (target >= 0.9)  slower with {nt} threads in "
              f"{sum(x < 1 for x in per_round)}/{args.rounds} rounds; "
              f"epoch/floor at {nt} threads {med[('epoch', nt)] / med[('floor', nt)]:.2f}")


if __name__ == "__main__":
    main()
