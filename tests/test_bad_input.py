"""Bad input gets a clear ValueError or TypeError at every public entry point.

One table: (callable, keyword arguments, exception type, regex that must
appear in the message).  The regex names the argument and, where it matters,
what was expected or what came.  No case may reach a compiled kernel with
bad data, so none may fail with a Numba typing error, a segfault or an
IndexError from deep inside.

Cases marked xfail(strict=True) document validation that network.py has
still to do; when it is added the mark must go.
"""

import re
import warnings

import numpy as np
import pytest

import fastbp as fb

RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 3))
Y = np.array([0, 1, 0, 1])
W = RNG.standard_normal((3, 2))
B = np.zeros(2)
H = np.tanh(X @ W)
Z = RNG.standard_normal((4, 2))


class Lazy:
    """A keyword argument built at test time from pytest's tmp_path."""

    def __init__(self, make):
        self.make = make


def _file(name, data):
    def make(tmp_path):
        p = tmp_path / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return p

    return Lazy(make)


def _npz(name, **arrays):
    def make(tmp_path):
        p = tmp_path / name
        np.savez(p, **arrays)
        return p

    return Lazy(make)


def _npy(name, array):
    def make(tmp_path):
        p = tmp_path / name
        np.save(p, array)
        return p

    return Lazy(make)


MISSING = Lazy(lambda tmp_path: tmp_path / "does-not-exist.npz")
DIRECTORY = Lazy(lambda tmp_path: tmp_path)
RANDOM_BYTES = _file("junk.npz", bytes(np.random.default_rng(1).integers(0, 256, 300,
                                                                          dtype=np.uint8)))


def clf(**kw):
    return fb.MLP([3, 4, 2], seed=0, **kw)


def reg():
    return fb.MLP([3, 4, 1], output="identity", seed=0)


def method(name, make=clf):
    """A callable that builds a fresh model and calls its method ``name``."""

    def call(**kw):
        return getattr(make(), name)(**kw)

    call.__name__ = name
    call.__qualname__ = f"{'MLP' if make is clf else 'MLP-regressor'}.{name}"
    return call


fit = method("fit")
fit_reg = method("fit", reg)
predict = method("predict")
predict_proba = method("predict_proba")
predict_proba_reg = method("predict_proba", reg)
evaluate = method("evaluate")
score = method("score")
score_reg = method("score", reg)
loss_and_grad = method("loss_and_grad")
train_on_batch = method("train_on_batch")

TV = (TypeError, ValueError)
def with_nan(a, where=(0, 0)):
    a = np.array(a, dtype=np.float64)
    a[where] = np.nan
    return a


def with_inf(a, where=(0, 0)):
    a = np.array(a, dtype=np.float64)
    a[where] = np.inf
    return a


df, db_, sce, hse = fb.dense_forward, fb.dense_backward, fb.softmax_cross_entropy, \
    fb.half_squared_error
act, actg = fb.activation, fb.activation_grad

CASES = [
    # --- dense_forward: rank, shape, dims --------------------------------
    (df, {"x": np.ones(3), "W": W}, ValueError, r"x must be 2-D; got 1-D"),
    (df, {"x": np.ones((2, 2, 3)), "W": W}, ValueError, r"x must be 2-D; got 3-D"),
    (df, {"x": X, "W": np.ones(3)}, ValueError, r"W must be 2-D"),
    (df, {"x": X, "W": np.ones((4, 2))}, ValueError, r"W must have shape \(3, d_out\)"),
    (df, {"x": X, "W": W, "b": np.ones(3)}, ValueError, r"b must have shape \(2,\)"),
    (df, {"x": X, "W": W, "b": np.ones((1, 2))}, ValueError, r"b must be 1-D"),
    (df, {"x": np.ones((0, 3)), "W": W}, ValueError, r"x is empty"),
    (df, {"x": X, "W": np.ones((3, 0))}, ValueError, r"W must have at least one column"),
    (df, {"x": 5.0, "W": W}, ValueError, r"x must be 2-D; got 0-D"),
    # --- dense_forward: dtypes -------------------------------------------
    (df, {"x": X.astype(complex), "W": W}, TypeError, r"x must hold real numbers.*complex"),
    (df, {"x": np.full((4, 3), "a"), "W": W}, TypeError, r"x must hold real numbers.*strings"),
    (df, {"x": np.full((4, 3), b"a"), "W": W}, TypeError, r"x must hold real.*bytes"),
    (df, {"x": X.astype(object), "W": W}, TypeError, r"x must hold real.*Python objects"),
    (df, {"x": np.zeros((4, 3), "datetime64[s]"), "W": W}, TypeError, r"x .*datetimes"),
    (df, {"x": X, "W": np.zeros((3, 2), "timedelta64[s]")}, TypeError, r"W .*timedeltas"),
    (df, {"x": np.zeros((4, 3), "i4,f4"), "W": W}, TypeError, r"x .*structured"),
    (df, {"x": X.astype(np.longdouble), "W": W}, TypeError, r"x has unsupported dtype"),
    (df, {"x": None, "W": W}, TypeError, r"x must be an array of real numbers; got None"),
    (df, {"x": X, "W": "abc"}, TypeError, r"W must be an array of real numbers; got str"),
    (df, {"x": [[1, 2, 3], [4, 5]], "W": W}, TypeError, r"x must be an array"),
    (df, {"x": X, "W": W, "b": [1j, 2j]}, TypeError, r"b must hold real numbers"),
    # --- dense_forward: values, activation names ---------------------------
    (df, {"x": with_nan(X), "W": W}, ValueError, r"x must be finite; got nan at index \(0, 0\)"),
    (df, {"x": X, "W": with_inf(W, (2, 1))}, ValueError, r"W must be finite; got inf at index \(2, 1\)"),
    (df, {"x": X, "W": W, "b": with_nan(B, 1)}, ValueError, r"b must be finite; got nan at index 1"),
    (df, {"x": X, "W": W, "activation": "softplus"}, ValueError, r"unknown activation 'softplus'; expected one of"),
    (df, {"x": X, "W": W, "activation": None}, TypeError, r"activation must be an activation name.*got None"),
    (df, {"x": X, "W": W, "activation": 1}, TypeError, r"activation must be an activation name.*int"),
    # --- dense_backward ---------------------------------------------------
    (db_, {"dh": np.ones((4, 3)), "x": X, "W": W, "h": H, "activation": "tanh"}, ValueError, r"dh must have shape \(4, 2\)"),
    (db_, {"dh": np.ones(8), "x": X, "W": W, "h": H, "activation": "tanh"}, ValueError, r"dh must be 2-D"),
    (db_, {"dh": H, "x": X, "W": W, "activation": "relu"}, ValueError, r"h \(the forward output\) is required"),
    (db_, {"dh": H, "x": X, "W": W, "h": H[:3], "activation": "tanh"}, ValueError, r"h must have shape \(4, 2\)"),
    (db_, {"dh": with_nan(H), "x": X, "W": W, "h": H, "activation": "tanh"}, ValueError, r"dh must be finite"),
    (db_, {"dh": H, "x": X, "W": W, "h": with_inf(H), "activation": "tanh"}, ValueError, r"h must be finite"),
    (db_, {"dh": H, "x": X, "W": W, "h": H.astype(complex), "activation": "tanh"}, TypeError, r"h must hold real numbers"),
    (db_, {"dh": H, "x": X, "W": np.ones((2, 2)), "h": H}, ValueError, r"W must have shape \(3, d_out\)"),
    (db_, {"dh": H, "x": X, "W": W, "h": H, "activation": "gelu"}, ValueError, r"unknown activation 'gelu'"),
    (db_, {"dh": H[:0], "x": X[:0], "W": W, "h": H[:0]}, ValueError, r"x is empty"),
    (db_, {"dh": "dh", "x": X, "W": W}, TypeError, r"dh must be an array"),
    # --- softmax_cross_entropy -------------------------------------------
    (sce, {"logits": np.ones(3), "y": [0]}, ValueError, r"logits must be 2-D"),
    (sce, {"logits": np.ones((0, 3)), "y": np.zeros(0, int)}, ValueError, r"logits is empty"),
    (sce, {"logits": with_nan(Z), "y": Y}, ValueError, r"logits must be finite; got nan"),
    (sce, {"logits": with_inf(Z, (3, 1)), "y": Y}, ValueError, r"logits must be finite; got inf at index \(3, 1\)"),
    (sce, {"logits": Z.astype(complex), "y": Y}, TypeError, r"logits must hold real numbers.*complex"),
    (sce, {"logits": Z, "y": [0, 1, 2, 0]}, ValueError, r"y must be class labels in \[0, 1\] for 2 classes; got values from 0 to 2"),
    (sce, {"logits": Z, "y": [0, -1, 1, 0]}, ValueError, r"y must be class labels in \[0, 1\].*from -1"),
    (sce, {"logits": Z, "y": [0.0, 0.5, 1.0, 0.0]}, ValueError, r"y must hold integer class labels; got 0.5 at index 1"),
    (sce, {"logits": Z, "y": [0.0, np.nan, 1.0, 0.0]}, ValueError, r"y must hold integer class labels; got nan"),
    (sce, {"logits": Z, "y": np.array([True, False, True, False])}, TypeError, r"y must hold integer class labels; got dtype bool"),
    (sce, {"logits": Z, "y": [0, 1, 0]}, ValueError, r"y must have one label per row: expected 4, got 3"),
    (sce, {"logits": Z, "y": ["a", "b", "a", "b"]}, TypeError, r"y must hold real numbers.*strings"),
    (sce, {"logits": Z, "y": np.zeros((4, 2, 1))}, ValueError, r"y must be 1-D integer labels \(n,\) or 2-D target rows"),
    (sce, {"logits": Z, "y": np.ones((4, 3)) / 3}, ValueError, r"y as target rows must have the shape of logits \(4, 2\)"),
    (sce, {"logits": Z, "y": np.array([[1.5, -0.5]] * 4)}, ValueError, r"y as target rows must be non-negative"),
    (sce, {"logits": Z, "y": with_nan(np.eye(2)[Y])}, ValueError, r"y must be finite"),
    (sce, {"logits": Z, "y": Y, "sample_weight": [1, -1, 1, 1]}, ValueError, r"sample_weight must be non-negative"),
    (sce, {"logits": Z, "y": Y, "sample_weight": [1, 1]}, ValueError, r"sample_weight must have shape \(4,\)"),
    (sce, {"logits": Z, "y": Y, "sample_weight": np.zeros(4)}, ValueError, r"sample_weight .*positive sum"),
    (sce, {"logits": Z, "y": Y, "sample_weight": with_nan(np.ones(4), 2)}, ValueError, r"sample_weight must be finite"),
    # --- half_squared_error -----------------------------------------------
    (hse, {"y_pred": Z, "y_true": Z[:, :1]}, ValueError, r"y_true must have the shape of y_pred \(4, 2\)"),
    (hse, {"y_pred": np.ones((2, 2, 2)), "y_true": np.ones((2, 2, 2))}, ValueError, r"y_pred must be 1-D \(n,\) or 2-D"),
    (hse, {"y_pred": np.ones(0), "y_true": np.ones(0)}, ValueError, r"y_pred is empty"),
    (hse, {"y_pred": np.ones((3, 0)), "y_true": np.ones((3, 0))}, ValueError, r"y_pred must have at least one column"),
    (hse, {"y_pred": Z, "y_true": with_nan(Z)}, ValueError, r"y_true must be finite"),
    (hse, {"y_pred": Z.astype(complex), "y_true": Z}, TypeError, r"y_pred must hold real numbers"),
    # --- softmax, activation, activation_grad -----------------------------
    (fb.softmax, {"logits": np.ones(3)}, ValueError, r"logits must be 2-D; got 1-D"),
    (fb.softmax, {"logits": [["a"]]}, TypeError, r"logits must hold real numbers"),
    (act, {"a": X, "name": "swish"}, ValueError, r"unknown name 'swish'; expected one of"),
    (act, {"a": X, "name": None}, TypeError, r"name must be an activation name"),
    (act, {"a": "abc", "name": "relu"}, TypeError, r"a must be an array of real numbers; got str"),
    (act, {"a": X.astype(complex), "name": "tanh"}, TypeError, r"a must hold real numbers.*complex"),
    (act, {"a": X.astype(np.float128), "name": "tanh"}, TypeError, r"a has unsupported dtype"),
    (actg, {"h": X.astype(complex), "name": "tanh"}, TypeError, r"h must hold real numbers"),
    (actg, {"h": X, "name": "softmax"}, ValueError, r"unknown name 'softmax'"),
    (actg, {"h": None, "name": "relu"}, TypeError, r"h must be an array.*None"),
    # --- MLP constructor ----------------------------------------------------
    (fb.MLP, {"widths": [3]}, ValueError, r"widths must list at least 2"),
    (fb.MLP, {"widths": [3, 0]}, ValueError, r"widths"),
    (fb.MLP, {"widths": [3, -2, 2]}, ValueError, r"widths"),
    (fb.MLP, {"widths": [3, 2.5]}, ValueError, r"widths"),
    (fb.MLP, {"widths": [3, True, 2]}, TV, r"widths"),
    (fb.MLP, {"widths": None}, TypeError, r"widths"),
    (fb.MLP, {"widths": 5}, TypeError, r"widths"),
    (fb.MLP, {"widths": ["a", 2]}, TypeError, r"widths"),
    (fb.MLP, {"widths": [3, float("nan")]}, TV, r"widths"),
    (fb.MLP, {"widths": [3, float("inf")]}, TV, r"widths"),
    (fb.MLP, {"widths": [3, 4, 2], "activation": "swish"}, ValueError, r"unknown activation 'swish'"),
    (fb.MLP, {"widths": [3, 4, 2], "activation": ["relu", "tanh"]}, ValueError, r"expected 1, got 2"),
    (fb.MLP, {"widths": [3, 4, 2], "activation": 5}, TypeError, r"activation"),
    (fb.MLP, {"widths": [3, 4, 2], "activation": [None]}, TypeError, r"activation must be an activation name"),
    (fb.MLP, {"widths": [3, 2], "output": "softplus"}, ValueError, r"output must be .*'softmax'.*'identity'.*'sigmoid'.*got 'softplus'"),
    (fb.MLP, {"widths": [3, 2], "output": None}, TV, r"output must be"),
    (fb.MLP, {"widths": [3, 2], "output": ["softmax"]}, TypeError, r"output must be"),
    (fb.MLP, {"widths": [3, 1], "output": "softmax"}, ValueError, r"at least 2 classes"),
    (fb.MLP, {"widths": [3, 2], "dtype": "int32"}, TypeError, r"dtype must be 'float32' or 'float64'; got int32"),
    (fb.MLP, {"widths": [3, 2], "dtype": "float16"}, TypeError, r"dtype must be 'float32' or 'float64'"),
    (fb.MLP, {"widths": [3, 2], "dtype": "banana"}, TypeError, r"dtype must be 'float32' or 'float64'; got 'banana'"),
    (fb.MLP, {"widths": [3, 2], "dtype": None}, TypeError, r"dtype must be"),
    (fb.MLP, {"widths": [3, 2], "seed": "abc"}, TypeError, r"seed must be"),
    (fb.MLP, {"widths": [3, 2], "seed": -1}, ValueError, r"seed must be"),
    (fb.MLP, {"widths": [3, 2], "seed": 1.5}, TypeError, r"seed must be"),
    (fb.MLP, {"widths": [3, 2], "alpha": -1.0}, ValueError, r"alpha must be >= 0"),
    (fb.MLP, {"widths": [3, 2], "alpha": True}, TypeError, r"alpha must be a real number; got bool"),
    (fb.MLP, {"widths": [3, 2], "alpha": float("nan")}, ValueError, r"alpha must be finite"),
    (fb.MLP, {"widths": [3, 2], "alpha": "0.1"}, TypeError, r"alpha must be a real number; got str"),
    # --- MLP.fit -----------------------------------------------------------
    (fit, {"X": np.ones((4, 5)), "y": Y}, ValueError, r"X must have 3 columns"),
    (fit, {"X": np.ones(3), "y": Y}, ValueError, r"X must be 2-D"),
    (fit, {"X": with_nan(X, (2, 2)), "y": Y}, ValueError, r"X must be finite; got nan at index \(2, 2\)"),
    (fit, {"X": np.ones((0, 3)), "y": Y[:0]}, ValueError, r"X is empty"),
    (fit, {"X": X.astype(str), "y": Y}, TypeError, r"X must hold real numbers.*strings"),
    (fit, {"X": np.full((4, 3), 1e300), "y": Y}, ValueError, r"X holds values too large for float32"),
    (fit, {"X": X, "y": [0, 1, 2, 0]}, ValueError, r"y must be class labels in \[0, 1\]"),
    (fit, {"X": X, "y": Y[:3]}, ValueError, r"y must have one label per row: expected 4, got 3"),
    (fit, {"X": X, "y": [0, 1.5, 0, 1]}, ValueError, r"y must hold integer class labels; got 1.5"),
    (fit, {"X": X, "y": np.ones((4, 3))}, ValueError, r"y as target rows must have shape \(4, 2\)"),
    (fit, {"X": X, "y": -np.eye(2)[Y]}, ValueError, r"y target rows must be non-negative"),
    (fit, {"X": X, "y": Y, "epochs": 0}, ValueError, r"epochs must be >= 1; got 0"),
    (fit, {"X": X, "y": Y, "epochs": 1.5}, TypeError, r"epochs must be an integer; got float"),
    (fit, {"X": X, "y": Y, "epochs": True}, TypeError, r"epochs must be an integer; got bool"),
    (fit, {"X": X, "y": Y, "batch_size": 0}, ValueError, r"batch_size must be >= 1; got 0"),
    (fit, {"X": X, "y": Y, "batch_size": -5}, ValueError, r"batch_size must be >= 1; got -5"),
    (fit, {"X": X, "y": Y, "batch_size": "8"}, TypeError, r"batch_size must be an integer; got str"),
    (fit, {"X": X, "y": Y, "optimizer": "rmsprop"}, ValueError, r"unknown optimizer 'rmsprop'"),
    (fit, {"X": X, "y": Y, "optimizer": 5}, TypeError, r"optimizer must be a name"),
    (fit, {"X": X, "y": Y, "validation_data": 5}, TypeError, r"validation_data must be a tuple"),
    (fit, {"X": X, "y": Y, "validation_data": (X, Y, Y)}, TypeError, r"validation_data must be a tuple"),
    (fit, {"X": X, "y": Y, "validation_data": (np.ones((4, 2)), Y)}, ValueError, r"validation_data\[0\] must have 3 columns"),
    (fit, {"X": X, "y": Y, "validation_data": (X, Y + 5)}, ValueError, r"validation_data\[1\] must be class labels"),
    (fit, {"X": X, "y": Y, "sample_weight": -np.ones(4)}, ValueError, r"sample_weight must be non-negative"),
    (fit, {"X": X, "y": Y, "sample_weight": np.ones(3)}, ValueError, r"sample_weight must have shape \(4,\)"),
    (fit, {"X": X, "y": Y, "shuffle": "yes"}, TypeError, r"shuffle must be True or False"),
    (fit, {"X": X, "y": Y, "progress": "no"}, TypeError, r"progress must be True or False"),
    (fit_reg, {"X": X, "y": np.ones((4, 2))}, ValueError, r"y must have shape \(4, 1\) or \(4,\)"),
    (fit_reg, {"X": X, "y": with_nan(np.ones(4), 1)}, ValueError, r"y must be finite"),
    (fit_reg, {"X": X, "y": np.ones(4, complex)}, TypeError, r"y must hold real numbers"),
    # --- predict, predict_proba, evaluate, score, loss_and_grad, train_on_batch
    (predict, {"X": np.ones((4, 2))}, ValueError, r"X must have 3 columns \(widths\[0\]\); got shape \(4, 2\)"),
    (predict, {"X": X.astype(complex)}, TypeError, r"X must hold real numbers.*complex"),
    (predict, {"X": [[1, 2, "x"]]}, TypeError, r"X must hold real numbers"),
    (predict, {"X": np.ones((0, 3))}, ValueError, r"X is empty"),
    (predict_proba, {"X": with_inf(X)}, ValueError, r"X must be finite; got inf"),
    (predict_proba_reg, {"X": X}, ValueError, r"predict_proba needs a softmax output"),
    (evaluate, {"X": X, "y": [0, 1, 0, 7]}, ValueError, r"y must be class labels in \[0, 1\]"),
    (evaluate, {"X": X, "y": Y, "sample_weight": [1, 2]}, ValueError, r"sample_weight must have shape \(4,\)"),
    (score, {"X": X, "y": Y[:2]}, ValueError, r"y must have one label per row"),
    (score_reg, {"X": X, "y": np.ones((4, 3))}, ValueError, r"y must have shape \(4, 1\)"),
    (loss_and_grad, {"X": X, "y": [0.5, 0, 1, 1]}, ValueError, r"y must hold integer class labels"),
    (loss_and_grad, {"X": X[:0], "y": Y[:0]}, ValueError, r"X is empty"),
    (train_on_batch, {"X": X, "y": Y, "optimizer": "lbfgs"}, ValueError, r"unknown optimizer 'lbfgs'"),
    (train_on_batch, {"X": X, "y": Y.astype(bool)}, TypeError, r"y must hold integer class labels; got dtype bool"),
    (train_on_batch, {"X": with_inf(X, (1, 1)), "y": Y}, ValueError, r"X must be finite"),
    # --- optimizers ----------------------------------------------------------
    (fb.SGD, {"lr": 0}, ValueError, r"lr must be > 0"),
    (fb.SGD, {"lr": -1}, ValueError, r"lr must be > 0.*got -1"),
    (fb.SGD, {"lr": "0.1"}, TypeError, r"lr must be a real number; got str"),
    (fb.SGD, {"lr": True}, TypeError, r"lr must be a real number; got bool"),
    (fb.SGD, {"lr": float("nan")}, ValueError, r"lr must be finite"),
    (fb.SGD, {"momentum": 1.5}, ValueError, r"momentum must be <= 1"),
    (fb.SGD, {"momentum": -0.1}, ValueError, r"momentum must be >= 0"),
    (fb.SGD, {"momentum": 0.9, "nesterov": 1}, TypeError, r"nesterov must be True or False"),
    (fb.SGD, {"nesterov": True}, ValueError, r"nesterov=True needs momentum > 0"),
    (fb.SGD, {"weight_decay": -1e-4}, ValueError, r"weight_decay must be >= 0"),
    (fb.SGD, {"dampening": 2.0}, ValueError, r"dampening must be <= 1"),
    (fb.Adam, {"beta1": 1.0}, ValueError, r"beta1 must be < 1"),
    (fb.Adam, {"beta2": -0.1}, ValueError, r"beta2 must be >= 0"),
    (fb.Adam, {"eps": 0.0}, ValueError, r"eps must be > 0"),
    (fb.Adam, {"lr": None}, TypeError, r"lr must be a real number; got NoneType"),
    (fb.Adam, {"weight_decay": float("inf")}, ValueError, r"weight_decay must be finite"),
    (fb.Adam, {"lr": [0.1]}, TypeError, r"lr must be a real number; got list"),
    # --- load_data -------------------------------------------------------------
    (fb.load_data, {"path": None}, TypeError, r"path must be a file path"),
    (fb.load_data, {"path": 3.5}, TypeError, r"path must be a file path"),
    (fb.load_data, {"path": MISSING}, FileNotFoundError, r"data file not found"),
    (fb.load_data, {"path": DIRECTORY}, ValueError, r"is a directory"),
    (fb.load_data, {"path": _file("d.txt", "1,2\n")}, ValueError, r"unsupported data file type '.txt'"),
    (fb.load_data, {"path": _file("d.csv", "1,2\n3,x\n")}, ValueError, r"cannot read .*d.csv as numeric CSV"),
    (fb.load_data, {"path": _file("d.csv", "1,2\n3,4,5\n")}, ValueError, r"cannot read .*d.csv as numeric CSV"),
    (fb.load_data, {"path": _file("d.csv", "a,b\n1,nan\n3,4\n")}, ValueError, r"y in .*d.csv must be finite.*nan at index 0"),
    (fb.load_data, {"path": _file("d.csv", "1,2\ninf,4\n")}, ValueError, r"X in .*d.csv must be finite.*inf at index \(1, 0\)"),
    (fb.load_data, {"path": _file("d.csv", "1\n2\n")}, ValueError, r"at least 2 columns"),
    (fb.load_data, {"path": _file("d.csv", "")}, ValueError, r"at least 2 columns"),
    (fb.load_data, {"path": _file("d.csv", b"\xff\xfe\x00,1\n")}, ValueError, r"cannot read"),
    (fb.load_data, {"path": _file("d.csv", "a,b\n1,2\n"), "target": "zz"}, ValueError, r"target column 'zz' not found.*columns: a, b"),
    (fb.load_data, {"path": _file("d.csv", "1,2\n3,4\n"), "target": 5}, ValueError, r"target column index 5 out of range"),
    (fb.load_data, {"path": _file("d.csv", "1,2\n3,4\n"), "target": True}, TypeError, r"target must be"),
    (fb.load_data, {"path": _npz("d.npz", X=X)}, ValueError, r"has no array 'y'"),
    (fb.load_data, {"path": _npz("d.npz", X=X, y=np.array(1))}, ValueError, r"y in .* must be 1-D"),
    (fb.load_data, {"path": _npz("d.npz", X=X, y=Y[:2])}, ValueError, r"X has 4 rows but y has 2"),
    (fb.load_data, {"path": _npz("d.npz", X=X.astype(complex), y=Y)}, TypeError, r"X must hold real numbers"),
    (fb.load_data, {"path": _npz("d.npz", X=with_nan(X), y=Y)}, ValueError, r"X in .* must be finite"),
    (fb.load_data, {"path": _npz("d.npz", X=np.ones(4), y=Y)}, ValueError, r"X in .* must be a non-empty 2-D array"),
    (fb.load_data, {"path": _file("d.npz", b"PK\x03\x04garbage")}, ValueError, r"cannot read .* as .npz"),
    (fb.load_data, {"path": RANDOM_BYTES}, ValueError, r"cannot read .* as .npz"),
    (fb.load_data, {"path": _npy("d.npy", np.ones(5))}, ValueError, r"must hold a 2-D table"),
    # --- MLP.load (more malformed files in test_files.py) -------------------
    (fb.MLP.load, {"path": None}, TypeError, r"path must be a file path"),
    (fb.MLP.load, {"path": MISSING}, FileNotFoundError, r"model file not found"),
    (fb.MLP.load, {"path": DIRECTORY}, ValueError, r"cannot load model .*directory"),
    (fb.MLP.load, {"path": RANDOM_BYTES}, ValueError, r"cannot load model .*not a readable .npz"),
    (fb.MLP.load, {"path": _npy("m.npy", np.ones(3))}, ValueError, r"cannot load model .*not a .npz archive"),
    (fb.MLP.load, {"path": _npz("m.npz", X=X, y=Y)}, ValueError, r"cannot load model .*not a fastbp model file"),
    # --- datasets helpers ------------------------------------------------------
    (fb.train_test_split, {"X": X, "y": Y, "test_size": 0}, ValueError, r"test_size must be > 0"),
    (fb.train_test_split, {"X": X, "y": Y, "test_size": 1.5}, ValueError, r"test_size must be < 1"),
    (fb.train_test_split, {"X": X, "y": Y, "test_size": "0.2"}, TypeError, r"test_size must be a real number"),
    (fb.train_test_split, {"X": X, "y": Y[:3]}, ValueError, r"X and y must have the same number of rows"),
    (fb.train_test_split, {"X": X, "y": Y, "seed": "x"}, TypeError, r"seed must be None or a non-negative integer"),
    (fb.train_test_split, {"X": X, "y": Y, "seed": -3}, ValueError, r"seed must be a non-negative integer"),
    (fb.train_test_split, {"X": 1.0, "y": 2.0}, ValueError, r"X and y must be arrays"),
    (fb.load_digits, {"dtype": "int64"}, TypeError, r"dtype must be 'float32' or 'float64'"),
    (fb.load_digits, {"scale": "yes"}, TypeError, r"scale must be True or False"),
]


# --- issue 8: reliability, round 2, by family ---------------------------------
P7 = np.linspace(-1, 1, 7)


def _read_only(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def _step(kind, state=None, step=None, **opt_kw):
    """A callable ``(params, grads)`` running ``kind(**opt_kw).step`` on copies,
    optionally with a state_ / step_ planted first."""

    def call(params, grads):
        opt = kind(**opt_kw)
        if state is not None:
            opt.state_ = state(params)
            opt.step_ = 0
        if step is not None:
            opt.state_ = (np.zeros_like(params), np.zeros_like(params))
            opt.step_ = step
        return opt.step(params, grads)

    call.__qualname__ = f"{kind.__name__}.step"
    return call


adam_step = _step(fb.Adam)
sgd_step = _step(fb.SGD, momentum=0.9)


def _fit_with(**fit_kw):
    def call(**kw):
        return clf().fit(X, Y, epochs=1, **fit_kw, **kw)

    call.__qualname__ = "MLP.fit"
    return call


def _from_torch_dict(**weights):
    def call():
        from fastbp import interop

        return interop.from_torch(weights)

    call.__qualname__ = "interop.from_torch"
    return call


HUGE_W = np.full(4, 1e308)


def _in_place(model, name, index, value):
    """``model.<name>[index] = value`` after the model was used once."""
    model.predict(X)
    getattr(model, name)[index] = value
    return model


def _tampered(what, call="predict", **attrs):
    """A callable that changes public attributes of a fresh model (or of its
    optimizer) and then calls ``call``: never a kernel reading out of bounds."""

    def run():
        m = clf()
        opt = fb.SGD(lr=0.1, momentum=0.5)
        for k, val in attrs.items():
            setattr(opt if what == "optimizer" else m, k, val)
        if call == "predict":
            return m.predict(X)
        if call == "train_on_batch":
            return m.train_on_batch(X, Y, optimizer=opt)
        return m.fit(X, Y, epochs=1, optimizer=opt)

    run.__qualname__ = f"tampered-{what}.{call}"
    return run


RELIABILITY_CASES = [
    # 1. crashes: every buffer handed to an update kernel is checked first
    (adam_step, {"params": P7, "grads": np.ones(5)}, ValueError, r"grads must have the shape of params \(7,\); got \(5,\)"),
    (sgd_step, {"params": P7, "grads": np.ones(9)}, ValueError, r"grads must have the shape of params"),
    (adam_step, {"params": P7.reshape(7, 1), "grads": np.ones((7, 1))}, ValueError, r"params must be a 1-D array"),
    (adam_step, {"params": P7[::2].copy(), "grads": np.ones(4)[::1]}, None, None),
    (adam_step, {"params": np.linspace(0, 1, 14)[::2], "grads": np.ones(7)}, ValueError, r"params must be a contiguous"),
    (adam_step, {"params": P7.astype(np.int64), "grads": np.ones(7)}, TypeError, r"params must have dtype float32 or float64"),
    (adam_step, {"params": P7.astype(np.float16), "grads": np.ones(7)}, TypeError, r"params must have dtype"),
    (adam_step, {"params": P7.astype(">f8"), "grads": np.ones(7)}, TypeError, r"params must have dtype .*native byte order"),
    (adam_step, {"params": list(P7), "grads": np.ones(7)}, TypeError, r"params must be a NumPy array"),
    (adam_step, {"params": None, "grads": np.ones(7)}, TypeError, r"params must be a NumPy array.*None"),
    (_step(fb.Adam, state=lambda p: (np.zeros(7)[::1], _read_only(np.zeros(7)))), {"params": P7.copy(), "grads": np.ones(7)}, ValueError, r"optimizer state_\[1\] must be a contiguous, writeable array"),
    (_step(fb.SGD, state=lambda p: (p, np.zeros_like(p)), momentum=0.5), {"params": P7.copy(), "grads": np.ones(7)}, ValueError, r"state_\[0\] must not share memory with the parameters"),
    (_step(fb.Adam, step=-1), {"params": P7.copy(), "grads": np.ones(7)}, ValueError, r"step_ must be a non-negative integer; got -1"),
    (_step(fb.Adam, step=2.5), {"params": P7.copy(), "grads": np.ones(7)}, ValueError, r"step_ must be a non-negative integer; got 2.5"),
    (fb.MLP, {"widths": [10**6, 10**6, 10**6]}, ValueError, r"widths \[1000000, 1000000, 1000000\] give 2e\+12 parameters; at most"),
    (fb.MLP, {"widths": [3, 2**63, 2]}, ValueError, r"widths .* parameters; at most"),
    (fb.MLP, {"widths": [3, 10**40]}, ValueError, r"widths .* parameters; at most"),
    (fb.MLP, {"widths": [3, 1e300]}, ValueError, r"widths .* parameters; at most"),
    (fb.MLP, {"widths": [1, 2**37, 2]}, ValueError, r"widths: the parameter buffer needs .* GiB"),
    (fb.MLP, {"widths": [2] * 3000}, None, None),
    (_tampered("model", widths=np.array([3, 400, 2])), {}, ValueError, r"widths, codes, output, dtype or parameter buffer were changed"),
    (_tampered("model", "fit", widths=np.array([3, 4, 2], np.int32)), {}, ValueError, r"no longer agree"),
    (method("predict", lambda: _in_place(clf(), "widths", 1, 400)), {"X": X}, ValueError, r"read-only"),
    (method("fit", lambda: _in_place(clf(), "codes", 1, 2)), {"X": X, "y": Y}, ValueError, r"read-only"),
    (_tampered("model", codes=np.array([1, 9])), {}, ValueError, r"no longer agree"),
    (_tampered("model", "train_on_batch", codes=np.array([1, 1])), {}, ValueError, r"no longer agree"),
    (_tampered("model", dtype=np.dtype(np.float64)), {}, ValueError, r"no longer agree"),
    (_tampered("model", "fit", alpha="0.1"), {}, TypeError, r"alpha must be a real number; got str"),
    (_tampered("model", "fit", output="sigmoid-ish"), {}, ValueError, r"no longer agree"),
    (_tampered("optimizer", "fit", lr="0.1"), {}, TypeError, r"lr must be a real number; got str"),
    (_tampered("optimizer", "train_on_batch", momentum=3.0), {}, ValueError, r"momentum must be <= 1"),
    (_tampered("optimizer", "fit", nesterov="yes"), {}, TypeError, r"nesterov must be True or False"),
    (_tampered("optimizer", "fit", lr=1e-50), {}, ValueError, r"lr=1e-50 rounds to 0 in float32; use 1.18e-38 <= lr <= 3.4e\+38"),
    (fit, {"X": X, "y": Y, "optimizer": fb.Adam(eps=1e-60)}, ValueError, r"eps=1e-60 rounds to 0 in float32"),
    (train_on_batch, {"X": X, "y": Y, "optimizer": fb.Adam(lr=1e39)}, ValueError, r"lr=1e\+39 overflows in float32"),
    (_step(fb.Adam, eps=1e-60), {"params": P7.astype(np.float32), "grads": np.zeros(7)}, ValueError, r"eps=1e-60 rounds to 0 in float32"),
    # 2. silent wrong results: refused instead
    (predict_proba, {"X": np.full((4, 3), 3e38)}, ValueError, r"X: the network's outputs overflow .*row 0"),
    (evaluate, {"X": np.full((4, 3), 3e38), "y": Y}, ValueError, r"X: the network's outputs overflow"),
    (fit, {"X": X, "y": Y, "sample_weight": HUGE_W}, ValueError, r"sample_weight must have a finite sum"),
    (sce, {"logits": Z, "y": Y, "sample_weight": HUGE_W}, ValueError, r"sample_weight must have a finite sum"),
    (evaluate, {"X": X, "y": Y, "sample_weight": HUGE_W}, ValueError, r"sample_weight must have a finite sum"),
    (fit, {"X": X, "y": np.zeros((4, 2))}, ValueError, r"y target rows must each have a positive, finite sum.*row 0 sums to 0"),
    (fit, {"X": X, "y": np.array([[1, 0], [0, 1], [0, 0], [1, 0]])}, ValueError, r"y target rows .*row 2 sums to 0"),
    (fit, {"X": X, "y": np.full((4, 2), 3e38)}, ValueError, r"y target rows .*sums to inf"),
    (sce, {"logits": Z, "y": np.zeros((4, 2))}, ValueError, r"y target rows must each have a positive, finite sum"),
    (train_on_batch, {"X": X, "y": np.zeros((4, 2))}, ValueError, r"y target rows must each have a positive"),
    (_fit_with(validation_data=(X, np.zeros((4, 2)))), {}, ValueError, r"validation_data\[1\] target rows"),
    (_step(fb.SGD), {"params": P7.copy(), "grads": with_nan(np.ones(7), 3)}, ValueError, r"grads must be finite"),
    (_step(fb.SGD, lr=1e308), {"params": np.ones(7), "grads": np.full(7, 1e10)}, FloatingPointError, r"update would make a parameter .* non-finite"),
    (_step(fb.Adam, lr=1e300, eps=1e-300), {"params": np.ones(7), "grads": np.full(7, 1e-200)}, FloatingPointError, r"params and state are unchanged"),
    (_from_torch_dict(**{"0.weight": np.full((4, 3), np.nan), "0.bias": np.zeros(4)}), {}, ValueError, r"layer 0 \('0.weight'\) weight must be finite"),
    (_from_torch_dict(**{"0.weight": np.ones((4, 3)), "0.bias": np.full(4, np.inf)}), {}, ValueError, r"layer 0 .* bias must be finite"),
    (_from_torch_dict(**{"0.weight": np.ones((4, 3)) * 1j, "0.bias": np.zeros(4)}), {}, TypeError, r"layer 0 .* weight must hold real numbers.*complex"),
    (_from_torch_dict(**{"0.weight": np.ones(3), "0.bias": np.zeros(1)}), {}, ValueError, r"'0.weight' must be a 2-D"),
    (_from_torch_dict(**{"0.weight": np.ones((4, 3)), "0.bias": np.zeros(3)}), {}, ValueError, r"layer 0 .* bias must have shape \(4,\)"),
    (_from_torch_dict(**{"0.weight": np.full((4, 3), 1e300), "0.bias": np.zeros(4)}), {}, ValueError, r"too large for float32"),
    # 3. Numba leaking: never a typing error
    (adam_step, {"params": _read_only(P7), "grads": np.ones(7)}, ValueError, r"params must be writeable"),
    (adam_step, {"params": np.array(1.0), "grads": np.array(1.0)}, ValueError, r"params must be a 1-D array.*got 0-D"),
    (adam_step, {"params": P7.copy(), "grads": "abc"}, TypeError, r"grads must be an array of real numbers; got str"),
    (adam_step, {"params": P7.copy(), "grads": np.array(["a"] * 7)}, TypeError, r"grads must hold real numbers.*strings"),
    (adam_step, {"params": P7.copy(), "grads": np.ones(7) * 1j}, TypeError, r"grads must hold real numbers.*complex"),
    (sgd_step, {"params": P7.copy(), "grads": np.array(1.0)}, ValueError, r"grads must be 1-D; got 0-D"),
    (sgd_step, {"params": P7.astype(np.float32), "grads": np.ones(7, np.float64)}, None, None),
    # 5. late failures: reported before training, naming the user's path
    (fit, {"X": X, "y": Y, "checkpoint": Lazy(lambda t: t / "no" / "such" / "m.npz")}, FileNotFoundError, r"checkpoint '.*no/such/m.npz': directory .* does not exist"),
    (fit, {"X": X, "y": Y, "checkpoint": DIRECTORY}, IsADirectoryError, r"checkpoint .* is a directory"),
    (fit, {"X": X, "y": Y, "checkpoint": 3}, TypeError, r"checkpoint must be a file path"),
    (method("save"), {"path": Lazy(lambda t: t / "missing" / "m.npz")}, FileNotFoundError, r"path '.*missing/m.npz': directory"),
    (method("save"), {"path": DIRECTORY}, IsADirectoryError, r"path .* is a directory"),
]
CASES += [c for c in RELIABILITY_CASES if c[2] is not None]
#: calls that must succeed (buffers converted at the boundary, deep models)
ACCEPTED = [c for c in RELIABILITY_CASES if c[2] is None]


def _case_id(case):
    values = case.values if hasattr(case, "values") else case
    fn, kwargs = values[0], values[1]
    name = getattr(fn, "__qualname__", getattr(fn, "__name__", "fn"))
    return f"{name}-{'-'.join(kwargs)}"


def _params():
    out = []
    seen = {}
    for case in CASES:
        cid = _case_id(case)
        seen[cid] = seen.get(cid, 0) + 1
        cid = f"{cid}-{seen[cid]}"
        if hasattr(case, "values"):
            out.append(pytest.param(*case.values, marks=case.marks, id=cid))
        else:
            out.append(pytest.param(*case, id=cid))
    return out


N_CASES = len(CASES)


@pytest.mark.parametrize("fn, kwargs, exc, pattern", _params())
def test_bad_input(fn, kwargs, exc, pattern, tmp_path):
    kw = {k: (a.make(tmp_path) if isinstance(a, Lazy) else a) for k, a in kwargs.items()}
    with pytest.raises(exc) as info:
        fn(**kw)
    msg = str(info.value)
    assert re.search(pattern, msg), f"message {msg!r} lacks {pattern!r}"
    # never a compiler error in a user's face
    assert "nopython" not in msg and "numba" not in msg.lower()


def test_table_is_large():
    assert N_CASES >= 80


@pytest.mark.parametrize("fn, kwargs, _exc, _pattern", ACCEPTED,
                         ids=[_case_id(c) for c in ACCEPTED])
def test_reliability_accepted(fn, kwargs, _exc, _pattern):
    fn(**kwargs)


def test_bad_checkpoint_is_refused_before_training(tmp_path):
    """A missing checkpoint directory is refused before the first epoch, so
    no parameter changed."""
    m = clf()
    before = m.flat_params.copy()
    with pytest.raises(FileNotFoundError):
        m.fit(X, Y, epochs=3, checkpoint=tmp_path / "nope" / "c.npz")
    np.testing.assert_array_equal(m.flat_params, before)
    assert m.epochs_trained == 0


# --- inputs that must be accepted: layouts, read-only, byte order ------------

def _layouts(a):
    """The same values as C order, Fortran order, strided, reversed, read-only
    and big-endian arrays."""
    a = np.ascontiguousarray(a)
    f = np.asfortranarray(a)
    big = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)
    big[:, ::2] = a
    strided = big[:, ::2]
    rev = np.ascontiguousarray(a[::-1])[::-1]
    ro = a.copy()
    ro.flags.writeable = False
    be = a.astype(a.dtype.newbyteorder(">"))
    return {"C": a, "F": f, "strided": strided, "reversed": rev, "readonly": ro,
            "bigendian": be}


@pytest.mark.parametrize("layout", ["F", "strided", "reversed", "readonly", "bigendian"])
def test_mlp_accepts_any_layout(layout):
    Xs = RNG.standard_normal((12, 3)).astype(np.float32)
    ys = np.arange(12) % 2
    ref = clf()
    ref.fit(Xs, ys, epochs=2, batch_size=4, optimizer=fb.SGD(lr=0.1))
    Xl = _layouts(Xs)[layout]
    yl = _layouts(ys[:, None])[layout][:, 0]
    before = Xl.copy()
    m = clf()
    m.fit(Xl, yl, epochs=2, batch_size=4, optimizer=fb.SGD(lr=0.1))
    np.testing.assert_array_equal(m.flat_params, ref.flat_params)
    np.testing.assert_array_equal(m.predict_proba(Xl), ref.predict_proba(Xs))
    np.testing.assert_array_equal(Xl, before)  # never written to


def test_read_only_inputs_are_not_written():
    x = _layouts(X)["readonly"]
    w = _layouts(W)["readonly"]
    h = fb.dense_forward(x, w, activation="sigmoid")
    dh = np.ones_like(h)
    dh.flags.writeable = False
    fb.dense_backward(dh, x, w, h, activation="sigmoid")
    z = Z.copy()
    z.flags.writeable = False
    fb.softmax_cross_entropy(z, Y)
    fb.softmax(z)
    fb.activation(z, "tanh")
    fb.activation_grad(z, "tanh")
    np.testing.assert_array_equal(z, Z)


def test_integer_and_bool_inputs_work_in_float64():
    x = np.arange(12).reshape(4, 3)
    w = np.ones((3, 2), dtype=np.int32)
    h = fb.dense_forward(x, w, np.array([True, False]))
    assert h.dtype == np.float64
    np.testing.assert_array_equal(h, x @ w + [1, 0])


def test_float16_works_in_float32():
    h = fb.dense_forward(X.astype(np.float16), W.astype(np.float16))
    assert h.dtype == np.float32


def test_integral_float_labels_are_accepted():
    loss_i, g_i = fb.softmax_cross_entropy(Z, Y)
    loss_f, g_f = fb.softmax_cross_entropy(Z, Y.astype(np.float32))
    assert loss_i == loss_f
    np.testing.assert_array_equal(g_i, g_f)


# -- the finiteness check of large arrays (sums through OpenBLAS's gemv) -------


@pytest.mark.parametrize("dtype", [np.float32, np.float64, ">f4"])
@pytest.mark.parametrize("where", [0, 1023, 1024, 5 * 1024 + 17, -1])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_large_array_check_finds_every_non_finite_value(dtype, where, bad):
    from fastbp import _validation as v

    # 300 x 1001 values: 293 sums of 1024 values and a tail of 224
    x = np.random.default_rng(0).standard_normal((300, 1001)).astype(dtype)
    x = np.concatenate([x] * (-(-v.SUM_CHECK_MIN // x.size)))  # however large it must be
    assert x.size >= v.SUM_CHECK_MIN
    assert v.all_finite(x)
    x.reshape(-1)[where] = bad
    assert not v.all_finite(x)


def test_large_array_check_opposite_infinities_and_overflow():
    from fastbp import _validation as v

    x = np.zeros((max(256, v.SUM_CHECK_MIN // 1024), 1024), np.float32)
    x[3, 5], x[3, 6] = np.inf, -np.inf  # one sum: inf - inf = NaN, not a cancellation
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no RuntimeWarning from the product
        assert not v.all_finite(x)
        # finite values whose sums overflow: the value-by-value check decides
        x[:] = np.finfo(np.float32).max
        assert v.all_finite(x)
        x[-1, -1] = np.nan
        assert not v.all_finite(x)


def test_fit_refuses_a_nan_in_a_large_X():
    from fastbp import _validation as v

    n = -(-v.SUM_CHECK_MIN // 80)
    X = np.random.default_rng(0).standard_normal((n, 80)).astype(np.float32)
    y = np.arange(n) % 3
    X[n - 1, 79] = np.nan
    m = fb.MLP([80, 8, 3], dtype="float32", seed=0)
    before = m.flat_params.copy()
    with pytest.raises(ValueError, match="X must be finite"):
        m.fit(X, y, epochs=1)
    np.testing.assert_array_equal(m.flat_params, before)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("where", [0, 1023, 150 * 1024 + 5, 301 * 1024 - 1, -1])
def test_large_array_check_split_between_threads_finds_every_value(monkeypatch, threads,
                                                                    where):
    """From SPLIT_SUM_MIN values on, the sums are split between the
    threads (each a share of the rows, with its own error state): a
    non-finite value in any share, and opposite infinities in the last
    share (no warning from a worker thread), are found."""
    import numba

    from fastbp import _validation as v

    if numba.config.NUMBA_NUM_THREADS < threads:
        pytest.skip(f"needs a Numba thread pool of {threads}")
    monkeypatch.setattr(v, "SPLIT_SUM_MIN", v.SUM_CHECK_MIN)
    # 301 sums of 1024 values and a tail of 77
    x = np.random.default_rng(0).standard_normal(
        max(301 * 1024, v.SUM_CHECK_MIN) + 77).astype(np.float32)
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        assert v.all_finite(x)
        y = x.copy()
        y[where] = np.nan
        assert not v.all_finite(y)
        y = x.copy()
        y[-1100], y[-1090] = np.inf, -np.inf  # inf - inf in the last share's last sum
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not v.all_finite(y)
    finally:
        numba.set_num_threads(old)
