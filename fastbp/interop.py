"""Move weights between fastbp and PyTorch or scikit-learn.

* ``from_torch(module_or_state_dict, activation="relu", output="softmax")``
  -> ``fb.MLP`` from an ``nn.Sequential`` of ``nn.Linear`` layers (with
  ``nn.ReLU`` / ``nn.Tanh`` / ``nn.Sigmoid`` / ``nn.Identity`` between them,
  read from the module) or from its ``state_dict`` (then ``activation`` says
  which hidden activation to use).
* ``to_torch(model)`` -> ``nn.Sequential`` computing the same outputs: it
  ends with the last ``nn.Linear``, so it gives logits for a softmax or
  sigmoid model (apply ``torch.softmax`` / ``torch.sigmoid`` yourself, or
  use ``nn.CrossEntropyLoss`` / ``nn.BCEWithLogitsLoss``).
* ``from_sklearn(est)`` -> ``fb.MLP`` from a fitted
  ``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor`` (or a
  ``fastbp.sklearn`` estimator).  A classifier with logistic outputs
  (``out_activation_ == "logistic"``: binary, one unit, or multilabel, one
  unit per label) becomes ``output="sigmoid"`` with the same weights; a
  multiclass one (softmax) ``output="softmax"``.
* ``to_sklearn(model, X, y)`` -> a fitted scikit-learn estimator carrying the
  model's weights.  scikit-learn builds an MLP's internal structures only in
  ``fit``, so ``X`` and ``y`` (a few rows suffice) are used for one tiny fit
  whose weights are then overwritten.

PyTorch's ``nn.Linear`` stores ``weight`` as ``(out, in)`` and computes
``x @ weight.T + bias``; fastbp's ``W`` is ``(in, out)``, so ``W = weight.T``.
* ``to_onnx(model)`` -> an ``onnx.ModelProto`` computing, for float32 input
  ``X`` of shape (N, d_0), what ``predict_proba`` gives for a classifier
  (softmax or sigmoid output) and ``predict`` for a regressor (identity or
  exp output), from an ``fb.MLP`` or a fitted ``fastbp.sklearn`` estimator.

Neither peer is imported unless these functions are called.
"""

import warnings

import numpy as np

from . import _validation as v
from .network import MLP

__all__ = ["from_sklearn", "from_torch", "to_onnx", "to_sklearn", "to_torch"]

_TORCH_ACTS = {"ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Identity": "identity"}
_SK_ACTS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_SK_ACTS_BACK = {v: k for k, v in _SK_ACTS.items()}


def _checked_layers(Ws, bs, names):
    """Weights (d_in, d_out) and biases (d_out,) as finite float64 arrays;
    NaN, infinity, complex or misshapen ones are refused, naming the entry."""
    out_W, out_b = [], []
    for W, b, name in zip(Ws, bs, names):
        W = v.as_float(W, f"{name} weight", 2, np.float64)
        b = v.as_float(b, f"{name} bias", 1, np.float64)
        if b.shape != (W.shape[1],):
            raise ValueError(f"{name} bias must have shape ({W.shape[1]},) to match its "
                             f"weight; got {b.shape}")
        out_W.append(W)
        out_b.append(b)
    return out_W, out_b


def _set_params(model, Ws, bs):
    with np.errstate(over="ignore"):  # float64 -> float32 overflow is refused below
        for (W, b), Wn, bn in zip(model.params, Ws, bs):
            W[...] = Wn
            b[...] = bn
    if not np.isfinite(model.flat_params).all():
        raise ValueError(f"the weights hold values too large for {model.dtype}")
    return model


def from_torch(module, activation="relu", output="softmax", dtype="float32"):
    """An ``fb.MLP`` with the weights of a PyTorch MLP.

    Parameters
    ----------
    module : torch.nn.Sequential or dict
        A Sequential of ``Linear`` layers and activation modules, or its
        ``state_dict`` (keys ``*.weight`` / ``*.bias`` in layer order).
    activation : str or list of str
        Hidden activation(s); used only for a state_dict.
    output : {"softmax", "sigmoid", "identity"}
        How the model treats the last layer's outputs, which are the
        outputs of the last ``Linear`` (logits for "softmax" and "sigmoid").
    dtype : {"float32", "float64"}
    """
    if isinstance(module, dict):
        state = module
        acts = activation
    else:
        from torch import nn

        if not isinstance(module, nn.Sequential):
            raise TypeError(f"module must be an nn.Sequential or a state_dict; got {type(module).__name__}")
        linears, acts = [], []
        for i, layer in enumerate(module):
            name = type(layer).__name__
            if isinstance(layer, nn.Linear):
                if len(linears) > len(acts):
                    acts.append("identity")
                linears.append(layer)
            elif name in _TORCH_ACTS:
                if len(linears) != len(acts) + 1:
                    raise ValueError(f"layer {i} ({name}) must follow a Linear layer")
                acts.append(_TORCH_ACTS[name])
            else:
                raise ValueError(f"layer {i} ({name}) is not supported: only Linear, ReLU, "
                                 "Tanh, Sigmoid and Identity")
        if not linears:
            raise ValueError("module has no Linear layer")
        if len(acts) == len(linears):
            if acts[-1] != "identity":
                raise ValueError("a final activation after the last Linear is not supported; "
                                 "the output is set by `output` (softmax, sigmoid or "
                                 "identity), which reads the last Linear's outputs")
            acts = acts[:-1]
        state = {}
        for k, lin in enumerate(linears):
            state[f"{k}.weight"] = lin.weight
            state[f"{k}.bias"] = lin.bias
    weights = [k for k in state if k.endswith("weight")]
    Ws, bs = [], []
    for k in weights:
        w = state[k].detach().cpu().numpy() if hasattr(state[k], "detach") else np.asarray(state[k])
        if w.ndim != 2:
            raise ValueError(f"{k!r} must be a 2-D (out, in) weight; got shape {w.shape}")
        bkey = k[: -len("weight")] + "bias"
        if bkey in state and state[bkey] is not None:
            b = state[bkey]
            b = b.detach().cpu().numpy() if hasattr(b, "detach") else np.asarray(b)
        else:
            b = np.zeros(w.shape[0])
        Ws.append(w.T)
        bs.append(b)
    if not Ws:
        raise ValueError("state_dict has no '*.weight' entries")
    Ws, bs = _checked_layers(Ws, bs, [f"layer {k} ({name!r})" for k, name in enumerate(weights)])
    widths = [Ws[0].shape[0]] + [W.shape[1] for W in Ws]
    for k in range(1, len(Ws)):
        if Ws[k].shape[0] != Ws[k - 1].shape[1]:
            raise ValueError(f"layer {k} expects {Ws[k].shape[0]} inputs but layer {k - 1} "
                             f"gives {Ws[k - 1].shape[1]}")
    if isinstance(acts, list) and len(acts) == 0:
        acts = "relu"
    model = MLP(widths, activation=acts, output=output, dtype=dtype, seed=0)
    return _set_params(model, Ws, bs)


def to_torch(model):
    """An ``nn.Sequential`` (float32 or float64 as the model) computing the
    model's raw outputs ``model.forward(X)``.

    It ends with the last ``nn.Linear``: for ``output="softmax"`` or
    ``output="sigmoid"`` these are the logits (no softmax or sigmoid module
    is appended; ``torch.sigmoid(net(x))`` gives the sigmoid model's label
    probabilities, ``nn.BCEWithLogitsLoss`` its loss).  ``from_torch(net,
    output=model.output)`` gives the model back."""
    import torch
    from torch import nn

    layers = []
    tdtype = torch.float64 if model.dtype == np.float64 else torch.float32
    mods = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    acts = model.activations
    for k, (W, b) in enumerate(model.params):
        lin = nn.Linear(W.shape[0], W.shape[1], dtype=tdtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            lin.bias.copy_(torch.from_numpy(b.copy()))
        layers.append(lin)
        if k < model.n_layers - 1 and acts[k] in mods:
            layers.append(mods[acts[k]]())
    return nn.Sequential(*layers)


#: scikit-learn's out_activation_ -> fb.MLP output
_SK_OUTPUTS = {"logistic": "sigmoid", "softmax": "softmax", "identity": "identity",
               "exp": "exp"}


def from_sklearn(est, dtype="float64"):
    """An ``fb.MLP`` with the weights of a fitted scikit-learn MLP.

    ``out_activation_`` "logistic" (a binary classifier's single unit, or a
    multilabel classifier's unit per label) gives ``output="sigmoid"``,
    "softmax" ``output="softmax"`` and "identity" (a regressor)
    ``output="identity"``; the weights are copied unchanged, so
    ``predict_proba`` and ``predict`` agree with the estimator's (labels as
    indices 0.. into ``est.classes_``; 0/1 per label for multilabel).
    """
    if not hasattr(est, "coefs_"):
        raise ValueError("the estimator must be fitted (it has no coefs_)")
    Ws, bs = _checked_layers(est.coefs_, est.intercepts_,
                             [f"layer {k}" for k in range(len(est.coefs_))])
    out_act = getattr(est, "out_activation_", "identity")
    if out_act not in _SK_OUTPUTS:
        raise ValueError(f"out_activation_ {out_act!r} is not supported; expected one of "
                         f"{', '.join(map(repr, _SK_OUTPUTS))}")
    output = _SK_OUTPUTS[out_act]
    widths = [Ws[0].shape[0]] + [W.shape[1] for W in Ws]
    model = MLP(widths, activation=_SK_ACTS[est.activation], output=output, dtype=dtype,
                seed=0, alpha=float(getattr(est, "alpha", 0.0)))
    return _set_params(model, Ws, bs)


def to_sklearn(model, X, y):
    """A fitted ``sklearn.neural_network`` estimator with the model's weights.

    ``X``, ``y``: a few rows of the data (all classes present for a
    classifier; labels 0..n_classes-1), used to set up scikit-learn's
    structures in a one-iteration fit; the weights are then replaced.
    A sigmoid model with one unit needs 0/1 labels ``y`` of shape (n,) and
    becomes a binary classifier (one logistic unit), one with k > 1 units a
    (n, k) 0/1 indicator matrix and becomes a multilabel classifier; the
    weights are copied unchanged.  A two-class softmax model becomes a
    one-unit logistic classifier with ``z = z_1 - z_0``, which gives the
    same probabilities.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    acts = set(model.activations[:-1])
    if len(acts) > 1:
        raise ValueError("scikit-learn MLPs use one activation for all hidden layers")
    act = _SK_ACTS_BACK[acts.pop() if acts else "identity"]
    hidden = tuple(int(w) for w in model.widths[1:-1])
    cls = MLPRegressor if model.output in ("identity", "exp") else MLPClassifier
    est = cls(hidden_layer_sizes=hidden, activation=act, max_iter=1, alpha=model.alpha)
    if model.output == "exp":  # Poisson regression: scikit-learn's loss="poisson"
        est.set_params(loss="poisson")
    if model.output == "sigmoid" and model.widths[-1] == 1 and np.ndim(y) == 2:
        y = np.asarray(y).reshape(-1)  # a (n, 1) column of 0/1 labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    n_out = int(model.widths[-1])
    expected = {"sigmoid": "logistic", "identity": "identity", "exp": "exp",
                "softmax": "softmax" if n_out > 2 else "logistic"}[model.output]
    if est.out_activation_ != expected:
        need = {"sigmoid": ("0/1 labels (n,)" if n_out == 1
                            else f"a (n, {n_out}) 0/1 indicator matrix"),
                "softmax": f"class labels 0..{n_out - 1} of shape (n,)",
                "identity": f"targets with {n_out} column(s)",
                "exp": f"non-negative targets with {n_out} column(s)"}[model.output]
        raise ValueError(f"y must be {need} for this {model.output} model with {n_out} "
                         f"output(s); scikit-learn read it as {est.out_activation_!r} output "
                         f"with {est.n_outputs_} unit(s)")
    Ws = [np.array(W, dtype=np.float64) for W, _ in model.params]
    bs = [np.array(b, dtype=np.float64) for _, b in model.params]
    if model.output == "softmax" and model.widths[-1] == 2:
        Ws[-1] = (Ws[-1][:, 1] - Ws[-1][:, 0])[:, None]
        bs[-1] = bs[-1][1:] - bs[-1][:1]
    for k, (W, b) in enumerate(zip(Ws, bs)):
        if est.coefs_[k].shape != W.shape or est.intercepts_[k].shape != b.shape:
            raise ValueError(f"X and y do not match the model: layer {k} has shape {W.shape}, "
                             f"scikit-learn built {est.coefs_[k].shape}")
        est.coefs_[k] = W
        est.intercepts_[k] = b
    return est


#: fb.MLP hidden activation -> ONNX operator (None: nothing to apply)
_ONNX_ACTS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "identity": None}
#: opset and IR version of the exported graph: onnxruntime >= 1.14 runs them
_ONNX_OPSET = 17
_ONNX_IR_VERSION = 8


def _as_fastbp_model(model):
    """The ``fb.MLP`` inside ``model`` (an ``fb.MLP`` or a fitted
    ``fastbp.sklearn`` estimator); anything else is refused."""
    if isinstance(model, MLP):
        model._check_structure()
        return model
    if any(c.__module__ == "fastbp.sklearn" for c in type(model).__mro__):
        try:
            inner = model.model_
        except AttributeError:
            raise ValueError(f"model: this {type(model).__name__} is not fitted; call fit "
                             "first") from None
        return _as_fastbp_model(inner)
    raise TypeError("model must be a fastbp.MLP or a fitted fastbp.sklearn MLPClassifier / "
                    f"MLPRegressor; got {type(model).__name__}")


def to_onnx(model, name="fastbp_mlp"):
    """An ONNX model of ``model``'s predictions, for onnxruntime and other
    ONNX runtimes (needs ``pip install "fastbp[onnx]"``).

    Parameters
    ----------
    model : fastbp.MLP or fitted fastbp.sklearn.MLPClassifier / MLPRegressor
        Every hidden activation (relu, tanh, sigmoid, identity) and output
        (softmax, sigmoid with one unit or one per label, identity, exp) is
        supported.
    name : str
        The graph's name.

    Returns
    -------
    onnx.ModelProto
        One float32 input ``"X"`` of shape (N, d_0) and one float32 output:
        ``"probabilities"`` for a classifier, as ``predict_proba`` ((N, k)
        for softmax and multilabel sigmoid outputs, (N, 2) ``[1 - p, p]`` for
        a single sigmoid unit), ``"predictions"`` for a regressor, as
        ``predict`` ((N,) for one output, else (N, k); ``exp`` of the last
        layer for the Poisson "exp" output).  Weights are stored as float32
        (a float64 model's are rounded once), so outputs agree with fastbp's
        to about 1e-6 relative.  Opset 17, IR version 8.

    Examples
    --------
    >>> import onnxruntime as ort                               # doctest: +SKIP
    >>> sess = ort.InferenceSession(to_onnx(model).SerializeToString())
    >>> proba = sess.run(None, {"X": X.astype(np.float32)})[0]
    """
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise ImportError('to_onnx needs the onnx package: pip install "fastbp[onnx]"') \
            from exc
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str; got {name!r}")
    mlp = _as_fastbp_model(model)
    acts = mlp.activations  # one per layer, the last is the output's
    inits, nodes = [], []
    h = "X"
    with np.errstate(over="ignore"):
        for k, (W, b) in enumerate(mlp.params):
            W32, b32 = W.astype(np.float32), b.astype(np.float32)
            if not (np.isfinite(W32).all() and np.isfinite(b32).all()):
                raise ValueError(f"model: layer {k}'s weights hold values too large for "
                                 "float32, which the ONNX model stores")
            inits += [numpy_helper.from_array(W32, f"W{k}"),
                      numpy_helper.from_array(b32, f"b{k}")]
            nodes.append(helper.make_node("Gemm", [h, f"W{k}", f"b{k}"], [f"a{k}"],
                                          name=f"dense{k}"))
            h = f"a{k}"
            op = _ONNX_ACTS.get(acts[k]) if k < mlp.n_layers - 1 else None
            if op is not None:
                nodes.append(helper.make_node(op, [h], [f"h{k}"], name=f"act{k}"))
                h = f"h{k}"
    d_out = int(mlp.widths[-1])
    out_shape = ["N", d_out]
    if mlp.output in ("softmax", "sigmoid"):
        out = "probabilities"
        if mlp.output == "softmax":
            nodes.append(helper.make_node("Softmax", [h], [out], axis=1, name="out_softmax"))
        else:
            # p = 1 / (1 + exp(-z)), and 1 - p = 1 / (1 + exp(z)) for one unit:
            # relative accuracy down to the smallest probabilities (ONNX
            # Runtime's Sigmoid is accurate to about 1e-7 absolute only)
            inits.append(numpy_helper.from_array(np.ones(1, np.float32), "one"))

            def logistic(z, p, tag):
                return [helper.make_node("Exp", [z], [f"e_{tag}"], name=f"exp_{tag}"),
                        helper.make_node("Add", [f"e_{tag}", "one"], [f"d_{tag}"],
                                         name=f"add_{tag}"),
                        helper.make_node("Reciprocal", [f"d_{tag}"], [p], name=f"inv_{tag}")]

            nodes.append(helper.make_node("Neg", [h], ["neg_z"], name="neg"))
            if d_out > 1:
                nodes += logistic("neg_z", out, "p")
            else:  # [1 - p, p]
                nodes += logistic(h, "p0", "p0") + logistic("neg_z", "p1", "p1")
                nodes.append(helper.make_node("Concat", ["p0", "p1"], [out], axis=1,
                                              name="concat"))
                out_shape = ["N", 2]
    else:
        out = "predictions"
        if mlp.output == "exp":
            nodes.append(helper.make_node("Exp", [h], ["mu"], name="out_exp"))
            h = "mu"
        if d_out == 1:
            inits.append(numpy_helper.from_array(np.array([-1], np.int64), "flat"))
            nodes.append(helper.make_node("Reshape", [h, "flat"], [out], name="flatten"))
            out_shape = ["N"]
        else:
            nodes.append(helper.make_node("Identity", [h], [out], name="output"))
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", int(mlp.widths[0])])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
        initializer=inits)
    proto = helper.make_model(graph, producer_name="fastbp",
                              opset_imports=[helper.make_opsetid("", _ONNX_OPSET)])
    proto.ir_version = _ONNX_IR_VERSION
    onnx.checker.check_model(proto)
    return proto
