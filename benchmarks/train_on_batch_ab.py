"""Per-call time of ``MLP.train_on_batch`` and ``Optimizer.step`` in two or
more fastbp source trees, interleaved in one run.

    python benchmarks/train_on_batch_ab.py TREE_A TREE_B [TREE_C ...] [--rounds N] [--wall]

Each tree runs in a worker process of its own (PYTHONPATH=tree,
OPENBLAS_NUM_THREADS=1, NUMBA_NUM_THREADS=1); the parent asks them in turn,
rotating which goes first, to time each configuration (min over ``REPEATS`` runs of
``CALLS`` calls, per call), and prints per configuration the median per-call
time of each tree and the median of the per-round ratios against the first
tree.  For ``train_on_batch`` each worker also times the compiled step alone
(``_kernels.network.train_step`` with the arguments prepared once), in turn
with the full call, and the per-round difference is the Python overhead.
Times are the worker's CPU time (``time.process_time``: steadier than wall
time on a shared machine, and the same thing with one thread), or wall time
with ``--wall``.  Used for the per-call overhead of the checked step (issue 8): the
compiled step itself is the same in every tree, so differences are Python
overhead.  ``Optimizer.step`` runs on a flat buffer of the 64-128-10
network's size (only in trees whose optimizers have ``step``).
"""

import json
import os
import statistics
import subprocess
import sys
import time

CALLS = 1000
REPEATS = 9
CFGS = {
    "train_on_batch 64-128-10 b32 f32 sgd": ("tob", "sgd"),
    "train_on_batch 64-128-10 b32 f32 adam": ("tob", "adam"),
    "Optimizer.step 64-128-10 f32 sgd": ("step", "sgd"),
    "Optimizer.step 64-128-10 f32 adam": ("step", "adam"),
}


def worker(clock):
    import numpy as np

    import fastbp as fb
    from fastbp._kernels.network import train_step

    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 64)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    calls = {}
    for name, (what, kind) in CFGS.items():
        opt = fb.SGD(lr=0.01, momentum=0.9) if kind == "sgd" else fb.Adam(lr=1e-4)
        if what == "tob":
            m = fb.MLP([64, 128, 10], seed=0)
            m.train_on_batch(X, y, optimizer=opt)  # compile and warm
            calls[name] = (lambda m=m: m.train_on_batch(X, y))
            # the compiled step alone, arguments prepared once (as train_on_batch
            # passes them in every tree compared here)
            kind_, y_int, y_f = m._check_y(y, 32)
            sw = np.empty(0, dtype=np.float64)
            s1, s2 = opt.bind(m.flat_params)
            hp = opt.hyperparameters()
            ws = m._workspace(32)
            if "p_next" in ws:  # trees after issue 16: an epoch of one batch
                import numba

                from fastbp._kernels.network import train_epoch

                try:  # trees with the kernels' records
                    from fastbp._kernels import records as rec
                except ImportError:
                    rec = None
                args = (X, y_int, y_f, sw, ws["order"][:32], 32, m.flat_params, m._grads,
                        m.widths, m.codes, kind_, m.alpha, opt.kind, hp, s1, s2, opt.step_,
                        ws["xb"], ws["yb_int"], ws["yb_f"], ws["swb"], ws["acts"],
                        ws["delta_a"], ws["delta_b"], ws["rw"], ws["p_next"], ws["s1_next"],
                        ws["s2_next"], numba.get_num_threads(), ws["scratch"], 0.0)
                if "check_inputs" in train_epoch.py_func.__code__.co_varnames:
                    args += (True,)  # trees after issue 16 item 5
                if rec is not None:
                    args = (rec.data(X, y_int, y_f, sw, kind_), ws["order"][:32], 32,
                            m._net_record(),
                            rec.optimizer(opt.kind, hp, s1, s2, opt.step_),
                            rec.workspace(ws), numba.get_num_threads(), 0.0, True)
                calls[name + " [kernel]"] = (lambda a=args: train_epoch(*a))
            else:
                args = (m.flat_params, m._grads, m.widths, m.codes, kind_, m.alpha, X, y_int,
                        y_f, sw, opt.kind, hp, s1, s2, opt.step_, ws["acts"], ws["delta_a"],
                        ws["delta_b"], ws["rw"])
                calls[name + " [kernel]"] = (lambda a=args: train_step(*a))
        elif hasattr(opt, "step"):
            m = fb.MLP([64, 128, 10], seed=0)
            p = m.flat_params
            g = (rng.standard_normal(p.size) * 1e-3).astype(np.float32)
            opt.step(p, g)
            calls[name] = (lambda o=opt, p=p, g=g: o.step(p, g))
    print("ready", flush=True)
    for line in sys.stdin:
        name = line.strip()
        fns = [calls.get(name), calls.get(name + " [kernel]")]
        if fns[0] is None:
            print("null", flush=True)
            continue
        best = [float("inf"), float("inf")]
        for _ in range(REPEATS):  # the call and its kernel alone, alternating
            for j, fn in enumerate(fns):
                if fn is None:
                    continue
                t0 = clock()
                for _ in range(CALLS):
                    fn()
                best[j] = min(best[j], (clock() - t0) / CALLS * 1e6)
        print(json.dumps(best if fns[1] is not None else [best[0]]), flush=True)


def main(trees, rounds=11, wall=False):
    env0 = {k: val for k, val in os.environ.items()
            if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env0.update(OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    procs = []
    for root in trees:
        procs.append(subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker"] + ["--wall"] * wall,
            cwd=root,
            env=dict(env0, PYTHONPATH=root), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True))
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    k = len(procs)
    times = {(c, i): [] for c in CFGS for i in range(k)}
    kernel = {(c, i): [] for c in CFGS for i in range(k)}
    ratios = {(c, i): [] for c in CFGS for i in range(k)}
    for r in range(rounds):
        order = [(r + j) % k for j in range(k)]
        for c in CFGS:
            got = {}
            for i in order:
                procs[i].stdin.write(c + "\n")
                procs[i].stdin.flush()
                got[i] = json.loads(procs[i].stdout.readline())
            for i in range(k):
                if got[i] is None:
                    continue
                times[(c, i)].append(got[i][0])
                if len(got[i]) > 1:
                    kernel[(c, i)].append(got[i][1])
                if got[0] is not None:
                    ratios[(c, i)].append(got[i][0] / got[0][0])
    med = statistics.median
    for c in CFGS:
        print(c)
        for i, root in enumerate(trees):
            if not times[(c, i)]:
                print(f"   {root:32s}       n/a")
                continue
            line = f"   {root:32s} {med(times[(c, i)]):7.1f} us/call"
            if kernel[(c, i)]:
                over = [a - b for a, b in zip(times[(c, i)], kernel[(c, i)])]
                line += (f"  kernel alone {med(kernel[(c, i)]):6.1f}  overhead "
                         f"{med(over):5.1f} (range {min(over):.1f}-{max(over):.1f}; "
                         f"min-min {min(times[(c, i)]) - min(kernel[(c, i)]):.1f})")
            rs = ratios[(c, i)]
            if i:
                line += f"  x{med(rs):.3f} of first"
            print(line)
    for p in procs:
        p.stdin.close()
        p.wait()


if __name__ == "__main__":
    args = sys.argv[1:]
    wall = "--wall" in args
    if wall:
        args.remove("--wall")
    if args == ["--worker"]:
        worker(time.perf_counter if wall else time.process_time)
    else:
        rounds = 11
        if "--rounds" in args:
            i = args.index("--rounds")
            rounds = int(args[i + 1])
            del args[i:i + 2]
        main(args, rounds, wall)
