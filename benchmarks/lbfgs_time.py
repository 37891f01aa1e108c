"""Where the time of an L-BFGS fit goes: fastbp.sklearn vs scikit-learn on digits.

Both estimators fit digits / 16 (1797 x 64, float64) with scikit-learn's
defaults (100 hidden ReLU units, alpha 1e-4) and ``solver="lbfgs"``,
``tol=0`` so that both run ``--max-iter`` iterations.  Measured, all
interleaved round by round, medians:

* whole fits, fastbp and scikit-learn (same random_state per round);
* one evaluation of the loss and gradient: the GEMM floor (the five matrix
  products an evaluation needs, NumPy into preallocated outputs), fastbp's
  (as its L-BFGS driver calls it: parameters in, gradient out as float64)
  and scikit-learn's (its ``_loss_grad_lbfgs``, a private method);
* the time spent inside SciPy's L-BFGS-B itself (``setulb``), the same code
  for both estimators.

    python benchmarks/lbfgs_time.py [--rounds 7] [--max-iter 100]
        [--threads 1] [--cpu-time]

``--threads 1 --cpu-time`` (one thread, process CPU time) is steadier on a
shared machine than wall time.
"""

import argparse
import itertools
import time
import warnings

import numpy as np
import scipy.optimize._lbfgsb_py as lbfgsb_py
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLP
from sklearn.preprocessing import LabelBinarizer

import fastbp as fb
from fastbp.sklearn import MLPClassifier as FbMLP

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--rounds", type=int, default=7)
parser.add_argument("--max-iter", type=int, default=100)
parser.add_argument("--threads", type=int, default=None)
parser.add_argument("--cpu-time", action="store_true")
parser.add_argument("--dtype", default=None, choices=["float32", "float64"],
                    help="fastbp's work dtype (default: float64, as X and scikit-learn)")
parser.add_argument("--evals", type=int, default=30, help="evaluations timed per round")
args = parser.parse_args()
warnings.simplefilter("ignore", ConvergenceWarning)
if args.threads:
    fb.set_num_threads(args.threads)
clock = time.process_time if args.cpu_time else time.perf_counter

# the time inside SciPy's L-BFGS-B, whichever estimator calls it
_setulb = lbfgsb_py._lbfgsb.setulb
inside = [0.0]


def timed_setulb(*a, **k):
    t0 = clock()
    try:
        return _setulb(*a, **k)
    finally:
        inside[0] += clock() - t0


lbfgsb_py._lbfgsb.setulb = timed_setulb

X, y = load_digits(return_X_y=True)
X = X / 16.0
kw = {"solver": "lbfgs", "max_iter": args.max_iter, "tol": 0.0}
fbm = FbMLP(dtype=args.dtype, **{**kw, "max_iter": 2}).fit(X, y)  # compiled outside the timing
skm = SkMLP(**{**kw, "max_iter": 2}).fit(X, y)

# one evaluation each, from the same parameters
model = fbm.model_
data = model._prepare_data(X, np.searchsorted(fbm.classes_, y))
theta = np.hstack([a.ravel() for a in skm.coefs_ + skm.intercepts_])
flat = model.flat_params
n, units = X.shape[0], [X.shape[1], *skm.hidden_layer_sizes, skm.n_outputs_]
Y = LabelBinarizer().fit_transform(y)
acts = [X] + [np.empty((n, u)) for u in units[1:]]
deltas = [np.empty_like(a) for a in acts[1:]]
cgrads = [np.empty(shape) for shape in itertools.pairwise(units)]
igrads = [np.empty(b) for b in units[1:]]
(W1, _), (W2, _) = model.params
H, O = np.empty((n, units[1])), np.empty((n, units[2]))
G1, G2, dH = np.empty(W1.shape), np.empty(W2.shape), np.empty((n, units[1]))


def floor():
    np.dot(X, W1, out=H)
    np.dot(H, W2, out=O)
    np.dot(H.T, O, out=G2)
    np.dot(O, W2.T, out=dH)
    np.dot(X.T, dH, out=G1)


def fastbp_eval():
    flat[...] = theta  # cast once to a float32 model's dtype
    model._full_loss_grad(data)
    return model._grads.astype(np.float64)


def sklearn_eval():
    return skm._loss_grad_lbfgs(theta, X, Y, None, acts, deltas, cgrads, igrads)


evals = {"floor": floor, "fastbp": fastbp_eval, "sklearn": sklearn_eval}
t_eval = {k: [] for k in evals}
fits = {"fastbp": [], "sklearn": []}
lbfgs = {"fastbp": [], "sklearn": []}
for r in range(args.rounds):
    for _ in range(args.evals):
        for k, f in evals.items():
            t0 = clock()
            f()
            t_eval[k].append(clock() - t0)
    for name, cls in (("fastbp", FbMLP), ("sklearn", SkMLP)):
        inside[0] = 0.0
        t0 = clock()
        extra = {"dtype": args.dtype} if cls is FbMLP else {}
        cls(random_state=r, **kw, **extra).fit(X, y)
        fits[name].append(clock() - t0)
        lbfgs[name].append(inside[0])
    print(f"round {r}: fastbp {fits['fastbp'][-1]:.3f} s  sklearn {fits['sklearn'][-1]:.3f} s"
          f"  ratio {fits['fastbp'][-1] / fits['sklearn'][-1]:.3f}", flush=True)

med = {k: np.median(v) for k, v in t_eval.items()}
print(f"digits {X.shape}, 64-100-10 relu, fastbp {args.dtype or 'float64'}, lbfgs, {args.max_iter} iterations, "
      f"threads {args.threads or 'default'}, {'CPU' if args.cpu_time else 'wall'} time, "
      f"medians of {args.rounds} interleaved rounds")
print("one evaluation: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in med.items())
      + f"; fastbp/floor {med['fastbp'] / med['floor']:.2f}, "
      f"sklearn/floor {med['sklearn'] / med['floor']:.2f}")
for name, times in fits.items():
    f, s = np.median(times), np.median(lbfgs[name])
    print(f"{name:8s} fit {f:.3f} s, of which inside L-BFGS-B {s:.3f} s ({s / f:.0%})")
ratio = np.median(np.array(fits["fastbp"]) / np.array(fits["sklearn"]))
print(f"fastbp/sklearn whole fit: median of ratios {ratio:.3f}")
