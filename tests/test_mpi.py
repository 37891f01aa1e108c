"""Data-parallel training over MPI, checked against one process.

The scenarios run under ``mpiexec -n 2`` and ``-n 3`` (tests/mpi_worker.py,
with a timeout so that a hang fails instead of stalling); each rank saves
what it ends with, and this process replays the same steps with
``train_on_batch`` on the union of the ranks' batches.  Skipped when mpi4py
or mpiexec is not installed (``pip install -e ".[mpi]"``).
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import fastbp as fb

pytest.importorskip("mpi4py")  # not initialised here: only the ranks use MPI
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import mpi_worker as w

MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or \
    shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found")
TIMEOUT = 240
RTOL = 1e-10


def mpirun(n, args, cwd=None, timeout=TIMEOUT):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    cmd = [MPIEXEC, "-n", str(n)]
    if os.geteuid() == 0:  # Open MPI refuses root without this; MPICH ignores it
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    # a session of its own, so that a hang is ended with every rank it started
    proc = subprocess.Popen(cmd + args, env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpiexec -n {n} {' '.join(args)} hung (> {timeout} s):\n{out}\n{err}")
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return res


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run every scenario once on 2 ranks, and four of them on 3."""
    out = {}
    for n, names in ((2, list(w.SCENARIOS)), (3, ["uneven", "resume", "sgd", "diverge_mid"])):
        d = tmp_path_factory.mktemp(f"ranks{n}")
        if n == 3:
            shutil.copy(out[2] / "ckpt.npz", d / "ckpt.npz")
        res = mpirun(n, [sys.executable, os.path.join(HERE, "mpi_worker.py"), str(d),
                         *names])
        assert res.returncode == 0, res.stdout + res.stderr
        out[n] = d
    return out


def result(d, name, rank):
    with np.load(d / f"{name}.rank{rank}.npz") as f:
        return f["params"].copy(), json.loads(str(f["info"]))


def union_batches(X, y, sw, size, batch_size, perms=None):
    """Per step, the rows of every rank's step batch, rank by rank."""
    shards = []
    for r in range(size):
        idx = np.arange(X.shape[0])[w.shard_rows(X.shape[0], r, size)]
        if perms is not None:
            idx = idx[perms[r]]
        shards.append(idx)
    steps = max(-(-len(s) // batch_size) for s in shards)
    for t in range(steps):
        rows = np.concatenate([s[t * batch_size:(t + 1) * batch_size] for s in shards])
        yield X[rows], y[rows], None if sw is None else sw[rows]


def reference(name, size, n, opt, epochs=2, batch_size=8, weighted=False, alpha=0.0,
              shuffle=False, output="softmax"):
    """One process on the union batches: (params after, loss per epoch)."""
    X, y, sw = w.data(n, multilabel=output == "sigmoid")
    m = fb.MLP([6, 7, 5, 3], activation="tanh", dtype="float64", seed=3, alpha=alpha,
               output=output)
    # rank 0's model generator after its initialisation
    rng = fb.MLP([6, 7, 5, 3], activation="tanh", dtype="float64", seed=3)._rng
    losses = []
    for _ in range(epochs):
        perms = None
        if shuffle:
            s = int(rng.integers(2**63))
            perms = [np.random.default_rng([s, r]).permutation(
                len(range(n)[w.shard_rows(n, r, size)])) for r in range(size)]
        tot = 0.0
        for xb, yb, swb in union_batches(X, y, sw if weighted else None, size, batch_size,
                                         perms):
            tot += m.train_on_batch(xb, yb, optimizer=opt, sample_weight=swb) * len(yb)
        losses.append(tot / n)
    return m.flat_params, losses


def assert_same_on_ranks(d, name, size):
    p0, _ = result(d, name, 0)
    for r in range(1, size):
        pr, _ = result(d, name, r)
        np.testing.assert_array_equal(pr, p0, err_msg=f"rank {r} differs from rank 0")
    return p0


CASES = {
    "sgd": {"n": 45, "opt": lambda: fb.SGD(lr=0.1, momentum=0.9), "alpha": 1e-3},
    "adam": {"n": 40, "opt": lambda: fb.Adam(lr=0.01), "epochs": 3},
    "weighted": {"n": 41, "opt": lambda: fb.SGD(lr=0.1, momentum=0.9, nesterov=True),
                     "weighted": True},
    "uneven": {"n": 23, "opt": lambda: fb.Adam(lr=0.02), "batch_size": 5},
    "multilabel": {"n": 27, "opt": lambda: fb.SGD(lr=0.2, momentum=0.9), "batch_size": 6,
                   "weighted": True, "alpha": 1e-3, "output": "sigmoid"},
    "shuffled": {"n": 30, "opt": lambda: fb.SGD(lr=0.05, momentum=0.5), "shuffle": True},
    "checkpoint": {"n": 30, "opt": lambda: fb.Adam(lr=0.01)},
}


@pytest.mark.parametrize("size,name", [(2, k) for k in CASES] + [(3, "uneven"), (3, "sgd")])
def test_equals_one_process_on_union_batches(runs, size, name):
    case = dict(CASES[name])
    case["opt"] = case["opt"]()
    params = assert_same_on_ranks(runs[size], name, size)
    ref, losses = reference(name, size, **case)
    err = np.max(np.abs(params - ref) / np.maximum(np.abs(ref), 1e-12))
    print(f"{name} on {size} ranks: max relative parameter error {err:.1e}")  # -s shows it
    np.testing.assert_allclose(params, ref, rtol=RTOL, atol=1e-12)
    _, info = result(runs[size], name, 0)
    np.testing.assert_allclose(info["history"]["loss"], losses, rtol=1e-9)
    # validation scores are global: the union of the shards is the whole set
    output = case.get("output", "softmax")
    X, y, _ = w.data(case["n"], multilabel=output == "sigmoid")
    m = fb.MLP([6, 7, 5, 3], activation="tanh", dtype="float64", output=output)
    m.flat_params[:] = params
    assert info["history"]["val_loss"][-1] == pytest.approx(m.evaluate(X, y)["loss"],
                                                           rel=1e-10)
    assert info["history"]["val_accuracy"][-1] == pytest.approx(m.evaluate(X, y)["accuracy"])


def test_checkpoint_resumes_on_another_rank_count(runs):
    """2 ranks write the checkpoint; 3 ranks continue it for one epoch."""
    params = assert_same_on_ranks(runs[3], "resume", 3)
    m = fb.MLP.load(runs[2] / "ckpt.npz")
    assert m.epochs_trained == 2 and m.optimizer is not None
    ck, _ = result(runs[2], "checkpoint", 0)
    np.testing.assert_array_equal(m.flat_params, ck)
    X, y, _ = w.data(30)
    for xb, yb, _ in union_batches(X, y, None, 3, 8):
        m.train_on_batch(xb, yb)
    np.testing.assert_allclose(params, m.flat_params, rtol=RTOL, atol=1e-12)


def test_every_checkpoint_holds_the_step_just_taken(runs):
    """The steps alternate between two sets of buffers; a checkpoint taken
    after any step, odd or even, holds that step's parameters (checked
    against one process on the union batches, step by step)."""
    with np.load(runs[2] / "midsaves_saved.rank0.npz") as f:
        saved = f["saved"]
    X, y, _ = w.data(30)
    m = fb.MLP([6, 7, 5, 3], activation="tanh", dtype="float64", seed=3)
    opt = fb.Adam(lr=0.01)
    want = []
    for _ in range(2):
        steps = list(union_batches(X, y, None, 2, 4))
        for t, (xb, yb, _) in enumerate(steps):
            m.train_on_batch(xb, yb, optimizer=opt)
            # mid-epoch saves after every step but the epoch's last; one at its end
            want.append(m.flat_params.copy())
    assert len(saved) == len(want) == 8
    for k, (got, ref) in enumerate(zip(saved, want, strict=True)):
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=1e-12, err_msg=f"save {k + 1}")


def test_divergence_on_one_rank_stops_every_rank(runs):
    """Rank 1's second batch overflows: both ranks raise the same error at
    epoch 1, step 2, with the parameters after step 1."""
    d = runs[2]
    infos = [result(d, "diverge", r)[1] for r in range(2)]
    for info in infos:
        assert info["error_type"] == "DivergenceError"
        assert (info["epoch"], info["step"]) == (1, 2)
        assert "non-finite" in info["error"]
    assert infos[0]["error"] == infos[1]["error"]
    params = assert_same_on_ranks(d, "diverge", 2)
    X, y, _ = w.data(32)
    m = fb.MLP([6, 7, 5, 3], activation="relu", dtype="float64", seed=3)
    xb, yb, _ = next(union_batches(X, y, None, 2, 8))
    m.train_on_batch(xb, yb, optimizer=fb.SGD(lr=0.1))
    np.testing.assert_allclose(params, m.flat_params, rtol=RTOL, atol=1e-12)
    assert np.isfinite(params).all()


def test_non_finite_update_is_refused_on_every_rank(runs):
    infos = [result(runs[2], "diverge_update", r)[1] for r in range(2)]
    for info in infos:
        assert info["error_type"] == "DivergenceError"
        assert (info["epoch"], info["step"]) == (1, 1) and "non-finite update" in info["error"]
    params = assert_same_on_ranks(runs[2], "diverge_update", 2)
    m = fb.MLP([6, 7, 5, 3], activation="tanh", dtype="float64", seed=3)  # rank 0's start
    np.testing.assert_array_equal(params, m.flat_params)


def test_non_finite_update_at_a_later_step_leaves_state_as_before(runs):
    """Status 3 at Adam's third step: parameters, both moment buffers and
    the step count are those after step 2, bit for bit, on every rank."""
    d = runs[2]
    for r in range(2):
        params, info = result(d, "diverge_state", r)
        assert info["error_type"] == "DivergenceError"
        assert (info["epoch"], info["step"]) == (2, 1) and "non-finite update" in info["error"]
        with np.load(d / f"diverge_state_opt.rank{r}.npz") as f:
            np.testing.assert_array_equal(params, f["params_before"])
            np.testing.assert_array_equal(f["s1"], f["s1_before"])
            np.testing.assert_array_equal(f["s2"], f["s2_before"])
            assert f["step"].tolist() == [2, 2]
            assert np.abs(f["s1"]).max() > 0  # the state is not the fresh one
    assert_same_on_ranks(d, "diverge_state", 2)


@pytest.mark.parametrize("size", [2, 3])
def test_non_finite_update_mid_epoch_leaves_the_step_before_it(runs, size):
    """Status 3 at the 4th step of an epoch, after 3 steps made in place:
    every rank ends with the parameters, momentum and step count after step
    3, bit for bit those of a fit over the 3 batches alone (the epoch's copy
    restored and its good steps replayed, their sums all-reduced again)."""
    d = runs[size]
    for r in range(size):
        params, info = result(d, "diverge_mid", r)
        assert info["error_type"] == "DivergenceError"
        assert (info["epoch"], info["step"]) == (1, 4) and "non-finite update" in info["error"]
        assert np.isfinite(params).all()
        with np.load(d / f"diverge_mid_ref.rank{r}.npz") as f:
            np.testing.assert_array_equal(params, f["params"])
            np.testing.assert_array_equal(f["s1"], f["s1_ref"])
            assert f["step"].tolist() == [3, 3]
            assert np.abs(f["s1"]).max() > 0
    assert_same_on_ranks(d, "diverge_mid", size)


def test_bad_input_on_one_rank_raises_on_every_rank(runs):
    infos = [result(runs[2], "bad_input", r)[1] for r in range(2)]
    assert infos[1]["error_type"] == "ValueError" and "columns" in infos[1]["error"]
    assert infos[0]["error_type"] == "ValueError" and "rank 1" in infos[0]["error"]
    for r in range(2):
        info = result(runs[2], "bad_comm", r)[1]
        assert info["error_type"] == "TypeError" and "comm must be an mpi4py" in info["error"]
        info = result(runs[2], "bad_output", r)[1]
        assert info["error_type"] == "ValueError"
        assert "supports softmax, sigmoid and identity outputs" in info["error"]
        assert "'exp'" in info["error"]


def test_cli_trains_on_shards_under_mpiexec(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 8))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + 2 * (X[:, 2] > 1)  # labels 0..3
    np.savez(tmp_path / "big.npz", X=X, y=y)
    args = [sys.executable, "-m", "fastbp", "train", "--data", "big.npz", "--epochs", "3",
            "--layers", "16", "--batch-size", "16", "--lr", "0.05", "--out", "m.npz",
            "--no-progress", "--dtype", "float64"]
    res = mpirun(2, args, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert out.count("on 2 MPI ranks") == 1 and "240 training rows, 60 validation" in out
    assert out.count("epoch   3") == 1 and out.count("saved m.npz") == 1
    m = fb.MLP.load(tmp_path / "m.npz")
    assert m.widths.tolist() == [8, 16, 4] and m.epochs_trained == 3
    assert m.evaluate(X, y)["accuracy"] > 0.6


def test_cli_error_on_one_rank_stops_every_rank(tmp_path):
    res = mpirun(3, [sys.executable, "-m", "fastbp", "train", "--data", "missing.npz",
                     "--no-progress"], cwd=tmp_path, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "fastbp: error: data file not found" in res.stderr


def test_load_data_reads_only_the_rows_asked_for(tmp_path):
    X = np.arange(60.0).reshape(20, 3)
    y = np.arange(20) % 3
    np.savez(tmp_path / "a.npz", X=X, y=y)
    np.savez_compressed(tmp_path / "b.npz", X=X, y=y)
    np.save(tmp_path / "c.npy", np.c_[X, y])
    np.savetxt(tmp_path / "d.csv", np.c_[X, y], delimiter=",")
    for name in ("a.npz", "b.npz", "c.npy", "d.csv"):
        for rank in range(3):
            part = w.shard_rows(20, rank, 3)
            Xs, ys = fb.load_data(tmp_path / name, rows=lambda n, r=rank: w.shard_rows(n, r, 3))
            np.testing.assert_array_equal(Xs, X[part])
            np.testing.assert_array_equal(ys, y[part])
    assert [w.shard_rows(20, r, 3) for r in range(3)] == [slice(0, 7), slice(7, 14),
                                                         slice(14, 20)]


def test_example_runs_under_mpiexec(tmp_path):
    res = mpirun(2, [sys.executable, os.path.join(ROOT, "examples", "train_mpi.py"), "3",
                     "float64"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("2 ranks: final training loss") == 1
    assert fb.MLP.load(tmp_path / "digits_mpi.npz").epochs_trained == 3
