"""fb.SGD / fb.Adam against the reference rules and against torch.optim,
and the "no float64 inside float32 paths" checks on the compiled kernels."""

import re
import warnings

import numba
import numpy as np
import pytest
import reference as ref

import fastbp as fb
from fastbp._kernels import activations as k_act
from fastbp._kernels import config as k_config
from fastbp._kernels import losses as k_loss
from fastbp._kernels import optim as k_opt

SGD_SETTINGS = [
    {"lr": 0.1},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    {"lr": 0.1, "weight_decay": 0.01},
    {"lr": 0.03, "momentum": 0.8, "weight_decay": 0.05},
    {"lr": 0.03, "momentum": 0.8, "nesterov": True, "weight_decay": 0.05},
    {"lr": 0.03, "momentum": 0.5, "dampening": 0.3},
]
ADAM_SETTINGS = [
    {},
    {"lr": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
    {"lr": 0.01, "weight_decay": 0.1},
]
STEPS = 6


def trajectory(opt, p0, grads_fn, dtype):
    p = p0.astype(dtype).copy()
    out = []
    for t in range(STEPS):
        g = grads_fn(p.astype(np.float64), t).astype(dtype)
        opt.step(p, g)
        assert p.dtype == dtype
        out.append(p.astype(np.float64).copy())
    return out


def grads_fn(p, t):
    # a gradient that depends on the parameters (a quadratic bowl) plus noise
    rng = np.random.default_rng(t)
    return 0.7 * p + rng.standard_normal(p.size)


def ref_trajectory(ropt, p0, dtype):
    p = p0.astype(dtype).astype(np.float64)
    out = []
    for t in range(STEPS):
        g = grads_fn(p, t).astype(dtype).astype(np.float64)
        p = ropt.step(p, g)
        out.append(p.copy())
    return out


P0 = np.random.default_rng(42).standard_normal(37)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", SGD_SETTINGS, ids=lambda kw: ",".join(kw))
def test_sgd_matches_reference(kw, dtype):
    got = trajectory(fb.SGD(**kw), P0, grads_fn, dtype)
    want = ref_trajectory(ref.RefSGD(**kw), P0, dtype)
    rtol = 1e-12 if dtype == np.float64 else 1e-5  # float32: a few ulps per step
    for t, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(),
                                   err_msg=f"step {t + 1}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", ADAM_SETTINGS, ids=lambda kw: ",".join(kw) or "default")
def test_adam_matches_reference(kw, dtype):
    got = trajectory(fb.Adam(**kw), P0, grads_fn, dtype)
    want = ref_trajectory(ref.RefAdam(**kw), P0, dtype)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for t, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(),
                                   err_msg=f"step {t + 1}")


def test_reference_is_not_trivial():
    """The reference trajectories move and differ between settings, so the
    comparisons above can fail."""
    a = ref_trajectory(ref.RefSGD(lr=0.05, momentum=0.9), P0, np.float64)[-1]
    b = ref_trajectory(ref.RefSGD(lr=0.05, momentum=0.9, nesterov=True), P0, np.float64)[-1]
    assert np.abs(a - b).max() > 1e-3 and np.abs(a - P0).max() > 1e-2


@pytest.mark.parametrize("kind,kw", [
    ("sgd", s) for s in SGD_SETTINGS] + [("adam", s) for s in ADAM_SETTINGS])
def test_matches_torch(kind, kw):
    torch = pytest.importorskip("torch")
    p = torch.tensor(P0.copy(), dtype=torch.float64, requires_grad=True)
    if kind == "sgd":
        topt = torch.optim.SGD([p], **kw)
        opt = fb.SGD(**kw)
    else:
        tkw = {"lr": kw.get("lr", 1e-3), "betas": (kw.get("beta1", 0.9), kw.get("beta2", 0.999)),
               "eps": kw.get("eps", 1e-8), "weight_decay": kw.get("weight_decay", 0.0)}
        topt = torch.optim.Adam([p], **tkw)
        opt = fb.Adam(**kw)
    mine = P0.copy()
    for t in range(STEPS):
        g = grads_fn(mine, t)
        p.grad = torch.tensor(grads_fn(p.detach().numpy().copy(), t), dtype=torch.float64)
        topt.step()
        opt.step(mine, g)
        np.testing.assert_allclose(mine, p.detach().numpy(), rtol=1e-6, atol=1e-9,
                                   err_msg=f"step {t + 1}")


def test_optimizer_state_continues():
    """Two step() calls equal one reference trajectory of two steps; reset()
    starts over."""
    opt = fb.SGD(lr=0.1, momentum=0.9)
    p = P0.copy()
    opt.step(p, np.ones_like(p))
    opt.step(p, np.ones_like(p))
    r = ref.RefSGD(lr=0.1, momentum=0.9)
    want = r.step(r.step(P0, np.ones_like(P0)), np.ones_like(P0))
    np.testing.assert_allclose(p, want, rtol=1e-14)
    opt.reset()
    q = P0.copy()
    opt.step(q, np.ones_like(q))
    np.testing.assert_allclose(q, P0 - 0.1, rtol=1e-14)



@pytest.mark.parametrize("adam", [False, True])
def test_a_refused_step_changes_nothing_and_is_not_counted(adam):
    """Optimizer.step checks and updates in one compiled call
    (optim.checked_update): a refused update leaves params, state and
    step_ as they were, and the next good step is the one a run without
    the refused one makes."""
    opt = fb.Adam(lr=0.01) if adam else fb.SGD(lr=0.1, momentum=0.9)
    p = P0.copy()
    opt.step(p, np.ones_like(p))
    before = (p.copy(), opt.state_[0].copy(), opt.state_[1].copy(), opt.step_)
    bad = np.ones_like(p)
    bad[3] = np.inf
    with pytest.raises(ValueError, match="grads must be finite"):
        opt.step(p, bad)
    huge = np.full_like(p, np.finfo(p.dtype).max)  # Adam: v overflows
    if not adam:
        opt.lr = 1e300  # SGD: lr * v overflows
    with pytest.raises(FloatingPointError, match="unchanged"):
        opt.step(p, huge)
    opt.lr = 0.01 if adam else 0.1
    np.testing.assert_array_equal(p, before[0])
    np.testing.assert_array_equal(opt.state_[0], before[1])
    np.testing.assert_array_equal(opt.state_[1], before[2])
    assert opt.step_ == before[3] == 1
    opt.step(p, np.ones_like(p))
    other = fb.Adam(lr=0.01) if adam else fb.SGD(lr=0.1, momentum=0.9)
    q = P0.copy()
    other.step(q, np.ones_like(q))
    other.step(q, np.ones_like(q))
    np.testing.assert_array_equal(p, q)
    assert opt.step_ == other.step_ == 2

# -- no float64 inside float32 paths ---------------------------------------------
F32 = np.float32
HOT_KERNELS = {
    "activations.bias_activation": (
        k_act.bias_activation, lambda: (np.ones((3, 5), F32), np.ones(5, F32), 2)),
    "activations.delta_in_place": (
        k_act.delta_in_place,
        lambda: (np.ones((3, 5), F32), np.ones((3, 5), F32), 3, np.ones(5, F32))),
    "losses.softmax_xent_labels": (
        k_loss.softmax_xent_labels,
        lambda: (np.ones((3, 4), F32), np.zeros(3, np.int64), np.ones(3, F32),
                 np.ones((3, 4), F32))),
    "losses.softmax_xent_targets": (
        k_loss.softmax_xent_targets,
        lambda: (np.ones((3, 4), F32), np.ones((3, 4), F32), np.ones(3, F32),
                 np.ones((3, 4), F32))),
    "losses.half_squared_error": (
        k_loss.half_squared_error,
        lambda: (np.ones((3, 4), F32), np.ones((3, 4), F32), np.ones(3, F32),
                 np.ones((3, 4), F32))),
    "optim.sgd_update": (
        k_opt.sgd_update,
        lambda: (np.ones(9, F32), np.ones(9, F32), np.ones(9, F32), 0.1, 0.9, 0.0, 0.01, True,
                 False)),
    "optim.adam_update": (
        k_opt.adam_update,
        lambda: (np.ones(9, F32), np.ones(9, F32), np.ones(9, F32), np.ones(9, F32), 3, 0.1,
                 0.9, 0.999, 1e-8, 0.01)),
    "optim.sgd_check": (
        k_opt.sgd_check,
        lambda: (np.ones(9, F32), np.ones(9, F32), np.ones(9, F32), 0.1, 0.9, 0.0, 0.01, True,
                 False)),
    "optim.adam_check": (
        k_opt.adam_check,
        lambda: (np.ones(9, F32), np.ones(9, F32), np.ones(9, F32), np.ones(9, F32), 3, 0.1,
                 0.9, 0.999, 1e-8, 0.01)),
}
# Scalar hyper-parameters of the optimizer kernels arrive as float64 and are
# cast to float32 once before the loop (fastbp/_kernels/optim.py says so):
# those few double operations are allowed there, nothing per element.
SCALAR_PREP = {"optim.sgd_update", "optim.adam_update", "optim.sgd_check", "optim.adam_check"}
_DOUBLE_OP = re.compile(r"= (?:fadd|fsub|fmul|fdiv|frem)\b[^\n]*?\bdouble\b"
                        r"|call [^\n]*double @llvm\.(?:exp|log|sqrt|tanh|pow)"
                        r"|call [^\n]*double @(?:exp|log|tanh|sqrt|pow)\b")


def _fresh_ir(func, args):
    """LLVM IR of the float32 specialisation, compiled afresh (the cached
    dispatchers cannot be inspected)."""
    fresh = numba.njit(fastmath=k_config.FASTMATH, cache=False)(func.py_func)
    fresh(*args)
    (sig,) = fresh.signatures
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ir = fresh.inspect_llvm(sig)
    # keep the compiled function itself; drop the CPython wrapper (boxing a
    # float32 result into a Python float widens it, by design) and helpers
    kept = [m.group(0) for m in re.finditer(r"^define [^\n]*?@(\S+?)\(.*?^}", ir,
                                            flags=re.MULTILINE | re.DOTALL)
            if "cpython" not in m.group(1) and not m.group(1).startswith("cfunc.")
            and "NRT_" not in m.group(1)]
    assert kept, "no kernel body found in the IR"
    return sig, "\n".join(kept)


@pytest.mark.parametrize("name", sorted(HOT_KERNELS))
def test_float32_kernels_have_no_float64(name):
    func, make = HOT_KERNELS[name]
    args = make()
    func(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
    # the shipped dispatcher's float32 signature has no float64 array in it
    sigs32 = [s for s in func.signatures if any(
        isinstance(t, numba.types.Array) and t.dtype == numba.float32 for t in s)]
    assert sigs32
    for s in sigs32:
        assert not any(isinstance(t, numba.types.Array) and t.dtype == numba.float64
                       for t in s), s
    _, ir = _fresh_ir(func, args)
    # no float32 value is ever widened to double ...
    widen = re.findall(r"fpext float[^\n]*to double", ir)
    assert not widen, f"{name}: float32 promoted to double: {widen[:3]}"
    # ... and no double arithmetic happens, except the scalar preparation of the
    # optimizer hyper-parameters (outside the loop, a bounded number of ops)
    ops = _DOUBLE_OP.findall(ir)
    if name in SCALAR_PREP:
        # double work there can only come from the float64 scalars (float32
        # data would need the fpext checked above); none of it is vectorised
        # per element
        assert not re.search(r"<\d+ x double>", ir), f"{name}: vector double arithmetic"
    else:
        assert not ops, f"{name}: double arithmetic in the float32 path: {ops[:5]}"
