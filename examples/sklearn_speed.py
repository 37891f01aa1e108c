"""Per-epoch time of fastbp.sklearn.MLPClassifier vs sklearn.neural_network's on digits.

Hidden (128,), batch 32, plain SGD; each epoch is one ``partial_fit`` call on
both (scikit-learn's partial_fit is one epoch too).  Prints the medians and
the median of the per-epoch ratios.

    python examples/sklearn_speed.py [EPOCHS] [DTYPE]
"""

import sys
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier as SkMLP

from fastbp.sklearn import MLPClassifier as FbMLP

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
dtype = sys.argv[2] if len(sys.argv) > 2 else "float64"
X, y = load_digits(return_X_y=True)
X = X / 16.0
classes = np.unique(y)
kw = {"hidden_layer_sizes": (128,), "solver": "sgd", "batch_size": 32,
      "learning_rate_init": 0.01, "momentum": 0.9, "random_state": 0}


def epoch_times(est):
    est.partial_fit(X, y, classes=classes)  # first call: setup (and compilation)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        est.partial_fit(X, y)
        times.append(time.perf_counter() - t0)
    return np.array(times), est.score(X, y)


t_fb, acc_fb = epoch_times(FbMLP(dtype=dtype, **kw))
t_sk, acc_sk = epoch_times(SkMLP(**kw))
print(f"digits {X.shape}, hidden (128,), batch 32, sgd, {epochs} epochs, fastbp dtype {dtype}")
print(f"fastbp  median {np.median(t_fb) * 1e3:8.2f} ms/epoch  train acc {acc_fb:.4f}")
print(f"sklearn median {np.median(t_sk) * 1e3:8.2f} ms/epoch  train acc {acc_sk:.4f}")
print(f"median per-epoch ratio sklearn/fastbp: {np.median(t_sk / t_fb):.1f}x")
