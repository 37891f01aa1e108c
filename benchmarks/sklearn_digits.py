"""scikit-learn's defaults on digits: fastbp's estimator against
scikit-learn's, fit for fit (issue 17, item 1).

    python benchmarks/sklearn_digits.py [--rounds R] [--max-iter N] [--dtype float32]

``fastbp.sklearn.MLPClassifier`` and ``sklearn.neural_network.MLPClassifier``
with every default (100 ReLU hidden units, adam, batch_size "auto" = 200,
alpha 1e-4, float64 for fastbp unless ``--dtype``), ``tol=0`` so that both
run ``--max-iter`` epochs, on the 1797 x 64 digits scaled to [0, 1].  Each
round times one fit of each (in alternating order, 0.15 s apart so that the
BLAS threads the one before woke have gone quiet), wall time, default
threads.  Prints the medians and the median and range of the per-round
ratio fastbp / scikit-learn.
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

import fastbp.sklearn as fsk


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--max-iter", type=int, default=50)
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    args = ap.parse_args(argv)
    X, y = load_digits(return_X_y=True)
    X = X / 16.0

    def fastbp_fit():
        fsk.MLPClassifier(max_iter=args.max_iter, tol=0, random_state=0,
                          dtype=args.dtype).fit(X, y)

    def sklearn_fit():
        MLPClassifier(max_iter=args.max_iter, tol=0, random_state=0).fit(X, y)

    warnings.simplefilter("ignore")  # ConvergenceWarning: tol=0 runs every epoch
    fastbp_fit()
    sklearn_fit()
    times = {"fastbp": [], "scikit-learn": []}
    pair = (("fastbp", fastbp_fit), ("scikit-learn", sklearn_fit))
    for r in range(args.rounds):
        for name, fit in (pair if r % 2 == 0 else pair[::-1]):
            time.sleep(0.15)
            t0 = time.perf_counter()
            fit()
            times[name].append(time.perf_counter() - t0)
    ratios = np.array(times["fastbp"]) / np.array(times["scikit-learn"])
    print(f"digits, scikit-learn's defaults, {args.max_iter} epochs, fastbp {args.dtype}, "
          f"{args.rounds} rounds")
    print(f"fastbp {np.median(times['fastbp']):.4f} s, scikit-learn "
          f"{np.median(times['scikit-learn']):.4f} s: fastbp / scikit-learn "
          f"{np.median(ratios):.3f} ({ratios.min():.3f}-{ratios.max():.3f}; target <= 0.2)")


if __name__ == "__main__":
    main()
