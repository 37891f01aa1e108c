"""Smoke tests of the benchmark code: it runs, prints ratios; no timing asserts."""

import importlib
import inspect
import itertools

import pytest

from fastbp import bench


def test_bench_main_tiny(capsys):
    rc = bench.main(["--sizes", "8-16-4:8", "--repeats", "2", "--min-time", "0.001",
                     "--no-extras", "--activation-sizes", "8-16-4:8", "--phases"])
    assert rc == 0
    out = capsys.readouterr().out
    for word in ("fastbp/floor", "fastbp/numpy", "floor", "numpy", "cpu", "pool",
                 "tanh/relu", "sigmoid/relu", "backward GEMMs", "sum of phases"):
        assert word in out


def test_parse_sizes():
    assert bench.parse_sizes("64-128-10:32, 784-256-10:64") == [
        ((64, 128, 10), 32), ((784, 256, 10), 64)]
    with pytest.raises(ValueError):
        bench.parse_sizes("64")


def test_numpy_reference_learns():
    import numpy as np
    X, y = bench._data((8, 16, 3), 64, "float32")
    net = bench.NumpyMLP((8, 16, 3), "float32")
    first = net.step(X, y)
    for _ in range(50):
        last = net.step(X, y)
    assert last < first
    assert all(W.dtype == np.float32 for W, _ in net.params)


TINY = {"batch": [4], "width": [8], "classes": [3], "n": [50], "epochs": [1]}


def _run_class(cls):
    names = getattr(cls, "param_names", [])
    grid = []
    for name, values in zip(names, getattr(cls, "params", [])):
        grid.append(TINY.get(name, values))
    for combo in itertools.product(*grid) if grid else [()]:
        obj = cls()
        args = list(combo)
        if hasattr(obj, "setup_cache"):
            if cls.__name__ == "EpochSuite":
                obj.n_rows = 16
            args = [obj.setup_cache()] + args
        if hasattr(obj, "setup"):
            obj.setup(*args)
        for meth in dir(obj):
            if meth.startswith(("time_", "peakmem_")):
                getattr(obj, meth)(*combo)


@pytest.mark.parametrize("module", ["bench_kernels", "bench_network"])
def test_asv_benchmarks_run_once(module):
    mod = importlib.import_module(f"asv_benchmarks.{module}")
    classes = [c for _, c in inspect.getmembers(mod, inspect.isclass)
               if c.__module__ == mod.__name__]
    assert classes
    for cls in classes:
        _run_class(cls)


def test_asv_timeraw_sources_compile():
    from asv_benchmarks.bench_startup import StartupSuite
    obj = StartupSuite()
    for meth in dir(obj):
        if meth.startswith("timeraw_"):
            compile(getattr(obj, meth)(), meth, "exec")


def test_asv_timeraw_sources_print_nothing():
    """asv's timeraw reads the script's stdout as the measured time: a script
    that prints its own timings fails every round (seen in CI)."""
    from asv_benchmarks.bench_startup import StartupSuite
    obj = StartupSuite()
    for meth in dir(obj):
        if meth.startswith("timeraw_"):
            assert "print(" not in getattr(obj, meth)(), meth


def test_asv_sparse_suite_runs_tiny(monkeypatch):
    from asv_benchmarks.bench_sparse import SparseFitSuite
    monkeypatch.setattr(SparseFitSuite, "n_rows", 250)
    monkeypatch.setattr(SparseFitSuite, "n_cols", 300)
    obj = SparseFitSuite()
    data = obj.setup_cache()
    for impl in SparseFitSuite.params[0]:
        obj.setup(data, impl)
        obj.time_fit(impl)


def test_bench_sparse_section_tiny(capsys):
    med = bench.report_sparse(1, n=250, d=300, epochs=1)
    assert set(med) >= {"fastbp-sparse", "fastbp-dense"}
    out = capsys.readouterr().out
    assert "sparse/dense" in out


def test_startup_report_prints_ratios(monkeypatch, capsys):
    """The report's arithmetic and layout, on made-up timings (running the
    real scripts takes a minute of compilation)."""
    rep = {k: [(1.0, 0.5), (3.0, 1.5)] for k in bench.STARTUP_KEYS}
    rep["naive step, cold"] = [(10.0, 4.0), (10.0, 4.0)]
    rep["extras"] = [{"float64": (2.0, 1.0)}, {"float64": (4.0, 3.0)}]
    bench.print_startup_report(rep)
    out = capsys.readouterr().out
    assert "cold / naive step" in out and "warm / import numba" in out
    assert "0.20x" in out and "0.25x" in out  # cold: 2/10 wall, 1/4 cpu
    assert "first float64" in out and "MISS" in out  # 2.0 s CPU > 1 s


def test_compile_profile_prints(capsys):
    rows = [(0.5, 0.5, 1, "activations.bias_activation", "float32[2d C]"),
            (1.0, 1.5, 0, "network.forward", "float32[1d C]")]
    bench.print_compile_profile(rows)
    out = capsys.readouterr().out
    assert "network.forward(float32[1d C])" in out and "1.50s in 2 compilations" in out


def test_output_epochs_runs():
    samples = bench.output_epochs(1, widths=(8, 16, 3), n=64, batch=8)
    assert set(samples) == {"softmax", "sigmoid-multilabel", "softmax-2class",
                            "sigmoid-binary"}
