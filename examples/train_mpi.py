"""Data-parallel training on several processes: each rank trains on its shard.

    mpiexec -n 4 python examples/train_mpi.py [EPOCHS] [DTYPE]

Needs ``pip install "fastbp[mpi]"``.  Every step is one allreduce of the
flat gradient buffer and equals one process's step over the union of the
ranks' batches (docs/distributed.md).
"""

import sys

from mpi4py import MPI

import fastbp as fb
from fastbp.distributed import shard_rows

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
dtype = sys.argv[2] if len(sys.argv) > 2 else "float32"
comm = MPI.COMM_WORLD

X, y = fb.load_digits(dtype=dtype)
X_train, X_test, y_train, y_test = fb.train_test_split(X, y, test_size=0.2, seed=0)
# this rank's rows (a big file: fb.load_data(path, rows=lambda n: shard_rows(n, r, p)))
train = shard_rows(len(y_train), comm.rank, comm.size)
test = shard_rows(len(y_test), comm.rank, comm.size)

model = fb.MLP([64, 128, 10], activation="relu", dtype=dtype, seed=0)
history = model.fit(X_train[train], y_train[train], epochs=epochs, batch_size=32,
                    optimizer=fb.SGD(lr=0.05, momentum=0.9),
                    validation_data=(X_test[test], y_test[test]), comm=comm,
                    checkpoint="digits_mpi.npz")  # written by rank 0
scores = model.evaluate(X_test[test], y_test[test], comm=comm)  # over all ranks
if comm.rank == 0:
    print(f"{comm.size} ranks: final training loss {history['loss'][-1]:.4f}, "
          f"validation accuracy {history['val_accuracy'][-1]:.4f}")
    print("test scores:", scores)
