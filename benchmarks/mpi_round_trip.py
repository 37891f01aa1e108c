"""Cost of the per-step Python round trip of data-parallel fit.

``python benchmarks/mpi_round_trip.py``: one process, one thread.  Times
``fit(..., comm=MPI.COMM_SELF)`` (two compiled calls and an Allreduce per
step, from Python) against plain ``fit`` (one compiled call per epoch),
interleaved over rounds, same data and batches; prints medians per step.
On one rank the Allreduce moves nothing, so the difference is the round
trip: Python loop, two kernel dispatches, the mpi4py call, and the
separate scale/check/update pass of finish_step.
"""

import itertools
import statistics
import time

import numpy as np
from mpi4py import MPI

import fastbp as fb

CASES = [((64, 128, 10), 32), ((784, 256, 128, 10), 64), ((784, 256, 128, 10), 256),
         ((1024, 2048, 2048, 10), 64)]
ROUNDS = 7

print(f"{'network':>18} {'batch':>5} {'fit ms/step':>11} {'comm ms/step':>12} "
      f"{'extra us/step':>13} {'ratio':>6}")
for widths, batch in CASES:
    steps = max(8, min(256, int(2e9 / (6 * batch * sum(a * b for a, b in
                                                     itertools.pairwise(widths))))))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch * steps, widths[0]), dtype=np.float32)
    y = rng.integers(0, widths[-1], batch * steps)
    models = {k: fb.MLP(list(widths), seed=0) for k in ("plain", "comm")}
    opts = {k: fb.SGD(lr=1e-3, momentum=0.9) for k in models}
    times = {k: [] for k in models}
    for r in range(ROUNDS + 1):
        for k in (("plain", "comm") if r % 2 else ("comm", "plain")):
            t0 = time.perf_counter()
            models[k].fit(X, y, epochs=1, batch_size=batch, optimizer=opts[k],
                          comm=MPI.COMM_SELF if k == "comm" else None)
            if r:
                times[k].append((time.perf_counter() - t0) / steps)
    a, b = statistics.median(times["plain"]), statistics.median(times["comm"])
    print(f"{'-'.join(map(str, widths)):>18} {batch:>5} {a * 1e3:>11.3f} {b * 1e3:>12.3f} "
          f"{(b - a) * 1e6:>13.1f} {b / a:>6.3f}", flush=True)
