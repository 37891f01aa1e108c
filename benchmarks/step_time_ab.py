"""Step time of two fastbp source trees, interleaved in one run (A/B).

    python benchmarks/step_time_ab.py /path/to/tree_A /path/to/tree_B [rounds]

Each tree runs in a worker process of its own (PYTHONPATH=tree); the parent
asks them in turn, alternating which goes first, to time one ``fit`` epoch
of 2048 rows for each configuration (min of 5, per step), and prints per
configuration the medians and the median of the per-round ratios B/A.
Used for issue 8 (checked updates): A = the commit before, B = after.
"""

import json
import os
import statistics
import subprocess
import sys
import time

CFGS = {
    "64-128-10 b32 sgd": ([64, 128, 10], 32, "sgd"),
    "64-128-10 b32 adam": ([64, 128, 10], 32, "adam"),
    "784-256-128-10 b64 sgd": ([784, 256, 128, 10], 64, "sgd"),
    "784-256-128-10 b64 adam": ([784, 256, 128, 10], 64, "adam"),
    "64-128-10 b32 tanh sgd": ([64, 128, 10], 32, "sgd", "tanh"),
}


def worker():
    import numpy as np

    import fastbp as fb

    rng = np.random.default_rng(0)
    state = {}
    for name, (w, b, opt, *act) in CFGS.items():
        X = rng.standard_normal((2048, w[0])).astype(np.float32)
        y = rng.integers(0, w[-1], 2048)
        m = fb.MLP(w, activation=(act or ["relu"])[0], seed=0)
        o = fb.SGD(lr=0.01, momentum=0.9) if opt == "sgd" else fb.Adam(lr=1e-4)
        m.fit(X, y, epochs=1, batch_size=b, optimizer=o)  # compile and warm
        state[name] = (m, X, y, b, o)
    print("ready", flush=True)
    for line in sys.stdin:
        m, X, y, b, o = state[line.strip()]
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            m.fit(X, y, epochs=1, batch_size=b, optimizer=o)
            ts.append((time.perf_counter() - t0) / (2048 // b) * 1e6)
        print(json.dumps(min(ts)), flush=True)


def main(tree_a, tree_b, rounds=11):
    env0 = {k: val for k, val in os.environ.items()
            if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    threads = os.environ.get("AB_THREADS", "1")  # AB_THREADS=2: both at 2 threads
    env0.update(OPENBLAS_NUM_THREADS=threads, NUMBA_NUM_THREADS=threads)
    procs = {}
    for tag, root in (("A", tree_a), ("B", tree_b)):
        procs[tag] = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker"], cwd=root,
            env=dict(env0, PYTHONPATH=root), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True)
    for p in procs.values():
        assert p.stdout.readline().strip() == "ready"
    times = {(c, t): [] for c in CFGS for t in procs}
    ratios = {c: [] for c in CFGS}
    for r in range(rounds):
        for c in CFGS:
            got = {}
            for tag in ("A", "B") if r % 2 == 0 else ("B", "A"):
                procs[tag].stdin.write(c + "\n")
                procs[tag].stdin.flush()
                got[tag] = json.loads(procs[tag].stdout.readline())
                times[(c, tag)].append(got[tag])
            ratios[c].append(got["B"] / got["A"])
    for c in CFGS:
        print(f"{c:26s} A {statistics.median(times[(c, 'A')]):8.1f} us/step  "
              f"B {statistics.median(times[(c, 'B')]):8.1f} us/step  B/A median "
              f"{statistics.median(ratios[c]):.3f} (range {min(ratios[c]):.3f}-"
              f"{max(ratios[c]):.3f})")
    for p in procs.values():
        p.stdin.close()
        p.wait()


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker()
    else:
        main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4]))
