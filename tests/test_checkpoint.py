"""Checkpoints during fit: a killed training resumes to the same parameters.

The reference is the uninterrupted run in this process; the resumed run
loads the checkpoint (parameters, optimizer state, generator state) and
trains the remaining epochs.  Bit-identical equality is expected because
the thread count is the same in both processes (see test_determinism.py).
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastbp as fb


def data():
    X, y = fb.load_digits(dtype="float64")
    return X[:600], y[:600]


def optimizers():
    return {
        "sgd": lambda: fb.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
        "adam": lambda: fb.Adam(lr=2e-3),
    }


@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_resume_equals_uninterrupted(tmp_path, opt, dtype):
    X, y = data()
    make = optimizers()[opt]
    full = fb.MLP([64, 16, 10], dtype=dtype, seed=3, alpha=1e-3)
    full.fit(X, y, epochs=5, batch_size=50, optimizer=make())

    path = tmp_path / "ck.npz"
    part = fb.MLP([64, 16, 10], dtype=dtype, seed=3, alpha=1e-3)
    part.fit(X, y, epochs=2, batch_size=50, optimizer=make(), checkpoint=path)
    resumed = fb.MLP.load(path)
    assert resumed.epochs_trained == 2
    assert resumed.optimizer is not None and resumed.optimizer.step_ == 2 * 12
    resumed.fit(X, y, epochs=3, batch_size=50)
    assert np.array_equal(resumed.flat_params, full.flat_params)
    assert resumed.history["loss"] == full.history["loss"]


def test_checkpoint_every(tmp_path):
    X, y = data()
    path = tmp_path / "ck.npz"
    m = fb.MLP([64, 8, 10], seed=0)
    m.fit(X, y, epochs=5, checkpoint=path, checkpoint_every=2)
    assert fb.MLP.load(path).epochs_trained == 4


def test_plain_save_has_no_optimizer(tmp_path):
    X, y = data()
    m = fb.MLP([64, 8, 10], seed=0)
    m.fit(X, y, epochs=1)
    m.save(tmp_path / "m.npz")
    assert fb.MLP.load(tmp_path / "m.npz").optimizer is None


SCRIPT = textwrap.dedent(
    """
    import sys
    import fastbp as fb
    X, y = fb.load_digits(dtype="float64")
    X, y = X[:600], y[:600]
    m = fb.MLP([64, 16, 10], dtype="float64", seed=3)
    m.fit(X, y, epochs=10_000, batch_size=50, optimizer=fb.SGD(lr=0.01, momentum=0.9),
          checkpoint=sys.argv[1])
    """
)


def test_killed_training_resumes(tmp_path):
    """SIGKILL a training process after a few checkpoints, resume from the
    checkpoint, and compare with an uninterrupted run of the same length."""
    path = tmp_path / "ck.npz"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        epochs = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if path.exists():
                try:
                    epochs = fb.MLP.load(path).epochs_trained
                except ValueError:  # pragma: no cover - never half-written
                    pytest.fail("checkpoint was read half-written")
                if epochs >= 3:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    resumed = fb.MLP.load(path)
    k = resumed.epochs_trained
    assert k >= 3
    total = k + 2
    resumed.fit(*data(), epochs=2, batch_size=50)

    X, y = data()
    full = fb.MLP([64, 16, 10], dtype="float64", seed=3)
    full.fit(X, y, epochs=total, batch_size=50, optimizer=fb.SGD(lr=0.01, momentum=0.9))
    assert np.array_equal(resumed.flat_params, full.flat_params)
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert len(leftovers) <= 1  # at most the temp file the kill interrupted
