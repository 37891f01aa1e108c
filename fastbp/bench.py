"""Side-by-side speed comparison: ``python -m fastbp.bench`` (or ``fastbp bench``).

For each (network, batch) it times one full training step (forward,
softmax cross-entropy, backward, SGD-momentum update) for fastbp (epoch path
and ``train_on_batch``), a plain NumPy implementation, a naive Numba port of
it (``fastbp/_bench_naive.py``: one ``@njit`` per operation), the GEMM floor
(only the matrix products a step needs, into preallocated outputs) and, when
installed, PyTorch eager and ``jax.jit``.  Implementations are interleaved
round-robin and repeated in one run; medians and ratios are reported, and
``--json`` / ``--plot`` write them as JSON and as a bar chart.

The epoch path is ``MLP.fit`` for one epoch over up to 32 distinct batches
(fewer for the largest networks), timed whole and divided by the batches:
it includes gathering fresh rows for every step and the per-call argument
checks of ``fit``; the other rows repeat one batch.

PyTorch and JAX each run in a worker process of their own, driven from the
same round-robin loop: in one process with Numba and two OpenBLAS pools,
their OpenMP threads competed with spinning BLAS threads for the 2 cores and
torch measured 3-200 times slower than on its own.
"""

import argparse
import datetime
import itertools
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings

import numpy as np

DEFAULT_SIZES = "64-128-10:32,784-256-128-10:64,784-256-128-10:512,1024-2048-2048-10:1024"
QUICK_SIZES = "64-128-10:32,784-256-128-10:64"

# (max fastbp/floor, max fastbp/torch) keyed by (widths, batch): the floor
# targets of issue 16 (1.10 at b64, 1.05 at b512, 1.03 at 1024-2048-2048-10)
# and issue 17 (0.7 for tiny networks), the torch ones of issues 3 and 10
TARGETS = {
    ((64, 128, 10), 32): (0.7, 0.12),
    ((784, 256, 128, 10), 64): (1.1, 0.5),
    ((784, 256, 128, 10), 512): (1.05, None),
    ((1024, 2048, 2048, 10), 1024): (1.03, 1.0),
}
#: issue 16: the epoch path's step against what users would otherwise write,
#: at every size: max fastbp/numpy and max fastbp/naive-numba
NUMPY_TARGET = 0.75
NAIVE_TARGET = 0.85
LR, MOMENTUM = 0.01, 0.9


def parse_sizes(text):
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        net, _, batch = item.partition(":")
        widths = tuple(int(w) for w in net.split("-"))
        if len(widths) < 2 or not batch:
            raise ValueError(f"--sizes: expected items like 64-128-10:32; got {item!r}")
        out.append((widths, int(batch)))
    return out


def _init_params(widths, dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = []
    for d_in, d_out in itertools.pairwise(widths):
        W = (rng.standard_normal((d_in, d_out)) * np.sqrt(2.0 / d_in)).astype(dtype)
        params.append([W, np.zeros(d_out, dtype)])
    return params


def _data(widths, n, dtype, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, widths[0])).astype(dtype)
    y = rng.integers(0, widths[-1], n).astype(np.int64)
    return X, y


# --------------------------------------------------------------------------
# the implementations: each maker returns a zero-argument callable = 1 step


class NumpyMLP:
    """A plain NumPy MLP step written the way a user would write it."""

    def __init__(self, widths, dtype):
        self.params = _init_params(widths, dtype)
        self.vel = [[np.zeros_like(W), np.zeros_like(b)] for W, b in self.params]

    def step(self, X, y, lr=LR, momentum=MOMENTUM):
        hs = [X]
        L = len(self.params)
        for k, (W, b) in enumerate(self.params):
            a = hs[-1] @ W + b
            hs.append(np.maximum(a, 0) if k < L - 1 else a)
        logits = hs[-1]
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        n = X.shape[0]
        loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(n), y]))
        d = e / s
        d[np.arange(n), y] -= 1
        d /= n
        grads = [None] * L
        for k in range(L - 1, -1, -1):
            W = self.params[k][0]
            grads[k] = (hs[k].T @ d, d.sum(axis=0))
            if k > 0:
                d = (d @ W.T) * (hs[k] > 0)
        for (W, b), (vW, vb), (gW, gb) in zip(self.params, self.vel, grads):
            vW *= momentum
            vW += gW
            vb *= momentum
            vb += gb
            W -= lr * vW
            b -= lr * vb
        return loss


def make_numpy(widths, batch, dtype):
    net = NumpyMLP(widths, dtype)
    X, y = _data(widths, batch, dtype)
    return lambda: net.step(X, y)


class NaiveNumbaMLP:
    """The naive Numba port of :class:`NumpyMLP`'s step: the same initial
    parameters, one ``@njit`` function per operation (``fastbp._bench_naive``).
    """

    def __init__(self, widths, dtype):
        self.params = _init_params(widths, dtype)
        self.vel = [[np.zeros_like(W), np.zeros_like(b)] for W, b in self.params]
        self._scalar = np.dtype(dtype).type
        # the tuples hold the same arrays as params and vel: updated in place
        self._state = tuple(tuple(arrs) for arrs in (
            [W for W, _ in self.params], [b for _, b in self.params],
            [vW for vW, _ in self.vel], [vb for _, vb in self.vel]))

    def step(self, X, y, lr=LR, momentum=MOMENTUM):
        from fastbp import _bench_naive

        t = self._scalar
        return _bench_naive.step(X, y, *self._state, t(lr), t(momentum))


def make_naive_numba(widths, batch, dtype):
    net = NaiveNumbaMLP(widths, dtype)
    X, y = _data(widths, batch, dtype)

    def step():
        return net.step(X, y)
    # Numba's products run on SciPy's OpenBLAS, a thread pool of its own beside
    # NumPy's (which the floor, NumPy and fastbp use): let each pool go quiet
    # before the other is timed (see _runner)
    step.own_blas_pool = True
    return step


def make_floor(widths, batch, dtype):
    """Only the matrix products of one step, into preallocated outputs."""
    params = _init_params(widths, dtype)
    X, _ = _data(widths, batch, dtype)
    hs = [X] + [np.zeros((batch, d), dtype) for d in widths[1:]]
    ds = [np.zeros((batch, d), dtype) for d in widths[1:]]
    dWs = [np.zeros_like(W) for W, _ in params]
    dhs = [np.zeros((batch, d), dtype) for d in widths[:-1]]
    L = len(params)
    matmul = np.matmul

    def step():
        for k in range(L):
            matmul(hs[k], params[k][0], out=hs[k + 1])
        for k in range(L - 1, -1, -1):
            matmul(hs[k].T, ds[k], out=dWs[k])
            if k > 0:
                matmul(ds[k], params[k][0].T, out=dhs[k])
    return step


def make_fastbp_step(widths, batch, dtype):
    import fastbp as fb
    model = fb.MLP(list(widths), activation="relu", dtype=dtype, seed=0)
    opt = fb.SGD(lr=LR, momentum=MOMENTUM)
    X, y = _data(widths, batch, dtype)
    model.train_on_batch(X, y, optimizer=opt)
    return lambda: model.train_on_batch(X, y)


def make_fastbp_epoch(widths, batch, dtype, n_batches):
    """Returns (callable = 1 epoch of n_batches steps, n_batches)."""
    import fastbp as fb
    model = fb.MLP(list(widths), activation="relu", dtype=dtype, seed=0)
    opt = fb.SGD(lr=LR, momentum=MOMENTUM)
    X, y = _data(widths, batch * n_batches, dtype)
    model.fit(X, y, epochs=1, batch_size=batch, optimizer=opt)
    return lambda: model.fit(X, y, epochs=1, batch_size=batch)


def make_activation_epoch(widths, batch, dtype, activation, n_batches):
    """(callable = 1 epoch of n_batches steps) of a network whose hidden
    layers use ``activation``; the same data and settings for every one."""
    import fastbp as fb
    model = fb.MLP(list(widths), activation=activation, dtype=dtype, seed=0)
    X, y = _data(widths, batch * n_batches, dtype)
    model.fit(X, y, epochs=1, batch_size=batch, optimizer=fb.SGD(lr=LR, momentum=MOMENTUM))
    return lambda: model.fit(X, y, epochs=1, batch_size=batch)


def activation_ratios(sizes, dtype, repeats, min_time):
    """{(widths, batch): {activation: [s/step]}}: tanh, sigmoid and ReLU
    networks of one shape timed interleaved (epoch path, per step)."""
    out = {}
    for widths, batch in sizes:
        n_batches = max(2, min(16, int(2e8 / max(1, batch * sum(
            a * b for a, b in itertools.pairwise(widths))))))
        impls = {act: (make_activation_epoch(widths, batch, dtype, act, n_batches), n_batches)
                 for act in ("relu", "tanh", "sigmoid")}
        out[(widths, batch)] = measure(impls, repeats, min_time)
    return out


def make_phases(widths, batch, dtype, n_batches=16):
    """Zero-argument callables, one per phase of a ReLU training step, that
    call fastbp's own kernels one by one (as ``train_epoch`` does in one
    compiled call): where the time of a step goes.  Each phase's kernels run
    on the buffers the previous phases left, so the data are realistic.
    The Python call of each kernel (about 1 us) is included; the phases
    are meant for mid-size and large networks."""
    import fastbp as fb
    from fastbp._kernels import activations as ka
    from fastbp._kernels import losses as kl
    from fastbp._kernels import optim as ko
    from fastbp._kernels.blas import matmul
    from fastbp._kernels.network import gather_block

    model = fb.MLP(list(widths), activation="relu", dtype=dtype, seed=0)
    X, y = _data(widths, batch * n_batches, dtype)
    model.fit(X, y, epochs=1, batch_size=batch, optimizer=fb.SGD(lr=LR, momentum=MOMENTUM))
    params = [(W, b) for W, b in model.params]
    grads_flat = np.zeros_like(model.flat_params)
    grads = model._views(grads_flat)
    vel = np.zeros_like(grads_flat)
    hp = np.array([LR, MOMENTUM, 0.0, 0.0, 0.0])
    codes = [int(c) for c in model.codes]
    L = len(params)
    xb = np.zeros((batch, widths[0]), dtype)
    idx = np.random.default_rng(2).permutation(X.shape[0])[:batch]
    hs = [xb] + [np.zeros((batch, d), dtype) for d in widths[1:]]
    ds = [None] + [np.zeros((batch, d), dtype) for d in widths[1:]]
    rw = np.full(batch, 1.0 / batch, dtype)
    yb = y[:batch].copy()

    def gather():
        # the epoch's own gather loop (np.take took 2.9x its time at
        # 784-256-128-10 b512, and the table gave the gather 0.17x the floor)
        gather_block(X, idx, 0, 0, batch, xb)
        yb[:] = y[idx]

    def forward_products():
        for k in range(L):
            matmul(hs[k], params[k][0], hs[k + 1])

    def bias_activation():
        for k in range(L):
            ka.bias_activation(hs[k + 1], params[k][1], codes[k])

    def loss():
        kl.softmax_xent_labels(hs[L], yb, rw, ds[L])

    def deltas():
        for k in range(L - 1, -1, -1):
            ka.delta_in_place(ds[k + 1], hs[k + 1], codes[k], grads[k][1])

    def backward_products():
        for k in range(L - 1, -1, -1):
            matmul(hs[k].T, ds[k + 1], grads[k][0])
            if k > 0:
                matmul(ds[k + 1], params[k][0].T, ds[k])

    p_own = model.flat_params.copy()  # updated here, so that the products' W stay put

    def update():
        # the step's one pass as an epoch of several steps makes it: the
        # checked update in place (optim.sgd_in_place), on one thread
        ko.fused_update(ko.SGD, p_own, grads_flat, vel, vel, hp, 2, p_own, vel, vel)

    return {"gather": gather, "forward GEMMs": forward_products,
            "bias+activation": bias_activation, "softmax loss": loss,
            "delta (g', db)": deltas, "backward GEMMs": backward_products,
            "checked update": update}


def phase_table(widths, batch, dtype, repeats, min_time):
    """Print per-phase medians beside the floor and the whole fastbp step."""
    n_batches = 16
    phases = make_phases(widths, batch, dtype, n_batches)
    impls = {name: (fn, 1) for name, fn in phases.items()}
    impls["floor"] = (make_floor(widths, batch, dtype), 1)
    impls["fastbp-epoch"] = (make_fastbp_epoch(widths, batch, dtype, n_batches), n_batches)
    samples = measure(impls, repeats, min_time)
    med = {k: float(np.median(v)) for k, v in samples.items()}
    total = sum(med[k] for k in phases)
    name = "-".join(map(str, widths))
    print(f"== where the time goes: {name}, batch {batch}, {dtype} (kernels called one by one)")
    for k in phases:
        print(f"   {k:<18}{_fmt(med[k]):>12}  {100 * med[k] / total:5.1f}% of the phases  "
              f"{med[k] / med['floor']:6.3f}x floor")
    print(f"   {'sum of phases':<18}{_fmt(total):>12}  {total / med['floor']:6.3f}x floor")
    print(f"   {'floor':<18}{_fmt(med['floor']):>12}")
    print(f"   {'fastbp-epoch':<18}{_fmt(med['fastbp-epoch']):>12}  "
          f"{med['fastbp-epoch'] / med['floor']:6.3f}x floor", flush=True)
    return med


def make_torch(widths, batch, dtype, compiled=False):
    import torch
    layers = []
    for k, (d_in, d_out) in enumerate(itertools.pairwise(widths)):
        layers.append(torch.nn.Linear(d_in, d_out))
        if k < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    tdtype = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
    net = torch.nn.Sequential(*layers).to(tdtype)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    X, y = _data(widths, batch, dtype)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(Xt), yt)
        loss.backward()
        opt.step()
        return loss
    if compiled:
        step = torch.compile(step)
    return step


def make_jax(widths, batch, dtype):
    import jax
    import jax.numpy as jnp
    params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in _init_params(widths, dtype)]
    vel = [(jnp.zeros_like(W), jnp.zeros_like(b)) for W, b in params]
    X, y = _data(widths, batch, dtype)
    Xj, yj = jnp.asarray(X), jnp.asarray(y.astype(np.int32))

    def loss_fn(params, X, y):
        h = X
        for k, (W, b) in enumerate(params):
            h = h @ W + b
            if k < len(params) - 1:
                h = jax.nn.relu(h)
        logp = jax.nn.log_softmax(h)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def update(params, vel, X, y):
        loss, g = jax.value_and_grad(loss_fn)(params, X, y)
        vel = jax.tree_util.tree_map(lambda v, gi: MOMENTUM * v + gi, vel, g)
        params = jax.tree_util.tree_map(lambda p, v: p - LR * v, params, vel)
        return params, vel, loss

    state = [params, vel]

    def step():
        p, v, loss = update(state[0], state[1], Xj, yj)
        loss.block_until_ready()
        state[0], state[1] = p, v
    return step


# --------------------------------------------------------------------------
# timing


def step_flops(widths, batch):
    """Floating-point operations of the matrix products of one step:
    forward and dW for every layer, dH for every layer but the first."""
    macs = [a * b for a, b in itertools.pairwise(widths)]
    return 2 * batch * (2 * sum(macs) + sum(macs[1:]))


def step_arrangement(widths, batch):
    """How fastbp's steps of ``batch`` rows use the threads now
    (``fastbp._threads.step_threads``): "one thread" (OpenBLAS's threads
    for the products), or "split by blocks of W" or "split by batch rows"
    with the thread count."""
    from . import _threads
    from ._responsive import flops_per_row
    from ._validation import n_params

    nt, _ = _threads.step_threads(batch * flops_per_row(widths),
                                  batch * _threads.pack_per_row(widths), n_params(widths))
    if nt == 1:
        return "one thread"
    return f"split by {'blocks of W' if nt > 0 else 'batch rows'}, {abs(nt)} threads"


#: the clock of in-process timings; ``--cpu-time`` switches it to process CPU time
_CLOCK = [time.perf_counter]


def _timed(fn, n):
    """Seconds for n calls of fn."""
    clock = _CLOCK[0]
    t0 = clock()
    for _ in range(n):
        fn()
    return clock() - t0


def _peer_worker(conn, kind, widths, batch, dtype, threads, compiled, cpu_time=False):
    """Child process: build one peer's step, then answer "time n calls" (by
    the worker's own CPU time with ``cpu_time``, as the parent's clock)."""
    if cpu_time:
        _CLOCK[0] = time.process_time
    try:
        if kind == "torch":
            import torch
            if threads:
                torch.set_num_threads(threads)
            fn = make_torch(widths, batch, dtype, compiled)
            info = {"version": torch.__version__, "threads": torch.get_num_threads(),
                    "interop_threads": torch.get_num_interop_threads()}
        else:
            import jax
            if np.dtype(dtype) == np.float64:
                jax.config.update("jax_enable_x64", True)
            fn = make_jax(widths, batch, dtype)
            info = {"version": jax.__version__,
                    "devices": [str(d) for d in jax.devices()]}
        conn.send(("ok", info))
    except Exception as exc:  # noqa: BLE001 - any failure: the parent skips this peer
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        n = conn.recv()
        if n is None:
            return
        # untimed calls first: the peer's own thread pool slept while the
        # parent worked, and waking it is no part of a training step
        _timed(fn, max(1, n // 5))
        conn.send(_timed(fn, n))


class PeerProcess:
    """A peer framework timed in its own process; called like a runner."""

    def __init__(self, kind, widths, batch, dtype, threads=None, compiled=False):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_peer_worker, daemon=True,
                                args=(child, kind, widths, batch, dtype, threads,
                                      compiled, _CLOCK[0] is time.process_time))
        self.proc.start()
        status, payload = self.conn.recv()
        if status != "ok":
            self.close()
            raise RuntimeError(payload)
        #: what the worker reports of itself: version, threads
        self.info = payload

    def __call__(self, n):
        # OpenBLAS threads in this process spin for ~0.1 s after their last
        # product before they sleep (2**28 cycles by default); let them go
        # quiet so they do not take a core from the peer while it is timed.
        time.sleep(0.15)
        self.conn.send(n)
        return self.conn.recv()

    def close(self):
        if self.proc.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(timeout=10)
            if self.proc.is_alive():
                self.proc.kill()


#: seconds for an idle OpenBLAS pool's threads to stop spinning (2**28 cycles)
BLAS_SETTLE_S = 0.15


def _runner(fn):
    """A runner times n calls: in-process callables are wrapped here.

    A callable marked ``own_blas_pool`` (the naive Numba port: SciPy's
    OpenBLAS) is timed as the peers are: after NumPy's pool has gone quiet
    and after untimed calls that wake its own pool; its pool then gets the
    same time to go quiet before anything else is timed.
    """
    if isinstance(fn, PeerProcess):
        return fn
    if not getattr(fn, "own_blas_pool", False):
        # Every in-process sample starts once the thread pools that the one
        # before woke have stopped spinning: NumPy's OpenBLAS (~0.1 s) and
        # the OpenMP pool of fastbp's multi-threaded step (libgomp spins
        # ~ms).  Timed right after another implementation, either ran at
        # about half speed on 2 cores (the NumPy step at 5x the floor after
        # fastbp, fastbp at 2x after NumPy: docs/performance.md).
        def quiet(n):
            time.sleep(BLAS_SETTLE_S)
            return _timed(fn, n)
        return quiet

    def run(n):
        time.sleep(BLAS_SETTLE_S)
        _timed(fn, max(1, n // 5))
        t = _timed(fn, n)
        time.sleep(BLAS_SETTLE_S)
        return t
    return run


def measure(impls, repeats, min_time):
    """impls: {name: (fn or PeerProcess, steps_per_call)}.  Round-robin: every
    repeat times each implementation once (order rotated).
    Returns {name: [s/step]}."""
    runners = {name: _runner(fn) for name, (fn, _) in impls.items()}
    loops = {}
    for name, run in runners.items():
        run(2)  # warm-up (compile, caches, allocator)
        loops[name] = max(1, int(min_time / max(run(1), 1e-9)))
    samples = {name: [] for name in impls}
    names = list(impls)
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            steps = impls[name][1]
            n = loops[name]
            samples[name].append(runners[name](n) / (n * steps))
    return samples


def _fmt(sec):
    if sec >= 1e-1:
        return f"{sec:8.3f} s "
    if sec >= 1e-3:
        return f"{sec * 1e3:8.3f} ms"
    return f"{sec * 1e6:8.1f} us"


def _iqr_pct(xs):
    q1, q2, q3 = np.percentile(xs, [25, 50, 75])
    return 100.0 * (q3 - q1) / q2


def _verdict(ratio, target):
    if target is None or ratio is None:
        return ""
    return f"<= {target:<5g} {'PASS' if ratio <= target else 'MISS'}"


# --------------------------------------------------------------------------
# machine info


#: the vector extensions worth knowing for GEMM speed, as /proc/cpuinfo names them
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512bw",
              "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile")


def _dist_version(name):
    """Installed version of distribution ``name`` without importing it, or None."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_facts():
    """The machine, versions and thread counts of this process, as plain data.

    Returns
    -------
    dict
        ``machine`` (CPU model, cores, SIMD flags, the CPU Numba compiles
        for), ``versions`` (python, numpy, numba, fastbp and, where installed,
        scipy, scikit-learn, threadpoolctl, matplotlib, torch, jax; read from
        package metadata, so torch and jax are not imported here) and
        ``threads`` (Numba's, fastbp's view and each BLAS/OpenMP pool that
        threadpoolctl finds).
    """
    import llvmlite.binding as llvm
    import numba

    import fastbp

    try:  # SciPy's BLAS (the naive Numba port's products) lists its pool once loaded
        import scipy.linalg.cython_blas  # noqa: F401
    except ImportError:
        pass

    cpu, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu in ("?", platform.processor()):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        llvm_cpu = llvm.get_host_cpu_name()
        llvm_features = {k for k, on in llvm.get_host_cpu_features().items() if on}
    except Exception:  # noqa: BLE001 - informational only
        llvm_cpu, llvm_features = "?", set()
    if not flags:  # no /proc/cpuinfo: what LLVM detects (same names less "_" and ".")
        flags = llvm_features
    plain = {f.replace("_", "").replace(".", "") for f in flags}
    simd = {f: f.replace("_", "") in plain for f in SIMD_FLAGS}
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    machine = {"cpu": cpu, "logical_cores": os.cpu_count(), "usable_cores": usable,
               "arch": platform.machine(), "platform": platform.platform(),
               "simd": simd,
               "numba_target_cpu": os.environ.get("NUMBA_CPU_NAME", llvm_cpu)}
    versions = {"python": platform.python_version(),
                "fastbp": getattr(fastbp, "__version__", None),
                "numpy": np.__version__, "numba": numba.__version__}
    for label, dist in (("scipy", "scipy"), ("sklearn", "scikit-learn"),
                        ("threadpoolctl", "threadpoolctl"),
                        ("matplotlib", "matplotlib"), ("torch", "torch"),
                        ("jax", "jax"), ("jaxlib", "jaxlib")):
        v = _dist_version(dist)
        if v is not None:
            versions[label] = v
    threads = {"numba": numba.get_num_threads(),
               "numba_max": numba.config.NUMBA_NUM_THREADS,
               "fastbp": fastbp.get_num_threads()}
    try:
        from threadpoolctl import threadpool_info
        threads["pools"] = [
            {"user_api": lib.get("user_api"), "internal_api": lib.get("internal_api"),
             "version": lib.get("version"), "architecture": lib.get("architecture"),
             "num_threads": lib.get("num_threads"),
             "library": os.path.basename(lib.get("filepath") or "")}
            for lib in threadpool_info()]
    except ImportError:
        threads["pools"] = None
    return {"machine": machine, "versions": versions, "threads": threads}


def _blas_threads(facts):
    """The BLAS pools' thread counts, e.g. "2" or "1/2" where they differ."""
    pools = facts["threads"].get("pools") or []
    counts = sorted({p["num_threads"] for p in pools if p["user_api"] == "blas"})
    return "/".join(map(str, counts)) or "?"


def machine_info(facts=None):
    """The header lines of the report (see :func:`machine_facts`)."""
    facts = facts or machine_facts()
    m, v, t = facts["machine"], facts["versions"], facts["threads"]
    lines = [f"date     : {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
             (f"cpu      : {m['cpu']}; {m['logical_cores']} logical cores"
              f" ({m['usable_cores'] or '?'} usable)"),
             "simd     : " + (" ".join(k for k, on in m["simd"].items() if on) or "-")
             + f"; Numba compiles for {m['numba_target_cpu']}",
             f"python   : {v['python']} on {m['platform']}",
             "versions : " + ", ".join(f"{k} {val}" for k, val in v.items()
                                       if k not in ("python", "threadpoolctl",
                                                    "matplotlib", "jaxlib"))]
    if t["pools"] is None:
        lines.append("pool     : threadpoolctl not installed")
    for lib in t["pools"] or []:
        lines.append(f"pool     : {lib['user_api']} {lib['internal_api']} "
                     f"{lib['version']} arch={lib['architecture'] or '-'} "
                     f"threads={lib['num_threads']} ({lib['library']})")
    lines.append(f"threads  : {t['fastbp']}")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(var):
            lines.append(f"WARNING  : {var}={os.environ[var]} is set; it changes which "
                         "OpenBLAS kernels run and skews the comparison with NumPy. "
                         "Unset it to measure.")
    lines.append("peers    : torch and jax are timed in worker processes of their own, "
                 "interleaved with the rest")
    return lines


# --------------------------------------------------------------------------
# the extra checks: digits epoch vs scikit-learn, cold/warm start, allocation


def digits_epoch(repeats, dtype="float32"):
    import fastbp as fb
    from fastbp.datasets import load_digits
    X, y = load_digits(dtype=dtype)
    model = fb.MLP([64, 128, 10], activation="relu", dtype=dtype, seed=0)
    model.fit(X, y, epochs=1, batch_size=32, optimizer=fb.SGD(lr=LR, momentum=MOMENTUM))
    impls = {"fastbp": (lambda: model.fit(X, y, epochs=1, batch_size=32), 1)}
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
        Xs = X.astype(np.float64)

        def sk():
            clf = MLPClassifier(hidden_layer_sizes=(128,), solver="sgd", batch_size=32,
                                learning_rate_init=LR, momentum=MOMENTUM, nesterovs_momentum=False,
                                max_iter=1, shuffle=True, random_state=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(Xs, y)
        impls["sklearn"] = (sk, 1)
    except ImportError:
        pass
    return measure(impls, repeats, 0.05)


def output_epochs(repeats, dtype="float32", widths=(64, 128, 10), n=2048, batch=32):
    """One epoch of ``fit`` per output kind, same hidden layers, interleaved.

    "softmax" (k classes, integer labels) against "sigmoid-multilabel" (k
    labels, a 0/1 indicator matrix), and "softmax-2class" against
    "sigmoid-binary" (one logistic unit, as scikit-learn's binary MLP).
    """
    import fastbp as fb
    rng = np.random.default_rng(0)
    widths = list(widths)
    k = widths[-1]
    X = rng.standard_normal((n, widths[0])).astype(dtype)
    labels = rng.integers(0, k, n)
    indicator = (rng.random((n, k)) < 0.3).astype(dtype)
    binary = rng.integers(0, 2, n)
    setups = {
        "softmax": (widths, "softmax", labels),
        "sigmoid-multilabel": (widths, "sigmoid", indicator),
        "softmax-2class": (widths[:-1] + [2], "softmax", binary),
        "sigmoid-binary": (widths[:-1] + [1], "sigmoid", binary),
    }
    impls = {}
    for name, (w, output, y) in setups.items():
        model = fb.MLP(w, activation="relu", output=output, dtype=dtype, seed=0)
        model.fit(X, y, epochs=1, batch_size=batch, optimizer=fb.SGD(lr=LR, momentum=MOMENTUM))
        impls[name] = (lambda m=model, y=y: m.fit(X, y, epochs=1, batch_size=batch), 1)
    return measure(impls, repeats, 0.05)


# Start-up: each script runs in a fresh interpreter and prints, as its last
# line, "wall cpu": seconds since its first statement (interpreter start
# excluded).  CPU time is what compilation costs; on a shared machine it is far
# steadier than wall time.  The references: `import numba` alone, and the cold
# compile of the naive Numba port of a step (fastbp/_bench_naive.py: one @njit
# per operation, what a user writing the kernels naively waits for).

_START_CLOCKS = "import time as _t\n_w0 = _t.perf_counter(); _c0 = _t.process_time()\n"
STARTUP_REPORT = "print(_t.perf_counter() - _w0, _t.process_time() - _c0)\n"

STARTUP_IMPORT_NUMBA = _START_CLOCKS + "import numba\n" + STARTUP_REPORT

#: import fastbp and the first fit of a float32 ReLU 64-128-10 network
STARTUP_FIRST_FIT = _START_CLOCKS + """
import numpy as np
import fastbp as fb
rng = np.random.default_rng(0)
X = rng.standard_normal((256, 64)).astype(np.float32)
y = rng.integers(0, 10, 256)
m = fb.MLP([64, 128, 10], activation="relu", dtype="float32", seed=0)
m.fit(X, y, epochs=1, batch_size=32, optimizer=fb.SGD(lr=0.01, momentum=0.9))
""" + STARTUP_REPORT

#: after the first fit, each fit that needs something new, timed on its own
STARTUP_EXTRAS = STARTUP_FIRST_FIT + """
import json
_extra = {}
def _timed(name, fn):
    w, c = _t.perf_counter(), _t.process_time()
    fn()
    _extra[name] = (_t.perf_counter() - w, _t.process_time() - c)
def _fit(dtype="float32", activation="relu", optimizer="sgd", output="softmax"):
    Xd = X.astype(dtype)
    yd = y if output == "softmax" else X[:, :1].astype(dtype)
    m = fb.MLP([64, 128, 10 if output == "softmax" else 1], activation=activation,
               output=output, dtype=dtype, seed=0)
    m.fit(Xd, yd, epochs=1, batch_size=32, optimizer=optimizer)
_timed("float64", lambda: _fit(dtype="float64"))
_timed("tanh", lambda: _fit(activation="tanh"))
_timed("adam", lambda: _fit(optimizer="adam"))
_timed("regression", lambda: _fit(output="identity"))
_timed("predict+evaluate", lambda: (m.predict(X), m.evaluate(X, y)))
print("EXTRAS", json.dumps(_extra))
"""

#: the reference: the naive Numba port (fastbp/_bench_naive.py, one @njit per
#: operation and a step calling them), compiled cold.  It caches like fastbp,
#: so the script points Numba at an empty cache directory of its own (removed
#: at the end), and it loads the port by path: importing fastbp is no part of
#: the reference.
STARTUP_NAIVE_STEP = _START_CLOCKS + '''
import importlib.util
import os
import shutil
import sys
import tempfile

_cache = tempfile.mkdtemp(prefix="fastbp-naive-cache-")
os.environ["NUMBA_CACHE_DIR"] = _cache
import numpy as np

_spec = importlib.util.find_spec("fastbp")  # locates fastbp without importing it
_path = os.path.join(os.path.dirname(_spec.origin), "_bench_naive.py")
_spec = importlib.util.spec_from_file_location("fastbp_bench_naive", _path)
naive = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = naive
_spec.loader.exec_module(naive)

rng = np.random.default_rng(0)
f = np.float32
Ws = ((rng.standard_normal((64, 128)) * 0.1).astype(f),
      (rng.standard_normal((128, 10)) * 0.1).astype(f))
bs = (np.zeros(128, f), np.zeros(10, f))
vWs = tuple(np.zeros_like(W) for W in Ws)
vbs = tuple(np.zeros_like(b) for b in bs)
x = rng.standard_normal((32, 64)).astype(f)
y = rng.integers(0, 10, 32)
# the clock restarts here: only the compile (and the one step) is timed
_w0 = _t.perf_counter(); _c0 = _t.process_time()
naive.step(x, y, Ws, bs, vWs, vbs, f(0.01), f(0.9))
''' + STARTUP_REPORT + "shutil.rmtree(_cache, ignore_errors=True)\n"

#: the floor of any warm start through Numba's cache: one trivial cached
#: @njit function loaded from the cache (Numba's typing and target set-up)
STARTUP_TRIVIAL_CACHED = _START_CLOCKS + """
import sys
sys.path.insert(0, sys.argv[1])
from fastbp_trivial import one
one(1)
""" + STARTUP_REPORT

STARTUP_KEYS = ("import numba", "naive step, cold", "fastbp, cold", "fastbp, warm",
                "trivial @njit, warm")


def _run_timed(script, env, args=()):
    """Run a start-up script in a fresh interpreter; (wall, cpu) of its last line
    and its whole output."""
    r = subprocess.run([sys.executable, "-c", script, *args], env=env,
                       capture_output=True, text=True, check=False, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"start-up script failed:\n{r.stderr[-2000:]}")
    lines = r.stdout.strip().splitlines()
    wall, cpu = (float(t) for t in lines[-1].split())
    return wall, cpu, lines


def startup_report(rounds=3, extras=True):
    """Cold and warm start, measured side by side with the references.

    Each round runs, every script in a fresh interpreter, one after the
    other: ``import numba``; the naive Numba step (cold compile, an
    empty cache of its own); import fastbp plus the first fit with an empty cache
    (NUMBA_CACHE_DIR pointed at a fresh directory), then again with that
    cache written; a trivial cached @njit function (the floor of any warm
    start through Numba's cache).  With ``extras`` the cold process then
    times, one by one, first fits that need float64, tanh, Adam and a
    regression loss, and predict + evaluate.

    Returns a dict: each name in STARTUP_KEYS -> list of (wall, cpu)
    seconds, one per round; "extras" -> list of dicts name -> (wall, cpu).
    """
    import json

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    env.pop("NUMBA_CACHE_DIR", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    out = {k: [] for k in STARTUP_KEYS}
    out["extras"] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as mod:
            with open(os.path.join(mod, "fastbp_trivial.py"), "w") as fh:
                fh.write("from numba import njit\n\n\n@njit(cache=True)\ndef one(x):\n"
                         "    return x + 1\n")
            cenv = dict(env, NUMBA_CACHE_DIR=cache)
            out["import numba"].append(_run_timed(STARTUP_IMPORT_NUMBA, env)[:2])
            out["naive step, cold"].append(_run_timed(STARTUP_NAIVE_STEP, env)[:2])
            if extras:
                _, _, lines = _run_timed(STARTUP_EXTRAS + STARTUP_REPORT, cenv)
                out["extras"].append(json.loads(lines[-2].split(" ", 1)[1]))
                out["fastbp, cold"].append(tuple(float(t) for t in lines[0].split()))
            else:
                out["fastbp, cold"].append(_run_timed(STARTUP_FIRST_FIT, cenv)[:2])
            out["fastbp, warm"].append(_run_timed(STARTUP_FIRST_FIT, cenv)[:2])
            _run_timed(STARTUP_TRIVIAL_CACHED, cenv, (mod,))
            out["trivial @njit, warm"].append(
                _run_timed(STARTUP_TRIVIAL_CACHED, cenv, (mod,))[:2])
    return out


def print_startup_report(rep):
    """Print medians and the issue-9 ratios: cold start over the naive step's
    cold compile (target 0.3), warm start over ``import numba`` (target 1.6),
    each on wall and CPU time; the verdict uses CPU time."""
    n = len(rep["import numba"])
    med = {k: np.median(np.array(rep[k]), axis=0) for k in STARTUP_KEYS}
    print(f"   {'':<26}{'wall':>8}{'cpu':>9}   (medians of {n} fresh processes each)")
    for k in STARTUP_KEYS:
        w, c = med[k]
        print(f"   {k:<26}{w:7.2f}s{c:8.2f}s")
    if rep["extras"]:
        for k in rep["extras"][0]:
            w, c = np.median(np.array([e[k] for e in rep["extras"]]), axis=0)
            print(f"   {'  + first ' + k:<26}{w:7.2f}s{c:8.2f}s   "
                  f"{'' if k.startswith('predict') else _verdict(c, 1.0)}")
    for label, num, den, target in (
            ("cold / naive step", "fastbp, cold", "naive step, cold", 0.3),
            ("warm / import numba", "fastbp, warm", "import numba", 1.6),
            ("trivial / import numba", "trivial @njit, warm", "import numba", None)):
        rw = med[num][0] / med[den][0]
        rc = med[num][1] / med[den][1]
        verdict = _verdict(rc, target) if target else "(floor of a warm start)"
        print(f"   {label:<26}{rw:7.2f}x{rc:8.2f}x   {verdict}")


_PROFILE_SCRIPT = """
import time, json
from numba.core import event
rows, stack = [], []
class Listener(event.Listener):
    def on_start(self, ev):
        stack.append([time.process_time(), 0.0])
    def on_end(self, ev):
        t0, child = stack.pop()
        dt = time.process_time() - t0
        f = ev.data["dispatcher"].py_func
        name = f.__module__.rsplit(".", 1)[-1] + "." + f.__qualname__
        args = ", ".join("{}[{}d {}]".format(a.dtype, a.ndim, a.layout)
                         if hasattr(a, "ndim") else str(a).split("(")[0]
                         for a in ev.data["args"])
        rows.append((dt - child, dt, len(stack), name, args))
        if stack:
            stack[-1][1] += dt
with event.install_listener("numba:compile", Listener()):
    exec(compile(SCRIPT, "first_fit", "exec"))
print("PROFILE", json.dumps(rows))
"""


def compile_profile():
    """The cold first fit's compilations, one row per compiled function:
    (own CPU s, CPU s with what it compiled on the way, depth, name, args).
    Runs in a fresh process with an empty cache."""
    import json

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory() as cache:
        env["NUMBA_CACHE_DIR"] = cache
        script = f"SCRIPT = {STARTUP_FIRST_FIT!r}\n" + _PROFILE_SCRIPT
        _, _, lines = _run_timed(script + "print(0, 0)\n", env)
    return json.loads(next(ln for ln in lines if ln.startswith("PROFILE"))[8:])


def print_compile_profile(rows):
    print(f"   {'own cpu':>8} {'with callees':>12}   function (argument types)")
    for own, incl, depth, name, args in rows:
        print(f"   {own:7.2f}s {incl:11.2f}s   {'  ' * depth}{name}({args})")
    print(f"   {sum(r[0] for r in rows):7.2f}s in {len(rows)} compilations")


def startup_times():
    """(cold, warm) wall seconds of import + first fit, each in a fresh process."""
    rep = startup_report(rounds=1, extras=False)
    return rep["fastbp, cold"][0][0], rep["fastbp, warm"][0][0]


def fit_peak_memory(dtype="float32"):
    """tracemalloc peak (bytes) of fit over 1 and 5 epochs (model prepared first)."""
    import fastbp as fb
    X, y = _data((64, 128, 10), 2048, dtype)
    model = fb.MLP([64, 128, 10], activation="relu", dtype=dtype, seed=0)
    opt = fb.SGD(lr=LR, momentum=MOMENTUM)
    model.fit(X, y, epochs=1, batch_size=32, optimizer=opt)
    peaks = []
    for epochs in (1, 5):
        tracemalloc.start()
        model.fit(X, y, epochs=epochs, batch_size=32)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return peaks


# --------------------------------------------------------------------------
# sparse input: a TF-IDF-like CSR problem, fastbp sparse vs dense vs scikit-learn

SPARSE_SHAPE = (4000, 20000)
SPARSE_DENSITY = 0.004
SPARSE_CLASSES = 10
SPARSE_HIDDEN = 100  # scikit-learn's default hidden_layer_sizes=(100,)


def tfidf_like(n=SPARSE_SHAPE[0], d=SPARSE_SHAPE[1], density=SPARSE_DENSITY,
               n_classes=SPARSE_CLASSES, dtype="float32", seed=0):
    """(X, y): CSR rows with about ``density * d`` positive entries each,
    L2-normalised like TF-IDF vectors (Zipf-like column frequencies), and
    labels from a random linear map of X, so there is something to learn."""
    import scipy.sparse as sp
    rng = np.random.default_rng(seed)
    per_row = max(1, round(density * d))
    # column popularity ~ 1 / rank, like word frequencies
    pop = 1.0 / np.arange(1, d + 1)
    pop /= pop.sum()
    parts = [np.unique(rng.choice(d, per_row, p=pop)) for _ in range(n)]
    indptr = np.concatenate([[0], np.cumsum([c.size for c in parts])])
    indices = np.concatenate(parts)
    data = rng.exponential(1.0, indices.size) * np.log(1.0 / pop[indices])
    X = sp.csr_matrix((data, indices, indptr), shape=(n, d))
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    X = sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ X).astype(dtype)
    proj = rng.standard_normal((d, n_classes))
    y = np.argmax(X @ proj, axis=1).astype(np.int64)
    return X, y


def sparse_fit(repeats, dtype="float32", n=SPARSE_SHAPE[0], d=SPARSE_SHAPE[1], epochs=3,
               with_dense=True):
    """Interleaved fit times (seconds) on the TF-IDF-like problem: fastbp on
    CSR X, fastbp on the densified array, scikit-learn's MLPClassifier on
    CSR X; one hidden layer of 100 ReLU units, Adam, batch 200, ``epochs``
    epochs each."""
    import fastbp as fb
    X, y = tfidf_like(n, d, dtype=dtype)
    widths = [d, SPARSE_HIDDEN, SPARSE_CLASSES]

    def fb_fit(data):
        def run():
            m = fb.MLP(widths, activation="relu", dtype=dtype, seed=0, alpha=1e-4)
            m.fit(data, y, epochs=epochs, batch_size=200, optimizer=fb.Adam(lr=1e-3))
        return run

    # measure() runs each once before timing: compile time is not timed
    impls = {"fastbp-sparse": (fb_fit(X), 1)}
    if with_dense:
        Xd = X.toarray()
        impls["fastbp-dense"] = (fb_fit(Xd), 1)
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        def sk():
            clf = MLPClassifier(hidden_layer_sizes=(SPARSE_HIDDEN,), solver="adam",
                                batch_size=200, learning_rate_init=1e-3, alpha=1e-4,
                                max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1,
                                shuffle=True, random_state=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(X, y)
        impls["sklearn-sparse"] = (sk, 1)
    except ImportError:
        pass
    # one untimed call each (compiles fastbp's kernels), then interleaved
    # rounds of one call each: a fit takes seconds, so measure()'s three
    # warm-up calls would triple the run
    names = list(impls)
    for name in names:
        impls[name][0]()
    samples = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            impls[name][0]()
            samples[name].append(time.perf_counter() - t)
    return samples


def report_sparse(repeats, dtype="float32", **kw):
    """Print the sparse section; returns the medians (seconds)."""
    n = kw.get("n", SPARSE_SHAPE[0])
    d = kw.get("d", SPARSE_SHAPE[1])
    epochs = kw.get("epochs", 3)
    print(f"== sparse X: TF-IDF-like CSR {n}x{d}, density {SPARSE_DENSITY:.1%}, "
          f"{d}-{SPARSE_HIDDEN}-{SPARSE_CLASSES} relu, adam, batch 200, {epochs} epochs, "
          f"{dtype}")
    s = sparse_fit(repeats, dtype, **kw)
    med = {k: float(np.median(v)) for k, v in s.items()}
    for k, val in med.items():
        print(f"   {k:<16}{_fmt(val):>12} per fit  IQR {_iqr_pct(s[k]):5.1f}%")
    if "sklearn-sparse" in med:
        r = med["fastbp-sparse"] / med["sklearn-sparse"]
        print(f"   {'sparse/sklearn':<16}{r:8.3f}   {_verdict(r, 0.2)}")
    if "fastbp-dense" in med:
        r = med["fastbp-sparse"] / med["fastbp-dense"]
        print(f"   {'sparse/dense':<16}{r:8.3f}")
    print(flush=True)
    return med


# --------------------------------------------------------------------------


def _installed(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def build_impls(widths, batch, dtype, n_batches, with_torch_compile, threads=None):
    impls = {
        "floor": (make_floor(widths, batch, dtype), 1),
        "fastbp-epoch": (make_fastbp_epoch(widths, batch, dtype, n_batches), n_batches),
        "fastbp-step": (make_fastbp_step(widths, batch, dtype), 1),
        "numpy": (make_numpy(widths, batch, dtype), 1),
        "naive-numba": (make_naive_numba(widths, batch, dtype), 1),
    }
    peers = [("torch", "torch", False), ("jax.jit", "jax", False)]
    if with_torch_compile:
        peers.insert(1, ("torch.compile", "torch", True))
    for label, kind, compiled in peers:
        if not _installed(kind):
            continue
        try:
            impls[label] = (PeerProcess(kind, widths, batch, dtype, threads, compiled), 1)
        except RuntimeError as exc:
            print(f"   ({label} skipped: {exc})")
    return impls


def close_impls(impls):
    for fn, _ in impls.values():
        if isinstance(fn, PeerProcess):
            fn.close()


def _stats(samples):
    """Median and spread (seconds per step) of one implementation's samples."""
    xs = np.asarray(samples, dtype=np.float64)
    q1, med, q3 = np.percentile(xs, [25, 50, 75])
    return {"median_s": float(med), "q1_s": float(q1), "q3_s": float(q3),
            "iqr_pct": float(100.0 * (q3 - q1) / med), "min_s": float(xs.min()),
            "max_s": float(xs.max()), "samples_s": [float(x) for x in xs]}


def _ratio(value, target):
    return {"value": float(value), "target": target,
            "pass": None if target is None else bool(value <= target)}


def epoch_batches(widths, batch):
    """Batches per epoch of the epoch path: up to 32, fewer where that data
    would pass ~1e9 multiply-adds."""
    return max(2, min(32, int(1e9 / max(1, batch * sum(
        a * b for a, b in itertools.pairwise(widths))))))


def run_size(widths, batch, dtype, repeats, min_time, with_torch_compile=False,
             threads=None):
    """Time every implementation of one (network, batch), interleaved.

    Parameters
    ----------
    widths : tuple of int
        Layer widths, input first.
    batch : int
        Rows per step.
    dtype : {"float32", "float64"}
    repeats : int
        Interleaved rounds.
    min_time : float
        Seconds per timed sample.
    with_torch_compile : bool
        Also time ``torch.compile`` (where torch is installed).
    threads : int, optional
        Threads for the peers (torch).

    Returns
    -------
    dict
        ``widths``, ``batch``, ``dtype``, ``epoch_batches``, ``arrangement``
        (:func:`step_arrangement`), ``gflop_per_step`` (the matrix products), ``impls`` (name ->
        :func:`_stats`, in the order timed), ``ratios`` (name -> value,
        target, pass) and ``peers`` (name -> what its worker reported).
    """
    n_batches = epoch_batches(widths, batch)
    impls = build_impls(widths, batch, dtype, n_batches, with_torch_compile, threads)
    try:
        samples = measure(impls, repeats, min_time)
    finally:
        close_impls(impls)
    peers = {k: fn.info for k, (fn, _) in impls.items() if isinstance(fn, PeerProcess)}
    med = {k: float(np.median(v)) for k, v in samples.items()}
    t_floor, t_torch = TARGETS.get((tuple(widths), batch), (None, None))
    fast = med["fastbp-epoch"]
    ratios = {"fastbp/floor": _ratio(fast / med["floor"], t_floor),
              "fastbp/numpy": _ratio(fast / med["numpy"], NUMPY_TARGET),
              "fastbp/naive-numba": _ratio(fast / med["naive-numba"], NAIVE_TARGET)}
    if "torch" in med:
        ratios["fastbp/torch"] = _ratio(fast / med["torch"], t_torch)
    if "jax.jit" in med:
        ratios["fastbp/jax"] = _ratio(fast / med["jax.jit"], None)
    ratios["step/floor"] = _ratio(med["fastbp-step"] / med["floor"], None)
    return {"widths": list(widths), "batch": batch, "dtype": str(np.dtype(dtype)),
            "epoch_batches": n_batches, "arrangement": step_arrangement(widths, batch),
            "gflop_per_step": step_flops(widths, batch) / 1e9,
            "impls": {k: _stats(v) for k, v in samples.items()},
            "ratios": ratios, "peers": peers}


def print_size(res):
    """Print one size's table and ratios (a :func:`run_size` result)."""
    med = {k: v["median_s"] for k, v in res["impls"].items()}
    name = "-".join(map(str, res["widths"]))
    print(f"== {name}, batch {res['batch']} (epoch path: {res['epoch_batches']} "
          f"batches/epoch; steps: {res['arrangement']})")
    print(f"   {'impl':<14}{'median':>12}{'IQR%':>7}   {'x floor':>8}")
    for k, st in res["impls"].items():
        print(f"   {k:<14}{_fmt(st['median_s']):>12}{st['iqr_pct']:6.1f}%   "
              f"{st['median_s'] / med['floor']:8.2f}")
    for label, r in res["ratios"].items():
        print(f"   {label:<19}{r['value']:8.3f}   {_verdict(r['value'], r['target'])}")
    gflops = res["gflop_per_step"]
    print(f"   {'GFLOP/s':<19}{gflops / med['fastbp-epoch']:8.1f}   fastbp epoch path "
          f"({gflops / med['floor']:.1f} floor; products only)")


#: what the JSON file's "format" says; bump it when keys change meaning
JSON_FORMAT = "fastbp-bench/1"


def bench_document(results, settings, facts):
    """The JSON document of a run: settings, machine, versions, threads and
    the per-size results of :func:`run_size`."""
    facts = {k: dict(v) for k, v in facts.items()}
    for res in results:  # the peers' own versions and threads, from their workers
        for label, info in res.get("peers", {}).items():
            kind = label.split(".")[0]
            if info and info.get("version"):
                facts["versions"].setdefault(kind, info["version"])
            if info and "threads" in info:
                facts["threads"].setdefault(kind, info["threads"])
    now = datetime.datetime.now(datetime.UTC)
    return {"format": JSON_FORMAT, "created_utc": now.isoformat(timespec="seconds"),
            "settings": settings, **facts,
            "targets": {"fastbp/numpy": NUMPY_TARGET,
                        "fastbp/naive-numba": NAIVE_TARGET,
                        "fastbp/floor and fastbp/torch": {
                            f"{'-'.join(map(str, w))}:{b}": list(t)
                            for (w, b), t in TARGETS.items()}},
            "results": results}


def _write_atomic(path, write, what):
    """Write ``path`` through a temporary file in its directory, then rename.

    ``write(fh)`` writes the content to a binary file object.  Raises
    OSError naming ``what`` and the path when anything fails; the target
    is then left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fastbp-bench-",
                                   suffix=os.path.splitext(path)[1])
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp, 0o666 & ~mask)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as exc:
        raise OSError(f"cannot write the {what} file {path!r}: "
                      f"{exc.strerror or exc}") from exc


def _finite_or_none(obj):
    """``obj`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def write_json(doc, path):
    """Write a :func:`bench_document` to ``path`` atomically (strict JSON:
    a non-finite figure becomes null)."""
    import json

    data = (json.dumps(_finite_or_none(doc), indent=1, allow_nan=False) + "\n").encode()
    _write_atomic(path, lambda fh: fh.write(data), "--json")


#: bars of the chart, in order: result key -> legend label
PLOT_BARS = {"fastbp-epoch": "fastbp (epoch path)", "floor": "GEMM floor",
             "numpy": "NumPy step", "naive-numba": "naive Numba port",
             "torch": "PyTorch eager", "torch.compile": "torch.compile",
             "jax.jit": "jax.jit"}


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib, which is not installed: "
                          "pip install 'fastbp[plot]' (or matplotlib)") from exc


def plot_results(doc, path):
    """Save a grouped bar chart of the step times of a :func:`bench_document`.

    One group per (network, batch), one bar per implementation measured
    (median, with the interquartile range as error bar), a logarithmic time
    axis where the times span more than a factor of 30.  Drawn with the Agg
    canvas (no display, no change of pyplot's backend) and saved atomically
    in the format that the file's extension names (PNG for ``.png``).
    """
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    results = doc["results"]
    bars = [k for k in PLOT_BARS if any(k in r["impls"] for r in results)]
    n_groups = len(results)
    fig = Figure(figsize=(max(6.4, 1.0 + n_groups * (0.45 * len(bars) + 0.6)), 4.8),
                 dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(bars))
    x = np.arange(n_groups)
    colors = {"fastbp-epoch": "#1f77b4", "floor": "#7f7f7f", "numpy": "#ff7f0e",
              "naive-numba": "#2ca02c", "torch": "#d62728", "torch.compile": "#e377c2",
              "jax.jit": "#9467bd"}
    all_t = []
    for j, key in enumerate(bars):
        med, lo, hi, xs = [], [], [], []
        for g, r in enumerate(results):
            st = r["impls"].get(key)
            if st is None:
                continue
            xs.append(x[g] + (j - (len(bars) - 1) / 2) * width)
            med.append(st["median_s"])
            lo.append(st["median_s"] - st["q1_s"])
            hi.append(st["q3_s"] - st["median_s"])
        all_t += med
        ax.bar(xs, med, width, yerr=[lo, hi], capsize=2, label=PLOT_BARS[key],
               color=colors.get(key), error_kw={"elinewidth": 0.8, "alpha": 0.7})
    if all_t and max(all_t) / max(min(all_t), 1e-12) > 30:
        ax.set_yscale("log")
    ax.yaxis.set_major_formatter(EngFormatter(unit="s"))
    labels = []
    for r in results:
        ratio = r["ratios"]
        labels.append(f"{'-'.join(map(str, r['widths']))}\nbatch {r['batch']}\n"
                      f"{ratio['fastbp/numpy']['value']:.2f}x NumPy, "
                      f"{ratio['fastbp/naive-numba']['value']:.2f}x naive")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlabel("network (layer widths) and batch; fastbp's time as a multiple of "
                  "NumPy's and the naive port's", fontsize=8)
    st = doc["settings"]
    clock = "CPU time" if st.get("clock") == "process cpu" else "time"
    ax.set_ylabel(f"{clock} per training step (median, IQR)")
    m, t = doc["machine"], doc["threads"]
    cpu = m["cpu"] if len(m["cpu"]) <= 48 else m["cpu"][:45] + "..."
    ax.set_title(f"fastbp bench: one training step, {st['dtype']}, "
                 f"{clock if clock != 'time' else 'wall time'}, "
                 f"medians of {st['repeats']} interleaved rounds\n"
                 f"{cpu}, {m['usable_cores'] or m['logical_cores']} cores; threads: "
                 f"Numba {t['numba']}, BLAS {_blas_threads(doc)}", fontsize=10)
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(4, len(bars)), loc="upper left")
    ax.margins(y=0.25)
    fig.tight_layout()
    fmt = os.path.splitext(os.fspath(path))[1][1:].lower() or "png"
    _write_atomic(path, lambda fh: fig.savefig(fh, format=fmt), "--plot")


def _check_output(parser, flag, path, formats=None):
    """Fail before any timing when ``path`` cannot be written (argparse error
    naming the flag and the path)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    why = None
    if os.path.isdir(path):
        why = "it is a directory"
    elif not os.path.isdir(folder):
        why = f"no such directory {folder!r}"
    elif formats is not None and os.path.splitext(path)[1][1:].lower() not in formats:
        why = (f"unknown image format {os.path.splitext(path)[1]!r}; "
               f"use one of {', '.join('.' + f for f in sorted(formats))}")
    else:
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            why = f"the directory is not writable ({exc.strerror or exc})"
    if why:
        parser.error(f"argument {flag}: cannot write {path!r}: {why}")


def main(argv=None):
    p = argparse.ArgumentParser(prog="fastbp bench", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=None,
                   help='networks and batches, e.g. "64-128-10:32,784-256-128-10:64"')
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 15)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds per timed sample (default 0.05)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for fastbp (Numba + BLAS) and torch")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--torch-compile", action="store_true", help="also time torch.compile")
    p.add_argument("--no-extras", action="store_true",
                   help="skip digits-vs-sklearn, startup and allocation checks")
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    p.add_argument("--sparse-only", action="store_true",
                   help="only the sparse-input section (TF-IDF-like CSR X)")
    p.add_argument("--cpu-time", action="store_true",
                   help="time by process CPU time, not wall time (each peer by its "
                        "worker's): steadier on a loaded machine; meaningful with "
                        "--threads 1")
    p.add_argument("--phases", action="store_true",
                   help="also time each phase of a step (gather, GEMMs, activations, loss, "
                        "deltas, update) for every size")
    p.add_argument("--activation-sizes", default=None,
                   help="networks for the tanh/sigmoid vs relu section (default "
                        f'"{QUICK_SIZES}"; "none" skips it)')
    p.add_argument("--startup", type=int, metavar="ROUNDS", default=None,
                   help="only the start-up report (cold and warm start against the "
                        "references), over ROUNDS rounds of fresh processes")
    p.add_argument("--compile-profile", action="store_true",
                   help="only list what the cold first fit compiles, with CPU time each")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="also write the step timings (median and spread of each "
                        "implementation, ratios per size), machine, versions and "
                        "thread counts to FILE as JSON")
    p.add_argument("--plot", metavar="FILE.png", default=None,
                   help="also save a grouped bar chart of the step times per size to "
                        "FILE.png (needs matplotlib: the [plot] extra)")
    args = p.parse_args(argv)
    if args.json is not None:
        _check_output(p, "--json", args.json)
    if args.plot is not None:
        try:
            _require_matplotlib()
        except ImportError as exc:
            p.error(f"argument --plot: {exc}")
        from matplotlib.figure import Figure
        _check_output(p, "--plot", args.plot,
                      set(Figure().canvas.get_supported_filetypes()))
    if (args.json or args.plot) and (args.startup is not None or args.compile_profile
                                     or args.sparse_only):
        p.error("--json and --plot write the step timings: they do not go with "
                "--startup, --compile-profile or --sparse-only")
    if args.compile_profile:
        print("fastbp bench --compile-profile: functions compiled by import + first fit "
              "(64-128-10 float32), empty cache, fresh process")
        print_compile_profile(compile_profile())
        return 0
    if args.startup is not None:
        print("fastbp bench --startup: import + first fit (64-128-10 float32) in fresh "
              "processes, against `import numba` and the naive Numba port's cold "
              "compile")
        print_startup_report(startup_report(rounds=max(1, args.startup)))
        return 0

    repeats = args.repeats or (5 if args.quick else 15)
    min_time = args.min_time if args.min_time is not None else (0.02 if args.quick else 0.05)
    sizes = parse_sizes(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES))

    import fastbp as fb
    if args.threads:
        fb.set_num_threads(args.threads)
    sparse_kw = {"n": 1000, "epochs": 1} if args.quick else {}
    _CLOCK[0] = time.process_time if args.cpu_time else time.perf_counter
    if args.sparse_only:
        report_sparse(args.repeats or (3 if args.quick else 5), args.dtype, **sparse_kw)
        return 0

    print("fastbp bench: one training step (forward, softmax-CE, backward, "
          f"SGD momentum), {args.dtype}, medians of {repeats} interleaved rounds"
          f"{' (process CPU time)' if args.cpu_time else ''}")
    facts = machine_facts()
    for line in machine_info(facts):
        print(line)
    print()

    results = []
    for widths, batch in sizes:
        res = run_size(widths, batch, args.dtype, repeats, min_time, args.torch_compile,
                       args.threads)
        results.append(res)
        print_size(res)
        print(flush=True)
        if args.phases:
            phase_table(widths, batch, args.dtype, repeats, min_time)
            print(flush=True)
    if args.json or args.plot:
        settings = {"dtype": args.dtype, "repeats": repeats, "min_time_s": min_time,
                    "clock": "process cpu" if args.cpu_time else "wall",
                    "threads_requested": args.threads,
                    "sizes": ",".join(f"{'-'.join(map(str, w))}:{b}" for w, b in sizes),
                    "argv": list(sys.argv[1:] if argv is None else argv)}
        doc = bench_document(results, settings, facts)
        failed = False
        for path, write in ((args.json, write_json), (args.plot, plot_results)):
            if path is None:
                continue
            try:
                write(doc, path)
                print(f"wrote {path}", flush=True)
            except OSError as exc:
                print(f"fastbp bench: error: {exc}", file=sys.stderr, flush=True)
                failed = True
        if failed:
            return 1
        print()

    act_sizes = args.activation_sizes or QUICK_SIZES
    if act_sizes.strip().lower() != "none":
        print("== tanh and sigmoid networks against the same ReLU network "
              "(epoch path, per step)")
        for (widths, batch), samples in activation_ratios(
                parse_sizes(act_sizes), args.dtype, repeats, min_time).items():
            med = {k: float(np.median(v)) for k, v in samples.items()}
            name = "-".join(map(str, widths))
            print(f"   {name}, batch {batch}: relu {_fmt(med['relu']).strip()}, "
                  f"tanh {_fmt(med['tanh']).strip()}, sigmoid {_fmt(med['sigmoid']).strip()}")
            for act in ("tanh", "sigmoid"):
                r = med[act] / med["relu"]
                print(f"   {act + '/relu':<14}{r:8.3f}   {_verdict(r, 1.25)}")
        print(flush=True)

    if not args.no_extras:
        print("== digits epoch: fastbp MLP.fit vs scikit-learn MLPClassifier (64-128-10, b32)")
        s = digits_epoch(max(3, repeats // 3))
        med = {k: float(np.median(v)) for k, v in s.items()}
        for k, v in med.items():
            print(f"   {k:<14}{_fmt(v):>12} per epoch")
        if "sklearn" in med:
            r = med["fastbp"] / med["sklearn"]
            print(f"   {'fastbp/sklearn':<14}{r:8.3f}   {_verdict(r, 0.2)}")
        print(flush=True)
        print("== output kinds: fit epoch, 64-128-k, b32, 2048 rows (sigmoid vs softmax)")
        s = output_epochs(max(3, repeats // 3), args.dtype)
        med = {k: float(np.median(v)) for k, v in s.items()}
        for k, v in med.items():
            print(f"   {k:<20}{_fmt(v):>12} per epoch")
        for label, a, b in (("multilabel/softmax", "sigmoid-multilabel", "softmax"),
                            ("binary/2-class", "sigmoid-binary", "softmax-2class")):
            r = med[a] / med[b]
            print(f"   {label:<20}{r:8.3f}   {_verdict(r, 1.0)}")
        print(flush=True)
        print("== start-up: import + first fit (64-128-10 float32), fresh processes; "
              "issue 9 ratios")
        print_startup_report(startup_report(rounds=max(1, min(3, repeats // 5))))
        print()
        report_sparse(max(3, repeats // 3), args.dtype, **sparse_kw)
        print("== steady-state allocation of fit (tracemalloc peak, 64-128-10, b32, 2048 rows)")
        p1, p5 = fit_peak_memory(args.dtype)
        grows = p5 > p1 + 4096
        print(f"   1 epoch {p1 / 1024:9.1f} KiB   5 epochs {p5 / 1024:9.1f} KiB   "
              f"{'GROWS' if grows else 'flat: PASS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
