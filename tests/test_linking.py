"""Leaf kernels called through the table of ``_kernels/linking.py``.

The declared signatures must be exactly what Numba compiles (a mismatch
would call a leaf with the wrong argument layout), a first ``fit`` must
compile only the leaves it uses, a cached caller must find its leaves again
in a new process, and a leaf that cannot be compiled must surface as a
Python exception, not a crash.  The numerics of every leaf are covered by
the reference tests of the layer, loss and optimizer files, which call
through the same table.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import errors, njit

from fastbp._kernels import linking

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("dtype", linking.DTYPES, ids=str)
def test_declared_signatures_are_what_numba_compiles(dtype):
    # _address raises TypeError when the compiled return type differs from
    # the declared one, and compiling with the declared argument types fails
    # when they are not the leaf's.
    linking.compile_all(dtype)
    for k, leaf in enumerate(linking._LEAVES):
        if leaf.startswith("sparse."):  # compile_all leaves these to their first use
            linking.resolve(k * len(linking.DTYPES) + linking.DTYPES.index(dtype))
        assert linking.slot_filled(leaf, dtype)
        args, ret = linking.signature_of(leaf, dtype)
        cres = linking.dispatcher(leaf).overloads[args]
        assert cres.signature.return_type == ret
        assert cres.signature.args == args


def test_linked_call_matches_direct_call():
    from fastbp._kernels import losses

    linked = linking.linked("losses.softmax_xent_labels")

    @njit
    def through_table(z, y, w, dz):
        return linked(z, y, w, dz)

    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 3))
    y = np.array([0, 2, 1, 1, 0])
    w = np.full(5, 0.2)
    d1, d2 = np.empty_like(z), np.empty_like(z)
    assert through_table(z, y, w, d1) == losses.softmax_xent_labels(z, y, w, d2)
    np.testing.assert_array_equal(d1, d2)


def test_entry_point_is_the_dispatchers_compiled_function():
    # MLP.train_on_batch calls train_epoch's entry point (network._entry_point),
    # a Numba internal: it must run the same code for the same arguments, and
    # be None (the dispatcher is called) for arguments it was not compiled for
    from fastbp.network import _entry_point

    @njit
    def f(rec, k):
        a, b = rec
        return a.sum() * k + b

    args = ((np.arange(3.0), 2.5), 4)
    assert _entry_point(f, args) is None  # not compiled yet
    want = f(*args)
    entry = _entry_point(f, args)
    assert entry is not None and entry is not f
    assert entry(*args) == want == 14.5
    assert _entry_point(f, ((np.arange(3), 2.5), 4)) is None  # other types


def test_unowned_arrays_view_the_same_memory_without_a_reference():
    # network.unowned (a Numba internal: the array's meminfo and parent) strips
    # the reference of an array, or of each array of a record, and nothing else
    import sys

    from fastbp._kernels.network import unowned

    @njit
    def write_through(rec, k):
        a, x, b = unowned(rec)
        c = unowned(a[1:])  # a view of an unowned array
        c[0] = x
        b[k] = a.sum() + c.size
        return a.size + b.size

    a = np.zeros(4)
    b = np.zeros(3, np.float32)
    refs = sys.getrefcount(a), sys.getrefcount(b)
    for _ in range(100):
        assert write_through((a, 2.5, b), 2) == 7
    np.testing.assert_array_equal(a, [0, 2.5, 0, 0])
    np.testing.assert_array_equal(b, [0, 0, 5.5])
    assert (sys.getrefcount(a), sys.getrefcount(b)) == refs  # nothing kept or lost


def test_training_keeps_no_reference_to_its_arrays():
    # the step and epoch kernels run on unowned arrays; every reference the
    # calls take is given back
    import sys

    import fastbp as fb

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    m = fb.MLP([5, 8, 3], seed=0)
    m.fit(X, y, epochs=1, batch_size=8)
    m.train_on_batch(X[:8], y[:8])
    before = [sys.getrefcount(a) for a in (X, y, m._params, m._grads, *m.optimizer.state_)]
    m.fit(X, y, epochs=3, batch_size=8)
    for _ in range(50):
        m.train_on_batch(X[:8], y[:8])
    after = [sys.getrefcount(a) for a in (X, y, m._params, m._grads, *m.optimizer.state_)]
    assert after == before


def test_linked_call_with_other_types_is_a_typing_error():
    linked = linking.linked("losses.row_weights")

    @njit
    def bad(out):
        linked(3, np.zeros(3, np.float32), out)  # sample weights must be float64

    with pytest.raises(errors.TypingError, match="linked row_weights: no signature"):
        bad(np.zeros(3, np.float32))


def test_failed_leaf_compile_raises_runtime_error(monkeypatch, capfd):
    # A caller compiled before the failure, then a slot that cannot be filled.
    linked = linking.linked("losses.half_squared_error")

    @njit
    def call(p, t, w, dp):
        return linked(p, t, w, dp)

    a = np.zeros((2, 2), np.float32)
    w = np.ones(2, np.float32)
    call(a, a, w, a.copy())
    slot = linking._LEAVES.index("losses.half_squared_error") * len(linking.DTYPES)
    saved = linking._TABLE[slot]

    def fail(slot):
        raise OSError("simulated compile failure")

    monkeypatch.setattr(linking, "_address", fail)
    linking._TABLE[slot] = None
    try:
        with pytest.raises(RuntimeError, match="compiling the kernel half_squared_error failed"):
            call(a, a, w, a.copy())
        assert "simulated compile failure" in capfd.readouterr().err
    finally:
        linking._TABLE[slot] = saved


_FIRST_FIT = textwrap.dedent(
    """
    import json
    import numpy as np
    import fastbp as fb
    from fastbp import _threads
    from fastbp._kernels import linking
    from numba import types
    _threads.PARALLEL_MIN_FLOPS = 0  # split even this tiny step on 2 threads
    _threads.SPLIT_MAX_PACKED = float("inf")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    m = fb.MLP([5, 8, 3], dtype="float32", seed=0)
    m.fit(X, y, epochs=2, batch_size=16, optimizer=fb.SGD(lr=0.1, momentum=0.9))
    from numba.core.event import install_recorder
    with install_recorder("numba:compile") as rec:
        m.train_on_batch(X[:16], y[:16])  # the step fit compiled, the one-step update
    before_fast = sorted(leaf for leaf in linking._LEAVES
                         if linking.dispatcher(leaf).overloads)
    m.train_on_batch(X[:16], y[:16])  # the fast path: the kernel checks the batch
    print(json.dumps({
        "compiled_by_train_on_batch": sum(1 for _, ev in rec.buffer if ev.is_start),
        "compiled_before_fast": before_fast,
        "linked": sorted(leaf for leaf in linking._LEAVES
                         if linking.slot_filled(leaf, types.float32)),
        "compiled": sorted(leaf for leaf in linking._LEAVES
                           if linking.dispatcher(leaf).overloads),
        "params": m.flat_params.tolist(),
    }))
    """
)


def _first_fit(cache, threads=1):
    env = dict(os.environ, PYTHONPATH=ROOT, NUMBA_CACHE_DIR=str(cache),
               OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS=str(threads))
    res = subprocess.run([sys.executable, "-c", _FIRST_FIT], env=env, capture_output=True,
                         text=True, check=False, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("threads", [1, 2])
def test_first_fit_links_only_what_it_uses_and_reloads_from_cache(tmp_path, threads):
    # and train_on_batch afterwards runs the step fit compiled, with one new
    # leaf: fit's epochs of 4 steps update in place (optim.sgd_in_place),
    # a single step keeps its old values in the second buffers
    # (optim.sgd_journal); its
    # fast path (from the second call) adds only the batch check.
    # With 2 threads the 8-wide hidden layer's backward pass is split (its
    # forward pass is too narrow to be), and so is the gather
    used = sorted(["activations.bias_activation_cols", "activations.delta_cols",
                   "losses.row_weights", "losses.softmax_xent_labels", "network.backward_block",
                   "network.forward_block", "network.train_step", "network.update_block",
                   "optim.sgd_in_place"]
                  + (["network.gather_block", "network.layer_par"] if threads > 1 else []))
    cold = _first_fit(tmp_path, threads)
    assert cold["compiled_by_train_on_batch"] == 1
    used = sorted([*used, "optim.sgd_journal"])
    assert cold["compiled_before_fast"] == used  # no other loss, no Adam, no float64
    used = sorted([*used, "network.check_batch"])
    assert cold["linked"] == used
    assert cold["compiled"] == used
    # a new process: train_epoch comes from the cache and finds its leaves again
    warm = _first_fit(tmp_path, threads)
    assert warm["linked"] == used
    assert warm["params"] == cold["params"]
