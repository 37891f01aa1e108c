"""Reliability beyond single bad arguments (issue 8): checked updates,
corrupted model files, mismatched buffers, memory bounds, the CLI.

The fuzz and crash tests run their calls in a child process, so that a
segfault or an abort fails the test instead of killing pytest.
"""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastbp as fb
from fastbp import _validation as v
from fastbp._kernels import optim as k_opt
from fastbp.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(code, *args, timeout=240):
    """Run ``code`` in a fresh interpreter; returns (returncode, output)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], check=False,
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    return proc.returncode, proc.stdout + proc.stderr


def _data(n=24, d=5, c=3, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal((n, d))).astype(np.float32), np.arange(n) % c


# --- family 2: a step whose update is not finite is not applied ------------------

@pytest.mark.parametrize("make_opt, scale", [
    (lambda: fb.SGD(lr=1e37, momentum=0.9), 1e3),
    (lambda: fb.SGD(lr=1e37), 1e3),
    (lambda: fb.SGD(lr=1e37, momentum=0.5, nesterov=True), 1e3),
    # Adam's step is about lr; with gradients near 1e21 or more, (1 - beta2) g**2
    # overflows the second moment
    (lambda: fb.Adam(lr=1e-3), 1e23),
], ids=["sgd-momentum", "sgd", "nesterov", "adam"])
@pytest.mark.parametrize("how", ["fit", "train_on_batch"])
def test_overflowing_update_is_rejected_and_nothing_changes(make_opt, scale, how):
    X, y = _data(scale=scale)
    m = fb.MLP([5, 8, 3], seed=0)
    opt = make_opt()
    X0, y0 = _data(n=8)
    m.fit(X0, y0, epochs=1, batch_size=8, optimizer=fb.SGD(lr=1e-6))  # an epoch before
    opt.bind(m.flat_params)
    params = m.flat_params.copy()
    state = tuple(s.copy() for s in opt.state_)
    with pytest.raises(fb.DivergenceError, match=r"non-finite update .*epoch 2, step 1") as info:
        if how == "fit":
            m.fit(X, y, epochs=1, batch_size=len(X), optimizer=opt)
        else:
            m.train_on_batch(X, y, optimizer=opt)
    assert info.value.epoch == 2 and info.value.step == 1
    np.testing.assert_array_equal(m.flat_params, params)
    for s, s0 in zip(opt.state_, state):
        np.testing.assert_array_equal(s, s0)
    assert opt.step_ == 0
    assert np.isfinite(m.flat_params).all()


def test_adam_second_moment_overflow_is_caught():
    """g = 1e21 in float32: (1 - beta2) g**2 overflows v to inf while the parameter step
    stays finite (m / inf = 0); the state would be broken, so it is refused."""
    p = np.ones(4, np.float32)
    g = np.full(4, 1e21, np.float32)
    s1, s2 = np.zeros(4, np.float32), np.zeros(4, np.float32)
    hp = fb.Adam(lr=1e-3).hyperparameters()
    assert k_opt.check_update(k_opt.ADAM, p, g, s1, s2, hp, 1) == k_opt.BAD_UPDATE
    q, a, b = p.copy(), s1.copy(), s2.copy()
    k_opt.apply_update(k_opt.ADAM, q, g, a, b, hp, 1)
    assert np.isfinite(q).all() and not np.isfinite(b).all()  # what the check prevents


def test_l2_term_overflow_is_a_divergence():
    m = fb.MLP([5, 4, 3], seed=0, alpha=1e30)
    m.flat_params[:] = 1e15
    X, y = _data()
    before = m.flat_params.copy()
    with pytest.raises(fb.DivergenceError, match="non-finite loss"):
        m.train_on_batch(X, y, optimizer=fb.SGD(lr=1e-30))
    np.testing.assert_array_equal(m.flat_params, before)


def _sgd_ref(p, g, v, lr, mu, damp, wd, nesterov, first):
    d = g + wd * p
    if mu == 0:
        return p - lr * d, v
    keep, dmp = (0.0, 1.0) if first else (mu, 1.0 - damp)
    vn = keep * v + dmp * d
    return (p - lr * (d + mu * vn)) if nesterov else (p - lr * vn), vn


WIDE = st.sampled_from([0.0, 1e-30, 1e-3, 1.0, 1e3, 1e20, 1e36, 3e38, 1e150, 1e300,
                        np.inf, np.nan])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dtype=st.sampled_from([np.float32, np.float64]),
       kind=st.sampled_from(["sgd", "momentum", "nesterov", "adam"]),
       values=st.lists(st.tuples(WIDE, WIDE, WIDE, st.booleans()), min_size=1, max_size=9),
       lr=st.sampled_from([1e-3, 1.0, 1e30, 1e300]), first=st.booleans())
def test_check_agrees_with_update(dtype, kind, values, lr, first):
    """check_update says 0 exactly when the update leaves g, p and the state
    finite; 2 for a non-finite g; 3 otherwise.  Nothing is written."""
    with np.errstate(all="ignore"):
        p = np.array([a for a, _, _, _ in values], dtype)
        g = np.array([b * (-1 if s else 1) for _, b, _, s in values], dtype)
        g[np.isnan(g)] = 0 if len(values) > 1 else g[np.isnan(g)]
        s1 = np.array([c for _, _, c, _ in values], dtype) * dtype(0.5)
        s2 = np.abs(s1)
    if kind == "adam":
        opt = fb.Adam(lr=lr)
    else:
        opt = fb.SGD(lr=lr, momentum=0.0 if kind == "sgd" else 0.9,
                     nesterov=kind == "nesterov")
    hp = opt.hyperparameters()
    step = 1 if first else 3
    copies = [a.copy() for a in (p, g, s1, s2)]
    status = k_opt.check_update(opt.kind, p, g, s1, s2, hp, step)
    for a, c in zip((p, g, s1, s2), copies):
        np.testing.assert_array_equal(a, c)  # the check writes nothing
    q, a1, a2 = p.copy(), s1.copy(), s2.copy()
    with np.errstate(all="ignore"):
        k_opt.apply_update(opt.kind, q, g, a1, a2, hp, step)
    used = [q, a1, a2] if kind == "adam" else ([q] if kind == "sgd" else [q, a1])
    if not np.isfinite(g).all():
        assert status == k_opt.BAD_GRADIENT
    elif all(np.isfinite(u).all() for u in used):
        assert status == k_opt.UPDATE_OK
    else:
        assert status == k_opt.BAD_UPDATE
    if kind != "adam" and status == k_opt.UPDATE_OK:
        with np.errstate(all="ignore"):
            want, _ = _sgd_ref(p.astype(np.float64), g.astype(np.float64),
                               s1.astype(np.float64), lr, opt.momentum, 0.0, 0.0,
                               opt.nesterov, first)
        np.testing.assert_allclose(q, want.astype(dtype), rtol=1e-5 if dtype == np.float32
                                   else 1e-12)


# --- family 1 and 3: Optimizer.step over any arguments --------------------------

ARRAYS = st.builds(
    lambda dtype, n, ndim, layout, fill: _make(dtype, n, ndim, layout, fill),
    st.sampled_from(["float32", "float64", "float16", "int64", "bool", "complex128", ">f8",
                     "U1", "object"]),
    st.integers(0, 6), st.sampled_from([0, 1, 2]),
    st.sampled_from(["C", "strided", "readonly", "F"]),
    st.sampled_from([0.5, 0.0, 1e30, np.nan]))


def _make(dtype, n, ndim, layout, fill):
    shape = {0: (), 1: (n,), 2: (n, 2)}[ndim]
    base = np.full(tuple(2 * s for s in shape) if layout == "strided" else shape, fill)
    with np.errstate(all="ignore"):
        a = base.astype(dtype) if dtype != "object" else base.astype(object)
    if layout == "strided" and ndim:
        a = a[(slice(None, None, 2),) * ndim]
    if layout == "F" and ndim == 2:
        a = np.asfortranarray(a)
    if layout == "readonly":
        a.flags.writeable = False
    return a


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=ARRAYS, grads=st.one_of(ARRAYS, st.sampled_from(["abc", None, 3.0, [1.0]])),
       adam=st.booleans(), lr=st.sampled_from([1e-3, 1e30, 1e300]))
def test_optimizer_step_never_leaks(params, grads, adam, lr):
    opt = fb.Adam(lr=lr) if adam else fb.SGD(lr=lr, momentum=0.9)
    before = params.copy() if isinstance(params, np.ndarray) else params
    try:
        opt.step(params, grads)
    except (TypeError, ValueError, FloatingPointError) as exc:
        msg = str(exc)
        assert "numba" not in msg.lower() and "nopython" not in msg
        assert any(word in msg for word in ("params", "grads", "update", "lr=")), msg
        if isinstance(before, np.ndarray) and before.dtype.kind == "f":
            np.testing.assert_array_equal(params, before)  # untouched
        return
    assert params.dtype in v.FLOAT_DTYPES and params.ndim == 1
    assert np.isfinite(params).all() and np.isfinite(opt.state_[0]).all()


# --- family 1: memory bounds -----------------------------------------------------

def test_workspace_too_large_names_batch_size(monkeypatch):
    X, y = _data(n=600)
    m = fb.MLP([5, 1000, 3], seed=0)
    monkeypatch.setattr(v, "MEMORY_BYTES", 1_000_000)
    with pytest.raises(ValueError, match=r"batch_size: the workspace for 600 rows needs"):
        m.fit(X, y, epochs=1, batch_size=600)
    with pytest.raises(ValueError, match=r"X: the workspace for .* rows needs"):
        m.loss_and_grad(X, y)
    with pytest.raises(ValueError, match=r"X: the workspace"):
        m.train_on_batch(X, y)
    m.fit(X, y, epochs=1, batch_size=8)  # a batch that fits still trains


def test_predict_chunks_by_width():
    """predict on a wide model keeps its activations under a fixed size."""
    m = fb.MLP([2, 3000, 2], seed=0)
    X = np.ones((7000, 2), np.float32)
    assert m.predict(X).shape == (7000,)


# --- family 2 and 4: model files ---------------------------------------------------

def _checkpoint(tmp_path, opt=None, dtype="float32"):
    X, y = _data()
    m = fb.MLP([5, 7, 3], seed=0, dtype=dtype)
    m.fit(X, y, epochs=2, batch_size=8, optimizer=opt or fb.Adam(lr=1e-2))
    p = tmp_path / "ckpt.npz"
    m.save(p, include_optimizer=True)
    return m, p, X


def _members(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _write(path, arrays):
    np.savez(path, **arrays)
    return path


def _json(d):
    return np.array(json.dumps(d))


def _npy_bytes(header_dict, data=b""):
    """A .npy member with a hand-written header (shape may lie)."""
    h = repr(header_dict).encode("latin1")
    pad = 64 - (10 + len(h) + 1) % 64
    h = h + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + data


def _replace_member(src, dst, name, raw):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename == name + ".npy":
                zout.writestr(info.filename, raw)
            else:
                zout.writestr(info, zin.read(info))
    return dst


OPT = {"name": "Adam", "settings": {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                                    "weight_decay": 0.0}, "step": 6}
BAD_FILES = [
    ("output code relu", {"codes": np.array([1, 1])}, r"output 'softmax' needs a last layer with activation code 0 .*got code 1"),
    ("output code tanh", {"codes": np.array([3, 3])}, r"needs a last layer with activation code 0"),
    ("hidden code unknown", {"codes": np.array([-1, 0])}, r"unknown activation codes"),
    ("identity 1 class softmax", {"widths": np.array([5, 7, 1])}, r"at least 2 unit"),
    ("widths overflow int64", {"widths": np.array([2**31, 2**31, 2**31, 3], np.int64)}, r"bad widths .*parameters, more than"),
    ("widths uint64 huge", {"widths": np.array([2**64 - 1, 2], np.uint64)}, r"bad widths"),
    ("widths too big for memory", {"widths": np.array([5, 2**35, 3])}, r"bad widths .*do not fit"),
    ("widths 2-D", {"widths": np.array([[5, 7, 3]])}, r"bad widths"),
    ("widths strings", {"widths": np.array(["5", "7", "3"])}, r"bad widths"),
    ("widths float", {"widths": np.array([5.0, 7.0, 3.0])}, r"bad widths"),
    ("params wrapped count", {"widths": np.array([2**32, 2**32, 3], np.int64)}, r"bad widths"),
    ("codes 2-D", {"codes": np.array([[1, 0]])}, r"codes must have shape \(2,\)"),
    ("codes float", {"codes": np.array([1.0, 0.0])}, r"codes must have shape \(2,\) and an integer"),
    ("output 2-D", {"output": np.array([["softmax"]])}, r"field 'output' must be a single str"),
    ("format bytes", {"format": np.array(b"fastbp-mlp")}, r"not a fastbp model file"),
    ("format long", {"format": np.array("fastbp-mlp" * 1000)}, r"not a fastbp model file"),
    ("version huge", {"format_version": np.array(2**63 - 1)}, r"out of range|not supported"),
    ("alpha inf", {"alpha": np.array(np.inf)}, r"alpha must be finite"),
    ("alpha complex", {"alpha": np.array(1j)}, r"field 'alpha' must be a single float"),
    ("epochs float", {"epochs_trained": np.array(2.5)}, r"field 'epochs_trained' must be a single int"),
    ("epochs huge", {"epochs_trained": np.array(2**63 - 1, np.int64)}, r"out of range"),
    ("history deep", {"history": np.array("[" * 100000 + "]" * 100000)}, r"history is not valid JSON|nested|must be a JSON object"),
    ("history deep object", {"history": np.array('{"a": ' + "[" * 50 + "]" * 50 + "}")}, r"nested more than"),
    ("history NaN", {"history": np.array('{"loss": [1.0, NaN]}')}, r"history\['loss'\] must be a list of finite numbers"),
    ("history strings", {"history": np.array('{"loss": ["a"]}')}, r"list of finite numbers"),
    ("history not list", {"history": np.array('{"loss": 3}')}, r"list of finite numbers"),
    ("history bools", {"history": np.array('{"loss": [true]}')}, r"list of finite numbers"),
    ("history huge int", {"history": np.array('{"loss": [' + "9" * 5000 + "]}")}, r"history is not valid JSON"),
    ("rng not dict", {"rng_state": np.array("[1]")}, r"rng_state must be a JSON object"),
    ("rng other generator", {"rng_state": _json({"bit_generator": "MT19937", "state": {}})}, r"bad rng_state"),
    ("rng bad state", {"rng_state": _json({"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}, "has_uint32": 0, "uinteger": 0})}, r"bad rng_state"),
    ("rng missing keys", {"rng_state": _json({"bit_generator": "PCG64"})}, r"bad rng_state"),
    ("optimizer unknown", {"optimizer": _json(dict(OPT, name="RMSprop"))}, r"unknown optimizer name 'RMSprop'"),
    ("optimizer name int", {"optimizer": _json(dict(OPT, name=3))}, r"unknown optimizer name 3"),
    ("optimizer settings list", {"optimizer": _json(dict(OPT, settings=[1]))}, r"optimizer settings must be a JSON object"),
    ("optimizer settings unknown", {"optimizer": _json(dict(OPT, settings={"momentum": 0.9}))}, r"bad optimizer"),
    ("optimizer lr string", {"optimizer": _json(dict(OPT, settings={"lr": "x"}))}, r"bad optimizer .*lr must be a real number"),
    ("optimizer lr negative", {"optimizer": _json(dict(OPT, settings={"lr": -1}))}, r"bad optimizer .*lr must be > 0"),
    ("optimizer step negative", {"optimizer": _json(dict(OPT, step=-1))}, r"optimizer step must be an integer"),
    ("optimizer step float", {"optimizer": _json(dict(OPT, step=1.5))}, r"optimizer step must be an integer"),
    ("optimizer step bool", {"optimizer": _json(dict(OPT, step=True))}, r"optimizer step must be an integer"),
    ("optimizer step huge", {"optimizer": _json(dict(OPT, step=2**70))}, r"optimizer step must be an integer"),
    ("optimizer lacks step", {"optimizer": _json({"name": "Adam", "settings": {}})}, r"lacks name, settings or step"),
    ("adam negative v", {"optimizer_s2": lambda a: -np.abs(a) - 1}, r"Adam's second moments\) must be >= 0"),
    ("adam NaN m", {"optimizer_s1": lambda a: a * np.nan}, r"optimizer_s1 values contain NaN"),
    ("state float64", {"optimizer_s1": lambda a: a.astype(np.float64)}, r"optimizer_s1 must match the parameters' shape and dtype"),
    ("state short", {"optimizer_s2": lambda a: a[:-1]}, r"optimizer_s2 values have shape"),
    ("state missing", {"optimizer_s2": None}, r"missing field 'optimizer_s2'"),
    ("state objects", {"optimizer_s1": lambda a: a.astype(object)}, r"optimizer_s1 values have Python objects"),
]


@pytest.mark.parametrize("label, changes, pattern", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_load_refuses_crafted_fields(tmp_path, label, changes, pattern):
    _, p, _ = _checkpoint(tmp_path)
    arrays = _members(p)
    for key, val in changes.items():
        if val is None:
            arrays.pop(key)
        elif callable(val):
            arrays[key] = val(arrays[key])
        else:
            arrays[key] = val
    bad = _write(tmp_path / "bad.npz", arrays)
    with pytest.raises(ValueError, match=r"cannot load model from .*bad.npz") as info:
        fb.MLP.load(bad)
    assert info.match(pattern), str(info.value)


@pytest.mark.parametrize("member, header, data", [
    ("params", {"descr": "<f4", "fortran_order": False, "shape": (2**40,)}, b"\0" * 64),
    ("params", {"descr": "<f4", "fortran_order": False, "shape": (-1,)}, b""),
    ("params", {"descr": "<f4", "fortran_order": False, "shape": (-2, -3)}, b"\0" * 24),
    ("widths", {"descr": "<i8", "fortran_order": False, "shape": (10**12,)}, b"\0" * 64),
    ("history", {"descr": "<U1000000000", "fortran_order": False, "shape": ()}, b"{}"),
    ("history", {"descr": "|O", "fortran_order": False, "shape": ()}, b"\x80\x04N."),
    ("optimizer_s1", {"descr": [("a", "<f4")], "fortran_order": False, "shape": (3,)}, b"\0" * 12),
    ("params", {"descr": "<f4", "fortran_order": False, "shape": (94,)}, b"\0" * 8),
])
def test_load_checks_headers_before_reading(tmp_path, member, header, data):
    """A member whose header declares a huge, negative or odd shape or dtype
    is refused from the header alone (nothing large is allocated)."""
    _, p, _ = _checkpoint(tmp_path)
    bad = _replace_member(p, tmp_path / "bad.npz", member, _npy_bytes(header, data))
    with pytest.raises(ValueError, match=r"cannot load model from"):
        fb.MLP.load(bad)


def test_unknown_members_are_ignored_unread(tmp_path):
    m, p, X = _checkpoint(tmp_path)
    arrays = _members(p)
    arrays["notes"] = np.array([{"a": 1}], dtype=object)  # would need pickle
    arrays["junk"] = np.zeros(3)
    good = _write(tmp_path / "extra.npz", arrays)
    bad = _replace_member(good, tmp_path / "extra2.npz", "junk",
                          _npy_bytes({"descr": "<f8", "fortran_order": False,
                                      "shape": (2**50,)}))
    for path in (good, bad):
        m2 = fb.MLP.load(path)
        np.testing.assert_array_equal(m2.predict_proba(X), m.predict_proba(X))


def test_loaded_checkpoint_continues(tmp_path):
    """The stricter loader still reads what save writes, optimizer included."""
    m, p, X = _checkpoint(tmp_path)
    m2 = fb.MLP.load(p)
    assert m2.optimizer.step_ == m.optimizer.step_
    y = np.arange(X.shape[0]) % 3
    m.fit(X, y, epochs=1, batch_size=8)
    m2.fit(X, y, epochs=1, batch_size=8)
    np.testing.assert_array_equal(m2.flat_params, m.flat_params)


FUZZ = """
import io, json, sys, zipfile
import numpy as np
import fastbp as fb

src, tmp, n_cases, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(seed)
raw = open(src, "rb").read()
with np.load(src) as f:
    members = {k: f[k] for k in f.files}
X = rng.standard_normal((6, 5)).astype(np.float32)
REPLACEMENTS = [
    lambda a: a.astype(np.float16), lambda a: a.astype(np.int8), lambda a: a.astype(object),
    lambda a: a.astype(np.complex64), lambda a: np.array("x"), lambda a: np.array(7),
    lambda a: a.reshape(-1)[:1], lambda a: np.zeros((2, 2)), lambda a: np.array([]),
    lambda a: a * 1e30, lambda a: -a, lambda a: np.full(a.shape, np.nan) if a.shape else a,
    lambda a: np.array(2**62), lambda a: np.array([10**6] * 3), lambda a: np.array("{}"),
    lambda a: np.array('{"name": "Adam", "settings": {}, "step": 0}'),
    lambda a: np.array(json.dumps({"bit_generator": "PCG64", "state": {"state": -1, "inc": 2**200},
                                   "has_uint32": 0, "uinteger": 0})),
    lambda a: np.array([1, 2**40, 3]), lambda a: a.astype(">f8") if a.dtype.kind == "f" else a,
]
counts = {}
def outcome(data, kind):
    p = f"{tmp}/fuzz.npz"
    with open(p, "wb") as fh:
        fh.write(data)
    try:
        m = fb.MLP.load(p)
    except ValueError:
        counts[kind + " refused"] = counts.get(kind + " refused", 0) + 1
        return
    except Exception as exc:
        print(f"FAIL {kind}: {type(exc).__name__}: {exc}")
        sys.exit(1)
    out = m.forward(X)
    assert np.isfinite(out).all(), kind
    if m.optimizer is not None:
        assert all(np.isfinite(s).all() for s in m.optimizer.state_), kind
    counts[kind + " loaded"] = counts.get(kind + " loaded", 0) + 1
for i in range(n_cases):
    what = i % 4
    if what == 0:       # bit flips
        b = bytearray(raw)
        for _ in range(rng.integers(1, 4)):
            j = rng.integers(len(b))
            b[j] ^= 1 << rng.integers(8)
        outcome(bytes(b), "bitflip")
    elif what == 1:     # truncation or junk appended
        cut = int(rng.integers(len(raw)))
        outcome(raw[:cut] if rng.random() < 0.8 else raw + bytes(cut % 97), "truncation")
    elif what == 2:     # one member replaced by another dtype / shape / object
        arrays = dict(members)
        key = sorted(arrays)[rng.integers(len(arrays))]
        fn = REPLACEMENTS[rng.integers(len(REPLACEMENTS))]
        with np.errstate(all="ignore"):
            try:
                arrays[key] = fn(arrays[key])
            except (ValueError, TypeError):
                arrays[key] = np.array(0)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        outcome(buf.getvalue(), "member")
    else:               # a member's header declares a huge or odd size
        key = sorted(members)[rng.integers(len(members))]
        shape = [(2**40,), (2**31, 2**31), (-5,), (0,), (10**9, 0), (3, -3)][rng.integers(6)]
        descr = ["<f4", "<f8", "<i8", "<U100000000", "|O", "<c8"][rng.integers(6)]
        h = repr({"descr": descr, "fortran_order": bool(rng.integers(2)), "shape": shape})
        h = h.encode() + b" " * (64 - (10 + len(h) + 1) % 64) + b"\\n"
        member = b"\\x93NUMPY\\x01\\x00" + len(h).to_bytes(2, "little") + h + bytes(int(rng.integers(0, 64)))
        buf = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(raw)) as zin, zipfile.ZipFile(buf, "w") as zout:
            for info in zin.infolist():
                zout.writestr(info.filename, member if info.filename == key + ".npy" else zin.read(info))
        outcome(buf.getvalue(), "header")
print("COUNTS", json.dumps(counts, sort_keys=True))
"""


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_fuzzed_model_files_load_or_raise_valueerror(tmp_path, opt):
    """Randomly corrupted checkpoints: each either loads a model that predicts
    finite outputs (with a finite optimizer state) or raises ValueError, and
    never crashes the (child) process."""
    _, p, _ = _checkpoint(tmp_path, fb.SGD(lr=0.1, momentum=0.9) if opt == "sgd" else None)
    rc, out = _child(FUZZ, p, tmp_path, 100, 8 if opt == "sgd" else 7)
    assert rc == 0, out[-3000:]
    counts = json.loads(out.split("COUNTS", 1)[1])
    assert sum(counts.values()) == 100
    assert sum(v for k, v in counts.items() if k.endswith("refused")) >= 50, counts


# --- family 1: no public function crashes on mismatched buffers --------------------

MISMATCH = """
import numpy as np
import fastbp as fb

X = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
y = np.arange(8) % 3
failures = []

def expect_error(label, fn):
    try:
        fn()
    except (TypeError, ValueError, FloatingPointError) as exc:
        if "numba" in str(exc).lower():
            failures.append(f"{label}: {exc}")
        return
    failures.append(f"{label}: no error")

big, small = np.ones(1000, np.float32), np.ones(3, np.float32)
for cls in (fb.SGD, fb.Adam):
    kw = {"momentum": 0.9} if cls is fb.SGD else {}
    expect_error("grads shorter", lambda: cls(**kw).step(big.copy(), small))
    expect_error("grads longer", lambda: cls(**kw).step(small.copy(), big))
    expect_error("grads 2-D", lambda: cls(**kw).step(small.copy(), np.ones((3, 3))))
    def planted(state):
        o = cls(**kw)
        o.state_ = state
        o.step(np.ones(3, np.float32), np.ones(3, np.float32))
    expect_error("state read-only", lambda: planted((np.zeros(3, np.float32),
                 np.frombuffer(b"\\0" * 12, np.float32))))
    expect_error("state strided", lambda: planted((np.zeros(6, np.float32)[::2],
                 np.zeros(3, np.float32))))
    # a state of another size is replaced, not used
    o = cls(**kw)
    o.state_ = (np.zeros(1), np.zeros(1))
    p = np.ones(3, np.float32)
    o.step(p, np.ones(3, np.float32))
    assert o.state_[0].shape == (3,)

m = fb.MLP([5, 6, 3], seed=0)
opt = fb.Adam()
m.fit(X, y, epochs=1, optimizer=opt)
opt.state_ = (np.zeros(5, np.float32), np.zeros(5, np.float32))  # another size: reset
m.fit(X, y, epochs=1, optimizer=opt)
opt.state_ = (opt.state_[0], m.flat_params)                        # aliasing params
expect_error("state aliasing params", lambda: m.fit(X, y, epochs=1, optimizer=opt))
opt.reset()
opt.step_ = -4
opt.state_ = (np.zeros_like(m.flat_params), np.zeros_like(m.flat_params))
expect_error("negative step", lambda: m.train_on_batch(X, y, optimizer=opt))
for name, fn in [("dense_forward", lambda: fb.dense_forward(X, np.ones((4, 2)))),
                 ("dense_backward", lambda: fb.dense_backward(np.ones((8, 3)), X, np.ones((5, 2)),
                                                              np.ones((8, 2)))),
                 ("softmax_xent", lambda: fb.softmax_cross_entropy(np.ones((8, 3)), np.ones((7, 3)))),
                 ("half_squared_error", lambda: fb.half_squared_error(np.ones((8, 3)), np.ones((8, 2)))),
                 ("activation_grad", lambda: fb.activation_grad("x", "relu")),
                 ("predict", lambda: m.predict(np.ones((4, 6)))),
                 ("evaluate", lambda: m.evaluate(X, np.arange(7))),
                 ("train_on_batch", lambda: m.train_on_batch(X, np.ones((8, 4)))),
                 ("loss_and_grad", lambda: m.loss_and_grad(X, y, sample_weight=np.ones(9)))]:
    expect_error(name, fn)
print("FAILURES", failures)
"""


def test_no_public_function_crashes_on_mismatched_buffers():
    rc, out = _child(MISMATCH)
    assert rc == 0, out[-3000:]
    assert "FAILURES []" in out, out[-3000:]


# --- families 4 and 5: the command line ------------------------------------------

def _last_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastbp: error: "), err
    return err[0]


@pytest.mark.parametrize("option", ["--out", "--plot"])
def test_cli_checks_output_paths_before_training(tmp_path, capsys, option):
    target = tmp_path / "missing" / "x.npz"
    rc = main(["train", "--epochs", "50", option, str(target), "--no-progress"])
    assert rc == 2
    out = capsys.readouterr()
    assert "epoch" not in out.out  # nothing trained
    assert str(target) in out.err and ".tmp" not in out.err
    assert out.err.startswith("fastbp: error: ") and len(out.err.strip().splitlines()) == 1
    rc = main(["train", "--epochs", "50", option, str(tmp_path), "--no-progress"])
    assert rc == 2 and "is a directory" in _last_error_line(capsys)


def test_cli_predict_out_checked_first(tmp_path, capsys):
    rc = main(["predict", str(tmp_path / "no-model.npz"), "--data", "x.csv",
               "--out", str(tmp_path / "nodir" / "p.csv")])
    assert rc == 2
    assert "nodir" in _last_error_line(capsys)


def test_cli_memory_error_is_one_line(monkeypatch, capsys):
    from fastbp import cli

    def boom(args):
        raise MemoryError("out of memory")

    monkeypatch.setattr(cli, "_train", boom)  # build_parser binds the patched one
    assert main(["train"]) == 2
    assert "MemoryError: out of memory" in _last_error_line(capsys)
    monkeypatch.setattr(cli, "_train", lambda args: {}["missing"])
    assert main(["train"]) == 2
    assert "KeyError" in _last_error_line(capsys)


def test_cli_absurd_layers_one_line(capsys):
    rc = main(["train", "--layers", f"{10**7},{10**7}", "--no-progress"])
    assert rc == 2
    assert "widths" in _last_error_line(capsys)


def test_batch_of_zero_weights_contributes_nothing():
    """A batch whose rows all weigh 0 (the total is positive) is a step with
    a zero data gradient, not a 0/0 inside the kernel."""
    X, y = _data(n=8)
    sw = np.array([0, 0, 0, 0, 1, 1, 1, 1.0])
    m = fb.MLP([5, 4, 3], seed=0)
    before = m.flat_params.copy()
    m.fit(X, y, epochs=1, batch_size=4, shuffle=False, sample_weight=sw,
          optimizer=fb.SGD(lr=0.1))
    ref = fb.MLP([5, 4, 3], seed=0)
    ref.fit(X[4:], y[4:], epochs=1, batch_size=4, shuffle=False, optimizer=fb.SGD(lr=0.1))
    np.testing.assert_array_equal(m.flat_params, ref.flat_params)  # plain SGD: 0 step
    assert not np.array_equal(m.flat_params, before)
    loss, _ = m.loss_and_grad(X[:4], y[:4], sample_weight=np.zeros(4) + 1e-320)
    assert np.isfinite(loss)


def test_read_only_parameters_predict_and_train():
    """A model whose buffers are read-only (unpickled from a read-only memory
    map) predicts as is and trains on its own copies."""
    X, y = _data()
    m = fb.MLP([5, 4, 3], seed=0)
    want = m.predict_proba(X)
    m._params.flags.writeable = False
    m._grads.flags.writeable = False
    np.testing.assert_array_equal(m.predict_proba(X), want)
    m.fit(X, y, epochs=1, optimizer=fb.SGD(lr=0.1))
    assert m.flat_params.flags.writeable and not np.array_equal(m.predict_proba(X), want)


def test_structure_check_is_cached_but_sees_reassignment():
    import pickle

    X, y = _data()
    m = fb.MLP([5, 4, 3], seed=0)
    m.predict(X)
    assert not m.widths.flags.writeable and not m.codes.flags.writeable
    m2 = pickle.loads(pickle.dumps(m))
    assert "_checked" not in m2.__dict__
    np.testing.assert_array_equal(m2.predict(X), m.predict(X))
    m.widths = np.array([5, 40, 3])       # reassigned: checked again
    with pytest.raises(ValueError, match="no longer agree"):
        m.predict(X)
    opt = fb.SGD(lr=0.1)
    m2.fit(X, y, epochs=1, optimizer=opt)
    opt.lr = -1.0                          # changed after a checked fit
    with pytest.raises(ValueError, match="lr must be > 0"):
        m2.fit(X, y, epochs=1, optimizer=opt)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dtype=st.sampled_from([np.float32, np.float64]),
       kind=st.sampled_from(["sgd", "momentum", "nesterov", "adam"]),
       values=st.lists(st.tuples(WIDE, WIDE, WIDE, st.booleans()), min_size=1, max_size=40),
       lr=st.sampled_from([1e-3, 1.0, 1e30, 1e300]), first=st.booleans(),
       wd=st.sampled_from([0.0, 0.01]))
def test_fused_equals_check_then_update(dtype, kind, values, lr, first, wd):
    """fused_update (issue 16: one pass, new values into second buffers)
    returns check_update's status, never writes p, g or the state, and on
    success writes bit for bit what apply_update makes in place."""
    with np.errstate(all="ignore"):
        p = np.array([a for a, _, _, _ in values], dtype)
        g = np.array([b * (-1 if s else 1) for _, b, _, s in values], dtype)
        s1 = np.array([c for _, _, c, _ in values], dtype) * dtype(0.5)
        s2 = np.abs(s1)
    if kind == "adam":
        opt = fb.Adam(lr=lr, weight_decay=wd)
    else:
        opt = fb.SGD(lr=lr, momentum=0.0 if kind == "sgd" else 0.9,
                     nesterov=kind == "nesterov", weight_decay=wd)
    hp = opt.hyperparameters()
    step = 1 if first else 3
    copies = [a.copy() for a in (p, g, s1, s2)]
    want = k_opt.check_update(opt.kind, p, g, s1, s2, hp, step)
    pn, n1, n2 = (np.full_like(p, 7) for _ in range(3))
    with np.errstate(all="ignore"):
        got = k_opt.fused_update(opt.kind, p, g, s1, s2, hp, step, pn, n1, n2)
    assert got == want
    for a, c in zip((p, g, s1, s2), copies, strict=True):
        np.testing.assert_array_equal(a, c)  # read only
    if got == k_opt.UPDATE_OK:
        q, a1, a2 = p.copy(), s1.copy(), s2.copy()
        k_opt.apply_update(opt.kind, q, g, a1, a2, hp, step)
        np.testing.assert_array_equal(pn, q)
        if kind != "sgd":
            np.testing.assert_array_equal(n1, a1)
        if kind == "adam":
            np.testing.assert_array_equal(n2, a2)
        # adopt_update copies back exactly what the update writes
        r, b1, b2 = p.copy(), s1.copy(), s2.copy()
        k_opt.adopt_update(opt.kind, hp, pn, n1, n2, r, b1, b2)
        np.testing.assert_array_equal(r, q)
        np.testing.assert_array_equal(b1, a1 if kind != "sgd" else s1)
        np.testing.assert_array_equal(b2, a2 if kind == "adam" else s2)
