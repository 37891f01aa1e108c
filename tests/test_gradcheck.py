"""Central finite-difference gradient checks (float64, eps 1e-6) of the layer
functions and of whole MLPs of depth 1-4, plus a float32 check against the
float64 analytic gradient.

The worst relative error per dtype is recorded and printed at the end of the
module (``pytest -s`` shows it); each check asserts its own bound.
"""

import numpy as np
import pytest
import reference as ref

import fastbp as fb

EPS = 1e-6
BOUND = {"float64": 1e-6, "float32": 1e-4}
WORST = {}


def record(dtype, what, err):
    key = np.dtype(dtype).name
    if err > WORST.get(key, (0.0, ""))[0]:
        WORST[key] = (err, what)
    assert err < BOUND[key], f"{what}: relative error {err:.3g} >= {BOUND[key]:g}"


@pytest.fixture(scope="module", autouse=True)
def report_worst():
    yield
    for key, (err, what) in sorted(WORST.items()):
        print(f"\n[gradcheck] worst relative error {key}: {err:.3g} ({what})")


def rel_err(analytic, numeric):
    """Norm-wise relative error max|a - n| / max(max|n|, 1e-8)."""
    a = np.asarray(analytic, dtype=np.float64).ravel()
    n = np.asarray(numeric, dtype=np.float64).ravel()
    return float(np.max(np.abs(a - n)) / max(np.max(np.abs(n)), 1e-8))


def numeric_grad(f, x):
    """Central differences of the scalar f() with respect to x (in place)."""
    g = np.zeros(x.shape)
    flat = x.reshape(-1)
    gf = g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + EPS
        fp = f()
        flat[i] = old - EPS
        fm = f()
        flat[i] = old
        gf[i] = (fp - fm) / (2 * EPS)
    return g


@pytest.mark.parametrize("name", ref.ACTIVATIONS)
@pytest.mark.parametrize("shape", [(1, 3, 2), (4, 5, 3), (6, 7, 1)])
def test_dense_layer_gradcheck(name, shape):
    n, d_in, d_out = shape
    rng = np.random.default_rng(d_in * 10 + d_out)
    x = rng.standard_normal((n, d_in))
    W = rng.standard_normal((d_in, d_out)) / np.sqrt(d_in)
    b = rng.standard_normal(d_out) * 0.5
    C = rng.standard_normal((n, d_out))  # loss = sum(C * h)

    def loss():
        return float(np.sum(C * fb.dense_forward(x, W, b, name)))

    if name == "relu":  # keep pre-activations away from the kink
        a = x @ W + b
        assert np.abs(a).min() > 10 * EPS
    h = fb.dense_forward(x, W, b, name)
    dx, dW, db = fb.dense_backward(C, x, W, h, name)
    for what, analytic, var in (("dx", dx, x), ("dW", dW, W), ("db", db, b)):
        record(np.float64, f"dense {name} {shape} {what}", rel_err(analytic, numeric_grad(loss, var)))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("soft", [False, True])
def test_softmax_xent_gradcheck(soft, weighted):
    rng = np.random.default_rng(3)
    n, c = 6, 5
    z = rng.standard_normal((n, c)) * 2
    if soft:
        y = rng.random((n, c))
        y /= y.sum(1, keepdims=True)
    else:
        y = rng.integers(0, c, n)
    sw = rng.random(n) + 0.2 if weighted else None
    loss, dz = fb.softmax_cross_entropy(z, y, sample_weight=sw)
    num = numeric_grad(lambda: float(fb.softmax_cross_entropy(z, y, sample_weight=sw)[0]), z)
    record(np.float64, f"xent soft={soft} weighted={weighted}", rel_err(dz, num))
    np.testing.assert_allclose(loss, (ref.xent_targets if soft else ref.xent_labels)(z, y, sw)[0],
                               rtol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(5,), (4, 3)])
def test_half_squared_error_gradcheck(shape, weighted):
    rng = np.random.default_rng(4)
    p = rng.standard_normal(shape)
    t = rng.standard_normal(shape)
    sw = rng.random(shape[0]) + 0.2 if weighted else None
    _, g = fb.half_squared_error(p, t, sample_weight=sw)
    num = numeric_grad(lambda: float(fb.half_squared_error(p, t, sample_weight=sw)[0]), p)
    record(np.float64, f"half_squared_error {shape} weighted={weighted}", rel_err(g, num))


WIDTHS = [[5, 2], [5, 4, 3], [6, 5, 4, 3], [7, 6, 5, 4, 3]]


def make_problem(widths, output, target, seed=0, n=8):
    rng = np.random.default_rng(seed + len(widths))
    X = rng.standard_normal((n, widths[0]))
    if output == "identity":
        y = rng.standard_normal((n, widths[-1]))
    elif target == "labels":
        y = rng.integers(0, widths[-1], n)
    else:
        y = rng.random((n, widths[-1]))
        y /= y.sum(1, keepdims=True)
    return X, y


def flat_grad(grads):
    return np.concatenate([np.concatenate([dW.ravel(), db]) for dW, db in grads])


CASES = [(w, act, out, tgt) for w in WIDTHS for act in ref.ACTIVATIONS
         for out, tgt in (("softmax", "labels"), ("softmax", "soft"), ("identity", None))]


@pytest.mark.parametrize("alpha", [0.0, 0.3])
@pytest.mark.parametrize("widths,act,output,target", CASES,
                         ids=[f"{len(c[0]) - 1}L-{c[1]}-{c[2]}-{c[3]}" for c in CASES])
def test_mlp_gradcheck(widths, act, output, target, alpha):
    X, y = make_problem(widths, output, target)
    model = fb.MLP(widths, activation=act, output=output, dtype="float64", seed=7, alpha=alpha)
    # non-zero biases so the check covers them fully
    model.flat_params[:] += np.random.default_rng(1).standard_normal(model.n_params) * 0.1
    p = model.flat_params
    assert np.shares_memory(p, model.params[0][0])  # the model's own buffer
    loss, grads = model.loss_and_grad(X, y)
    g = flat_grad(grads)
    # against the naive reference (loss and gradient)
    rl, rg = ref.mlp_loss_grad(p, widths, act, output, X, y, alpha)
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    np.testing.assert_allclose(g, rg, rtol=1e-10, atol=1e-12 * np.abs(rg).max())
    # against central differences of the model's own loss
    num = numeric_grad(lambda: model.loss_and_grad(X, y)[0], p)
    record(np.float64, f"MLP {widths} {act} {output} {target} alpha={alpha}", rel_err(g, num))
    assert rel_err(g, num) < 1e-6


@pytest.mark.parametrize("widths", WIDTHS[1:])
def test_mlp_gradcheck_sample_weight(widths):
    X, y = make_problem(widths, "softmax", "labels")
    sw = np.random.default_rng(2).random(X.shape[0]) + 0.2
    model = fb.MLP(widths, activation="tanh", dtype="float64", seed=3, alpha=0.1)
    loss, grads = model.loss_and_grad(X, y, sample_weight=sw)
    g = flat_grad(grads)
    rl, rg = ref.mlp_loss_grad(model.flat_params, widths, "tanh", "softmax", X, y, 0.1, sw)
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    np.testing.assert_allclose(g, rg, rtol=1e-10, atol=1e-12 * np.abs(rg).max())
    num = numeric_grad(lambda: model.loss_and_grad(X, y, sample_weight=sw)[0],
                       model.flat_params)
    record(np.float64, f"MLP {widths} weighted", rel_err(g, num))


@pytest.mark.parametrize("act", ref.ACTIVATIONS)
@pytest.mark.parametrize("output,target", [("softmax", "labels"), ("softmax", "soft"),
                                           ("identity", None)])
def test_mlp_float32_gradient(act, output, target):
    """float32 analytic gradient vs the float64 one for the same parameters
    (cast): agreement to ~1e-5 relative, float32's precision over these sums."""
    widths = [6, 5, 4, 3]
    X, y = make_problem(widths, output, target, n=16)
    X = X.astype(np.float32).astype(np.float64)  # the same inputs for both
    if target != "labels":
        y = y.astype(np.float32).astype(np.float64)
    m64 = fb.MLP(widths, activation=act, output=output, dtype="float64", seed=5, alpha=0.1)
    m32 = fb.MLP(widths, activation=act, output=output, dtype="float32", seed=5, alpha=0.1)
    m32.flat_params[:] = m64.flat_params  # same parameters, cast to float32
    m64.flat_params[:] = m32.flat_params
    l64, g64 = m64.loss_and_grad(X, y)
    l32, g32 = m32.loss_and_grad(X.astype(np.float32),
                                 y.astype(np.float32) if target != "labels" else y)
    assert all(a.dtype == np.float32 for pair in g32 for a in pair)
    np.testing.assert_allclose(l32, l64, rtol=1e-5)
    record(np.float32, f"MLP float32 {act} {output} {target}",
           rel_err(flat_grad(g32), flat_grad(g64)))
