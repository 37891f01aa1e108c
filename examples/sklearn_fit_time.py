"""Whole-``fit`` time of fastbp.sklearn.MLPClassifier vs scikit-learn's on digits.

Both estimators get the same data (digits / 16, float64) and the same
parameters (scikit-learn's defaults unless given); fits alternate, one of
each per round, with a different random_state per round.  Prints every
round, the medians and the ratio fastbp / scikit-learn.

    python examples/sklearn_fit_time.py [--solver lbfgs] [--rounds 5]
        [--max-iter 200] [--tol 1e-4] [--dtype float32]

``--tol 0`` makes both run exactly ``--max-iter`` iterations, so the ratio
compares the cost per iteration rather than how soon each one stops.
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLP

from fastbp.sklearn import MLPClassifier as FbMLP

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--solver", default="adam", choices=["adam", "sgd", "lbfgs"])
parser.add_argument("--rounds", type=int, default=5)
parser.add_argument("--max-iter", type=int, default=200)
parser.add_argument("--tol", type=float, default=1e-4)
parser.add_argument("--dtype", default=None, choices=[None, "float32", "float64"])
args = parser.parse_args()
warnings.simplefilter("ignore", ConvergenceWarning)

X, y = load_digits(return_X_y=True)
X = X / 16.0
kw = {"solver": args.solver, "max_iter": args.max_iter, "tol": args.tol}
FbMLP(dtype=args.dtype, **{**kw, "max_iter": 2}).fit(X, y)  # compile outside the timing

t_fb, t_sk = [], []
for r in range(args.rounds):
    t0 = time.perf_counter()
    fb = FbMLP(random_state=r, dtype=args.dtype, **kw).fit(X, y)
    t_fb.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    sk = SkMLP(random_state=r, **kw).fit(X, y)
    t_sk.append(time.perf_counter() - t0)
    print(f"round {r}: fastbp {t_fb[-1]:.3f} s ({fb.n_iter_} it, acc {fb.score(X, y):.4f})  "
          f"sklearn {t_sk[-1]:.3f} s ({sk.n_iter_} it, acc {sk.score(X, y):.4f})  "
          f"ratio {t_fb[-1] / t_sk[-1]:.3f}")
t_fb, t_sk = np.array(t_fb), np.array(t_sk)
print(f"digits {X.shape}, solver {args.solver}, max_iter {args.max_iter}, tol {args.tol}, "
      f"fastbp dtype {args.dtype or 'as X'}")
print(f"median fit: fastbp {np.median(t_fb):.3f} s, sklearn {np.median(t_sk):.3f} s; "
      f"fastbp/sklearn: ratio of medians {np.median(t_fb) / np.median(t_sk):.3f}, "
      f"median of ratios {np.median(t_fb / t_sk):.3f}")
