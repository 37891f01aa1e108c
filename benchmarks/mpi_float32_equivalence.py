"""float32 equivalence of 2-rank training with one process on the union batches.

``mpiexec -n 2 python benchmarks/mpi_float32_equivalence.py`` (any rank count):
20-64-32-5, 3 epochs of Adam, 50 rows per rank per step, no shuffling; rank 0
replays the steps with ``train_on_batch`` and prints the largest difference.
"""

import numpy as np
from mpi4py import MPI

import fastbp as fb
from fastbp.distributed import shard_rows

comm = MPI.COMM_WORLD
n = 2000
rng = np.random.default_rng(0); X = rng.standard_normal((n, 20)).astype(np.float32); y = rng.integers(0, 5, n)
part = shard_rows(n, comm.rank, comm.size)
m = fb.MLP([20, 64, 32, 5], dtype="float32", seed=0)
m.fit(X[part], y[part], epochs=3, batch_size=50, optimizer=fb.Adam(lr=1e-3), comm=comm, shuffle=False)
if comm.rank == 0:
    ref = fb.MLP([20, 64, 32, 5], dtype="float32", seed=0)
    shards = [np.arange(n)[shard_rows(n, r, comm.size)] for r in range(comm.size)]
    opt = fb.Adam(lr=1e-3)
    for _ in range(3):
        for t in range(max(-(-len(s) // 50) for s in shards)):
            rows = np.concatenate([s[t * 50:(t + 1) * 50] for s in shards])
            ref.train_on_batch(X[rows], y[rows], optimizer=opt)
    d = np.abs(m.flat_params - ref.flat_params)
    print("float32, 2 ranks, 120 Adam steps: max abs diff", d.max(), "max |p|", np.abs(ref.flat_params).max(),
          "rel (to max|p|)", d.max() / np.abs(ref.flat_params).max())
