"""Import and compile time, each in a fresh process (asv timeraw_)."""

from .common import Benchmark

_STEP = """
import numpy as np
import fastbp as fb
m = fb.MLP([64, 128, 10], activation="relu", dtype="float32", seed=0)
X = np.zeros((32, 64), np.float32); y = np.zeros(32, np.int64)
m.train_on_batch(X, y, optimizer=fb.SGD(lr=0.01, momentum=0.9))
"""


class StartupSuite(Benchmark):
    repeat = (1, 3, 60.0)
    number = 1
    timeout = 600

    def timeraw_import(self):
        return "import fastbp"

    def timeraw_import_and_first_step(self):
        # Uses the on-disk Numba cache as it stands (warm after the first run).
        return _STEP

    def timeraw_import_and_first_step_cold(self):
        # Empty cache directory: measures compilation.
        return ("import os, tempfile; "
                "os.environ['NUMBA_CACHE_DIR'] = tempfile.mkdtemp()\n" + _STEP)
