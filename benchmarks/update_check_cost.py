"""Cost of the finiteness test made before each optimizer update.

    python benchmarks/update_check_cost.py

Times, interleaved in one process, the old test (``all_finite`` of the
gradient), the new one (``check_update``: would the update leave p and the
state finite?) and the update itself, on flat float32 buffers of the
parameter counts of 64-128-10 and 784-256-128-10.
"""

import time

import numpy as np

from fastbp._kernels import optim as k


def main():
    rng = np.random.default_rng(0)
    for n, label in ((9610, "64-128-10"), (235146, "784-256-128-10")):
        p = rng.standard_normal(n).astype(np.float32)
        g = (rng.standard_normal(n) * 1e-3).astype(np.float32)
        s1 = np.zeros(n, np.float32)
        s2 = np.zeros(n, np.float32)
        for kind, name, hp in ((k.SGD, "sgd momentum 0.9", np.array([0.01, 0.9, 0, 0, 0.0])),
                               (k.ADAM, "adam", np.array([1e-6, 0.9, 0.999, 1e-8, 0.0]))):
            a = (kind, p, g, s1, s2, hp, 5)
            fs = {
                "all_finite(g) [before]": lambda a=a: k.all_finite(a[2]),
                "check_update [now]": lambda a=a: k.check_update(*a),
                "apply_update": lambda a=a: k.apply_update(*a),
            }
            for f in fs.values():
                f()
            res = {key: [] for key in fs}
            reps = 200 if n < 20000 else 30
            for _ in range(15):
                for key, f in fs.items():
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        f()
                    res[key].append((time.perf_counter() - t0) / reps * 1e6)
            print(f"{label} ({n} params, float32) {name}: " + ", ".join(
                f"{key} {np.median(val):.1f} us" for key, val in res.items()))


if __name__ == "__main__":
    main()
