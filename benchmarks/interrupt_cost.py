"""Issue 19: what cutting epochs into slices costs, and how fast Ctrl-C acts.

    PYTHONPATH=. OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \\
        python benchmarks/interrupt_cost.py [--reps 11] [--latency fit,sparse,...]

Overhead: one epoch of a 64-256-256-10 network over 20000 rows (batch 16),
cut into slices (``_responsive.ONE_CALL_FLOPS`` as shipped) and as one
compiled call (``ONE_CALL_FLOPS = inf``), interleaved, medians; and the time
spent outside the compiled calls in each case, whose difference is the
Python cost of slicing.

Latency: tests/interrupt_worker.py in a child process per mode, SIGINT 0.7 s
after each "ready", five times; the child's time of the KeyboardInterrupt
minus the parent's time of the signal, median and maximum.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import numpy as np

import fastbp as fb
from fastbp import _responsive as r

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(os.path.dirname(HERE), "tests", "interrupt_worker.py")


def overhead(reps):
    n, d = 20000, 64
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d), dtype=np.float32)
    y = rng.integers(0, 10, n)
    models = {}
    for which in ("cut", "one"):
        models[which] = fb.MLP([d, 256, 256, 10], seed=0)
        models[which].fit(X[:64], y[:64], epochs=1, batch_size=16)
    shipped = r.ONE_CALL_FLOPS
    orig = r.run_epoch
    wall = {"cut": [], "one": []}
    inside = {"cut": [], "one": []}
    slices = []
    for _ in range(reps):
        for which in ("cut", "one"):
            r.ONE_CALL_FLOPS = shipped if which == "cut" else float("inf")
            calls = []

            def run_epoch(call, *args, calls=calls, **kw):
                def timed(a, b, loss_sum):
                    t = time.perf_counter()
                    out = call(a, b, loss_sum)
                    calls.append(time.perf_counter() - t)
                    return out
                return orig(timed, *args, **kw)

            r.run_epoch = run_epoch
            t = time.perf_counter()
            models[which].fit(X, y, epochs=1, batch_size=16)
            wall[which].append(time.perf_counter() - t)
            r.run_epoch = orig
            inside[which].append(sum(calls))
            if which == "cut":
                slices.append(len(calls))
    r.ONE_CALL_FLOPS = shipped
    med = {k: statistics.median(v) for k, v in wall.items()}
    out = {k: statistics.median(w - i for w, i in zip(wall[k], inside[k])) for k in wall}
    print(f"epoch: sliced {med['cut']:.4f} s, one call {med['one']:.4f} s "
          f"(ratio {med['cut'] / med['one']:.4f}); slices {slices}")
    print(f"outside the compiled calls: sliced {out['cut'] * 1e3:.2f} ms, one call "
          f"{out['one'] * 1e3:.2f} ms; slicing adds {(out['cut'] - out['one']) * 1e3:.2f} ms "
          f"= {100 * (out['cut'] - out['one']) / med['cut']:.3f} % of the epoch")


def latency(modes, repeats=5):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    for mode in modes:
        p = subprocess.Popen([sys.executable, WORKER, mode, str(repeats)],
                             stdout=subprocess.PIPE, text=True, env=env)
        lat = []
        for _ in range(repeats):
            assert p.stdout.readline().strip() == "ready"
            time.sleep(0.7)
            t0 = time.time()
            p.send_signal(signal.SIGINT)
            lat.append(json.loads(p.stdout.readline())["t"] - t0)
        p.wait()
        print(f"{mode:14s} SIGINT -> KeyboardInterrupt: median {statistics.median(lat) * 1e3:.1f}"
              f" ms, max {max(lat) * 1e3:.1f} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--latency", default="fit,sparse,predict,loss_and_grad,lbfgs,progress")
    args = ap.parse_args()
    overhead(args.reps)
    latency([m for m in args.latency.split(",") if m])
