"""Smoke tests of the benchmark code: it runs, prints ratios; no timing asserts."""

import importlib
import importlib.util
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


def test_step_arrangement_follows_the_rule():
    """The arrangement the bench prints is the one the steps take
    (784-256-128-10 on 2 threads: blocks of W up to 120 rows, batch rows
    from 121; see tests/test_threads.py)."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs a Numba thread pool of 2 or more")
    old = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        w = (784, 256, 128, 10)
        assert bench.step_arrangement((64, 128, 10), 32) == "one thread"
        assert bench.step_arrangement(w, 120) == "split by blocks of W, 2 threads"
        assert bench.step_arrangement(w, 121) == "split by batch rows, 2 threads"
    finally:
        numba.set_num_threads(old)


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


# -- issue 16: the naive Numba port, --json and --plot -------------------------


def _has_matplotlib():
    return importlib.util.find_spec("matplotlib") is not None


TINY_RUN = ["--sizes", "8-16-4:8", "--repeats", "2", "--min-time", "0.001",
            "--no-extras", "--activation-sizes", "none"]


@pytest.fixture(scope="module")
def tiny_outputs(tmp_path_factory):
    """One tiny run that writes --json (and --plot where matplotlib is)."""
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("bench_out")
    argv = TINY_RUN + ["--json", str(folder / "bench.json")]
    if _has_matplotlib():
        argv += ["--plot", str(folder / "bench.png")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = bench.main(argv)
    return rc, out.getvalue(), folder


def test_bench_prints_naive_numba_ratios(tiny_outputs):
    rc, out, _ = tiny_outputs
    assert rc == 0
    for word in ("naive-numba", "fastbp/naive-numba", "<= 0.85", "fastbp/numpy",
                 "<= 0.75", "simd"):
        assert word in out


def test_bench_json_has_the_figures(tiny_outputs):
    import json
    import math

    rc, _, folder = tiny_outputs
    assert rc == 0
    doc = json.loads((folder / "bench.json").read_text())
    assert doc["format"] == bench.JSON_FORMAT
    assert {"settings", "machine", "versions", "threads", "targets",
            "results"} <= set(doc)
    assert {"cpu", "logical_cores", "simd"} <= set(doc["machine"])
    assert {"avx2", "avx512f"} <= set(doc["machine"]["simd"])
    assert {"python", "numpy", "numba", "fastbp"} <= set(doc["versions"])
    assert doc["threads"]["numba"] >= 1 and "pools" in doc["threads"]
    assert doc["settings"]["dtype"] == "float32" and doc["settings"]["repeats"] == 2
    (res,) = doc["results"]
    assert (res["widths"], res["batch"], res["dtype"]) == ([8, 16, 4], 8, "float32")
    assert res["arrangement"] == "one thread"  # 6 kFLOP a step: never split
    for impl in ("fastbp-epoch", "fastbp-step", "floor", "numpy", "naive-numba"):
        st = res["impls"][impl]
        assert 0 < st["q1_s"] <= st["median_s"] <= st["q3_s"]
        assert len(st["samples_s"]) == 2
    ratios = res["ratios"]
    assert ratios["fastbp/numpy"]["target"] == 0.75
    assert ratios["fastbp/naive-numba"]["target"] == 0.85
    med = {k: v["median_s"] for k, v in res["impls"].items()}
    assert math.isclose(ratios["fastbp/naive-numba"]["value"],
                        med["fastbp-epoch"] / med["naive-numba"])
    assert ratios["fastbp/numpy"]["pass"] == (ratios["fastbp/numpy"]["value"] <= 0.75)
    # written atomically: no temporary file left beside it
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


@pytest.mark.skipif(not _has_matplotlib(), reason="matplotlib is not installed")
def test_bench_plot_writes_png(tiny_outputs):
    rc, out, folder = tiny_outputs
    assert rc == 0
    data = (folder / "bench.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert f"wrote {folder / 'bench.png'}" in out


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    with pytest.raises(SystemExit) as exc:
        bench.main(TINY_RUN + ["--plot", str(tmp_path / "x.png")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--plot needs matplotlib" in err and "fastbp[plot]" in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("where", ["missing-dir", "directory"])
def test_unwritable_output_names_the_path(tmp_path, capsys, where):
    path = tmp_path / "no" / "such" / "out.json" if where == "missing-dir" else tmp_path
    with pytest.raises(SystemExit) as exc:  # before any timing
        bench.main(TINY_RUN + ["--json", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--json" in err and repr(str(path)) in err


def test_write_json_error_names_the_path(tmp_path):
    import json

    path = tmp_path / "gone" / "out.json"
    with pytest.raises(OSError, match=r"cannot write the --json file .*gone.*out"):
        bench.write_json({"a": 1}, path)
    bench.write_json({"a": 1}, tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left
    bench.write_json({"r": [1.5, float("nan")], "s": {"t": float("inf")}},
                     tmp_path / "out.json")  # strict JSON: null, not NaN
    assert json.loads((tmp_path / "out.json").read_text()) == {"r": [1.5, None],
                                                               "s": {"t": None}}


def _made_up_document(impls, medians):
    results = []
    for widths, batch, scale in medians:
        st = {k: {"median_s": scale * m, "q1_s": 0.9 * scale * m,
                  "q3_s": 1.1 * scale * m} for k, m in impls.items()}
        ratio = {k: {"value": impls["fastbp-epoch"] / impls[o], "target": None}
                 for k, o in (("fastbp/numpy", "numpy"),
                              ("fastbp/naive-numba", "naive-numba"))}
        results.append({"widths": widths, "batch": batch, "impls": st,
                        "ratios": ratio})
    return {"settings": {"dtype": "float64", "repeats": 3, "clock": "wall"},
            "machine": {"cpu": "A CPU with a very long model name " * 3,
                        "usable_cores": 2, "logical_cores": 4},
            "threads": {"numba": 2, "pools": [
                {"user_api": "blas", "num_threads": 2},
                {"user_api": "blas", "num_threads": 1}]},
            "results": results}


@pytest.mark.skipif(not _has_matplotlib(), reason="matplotlib is not installed")
@pytest.mark.parametrize("spread", [1.0, 1000.0])  # linear and log time axis
def test_plot_results_draws_every_kind_of_bar(tmp_path, spread):
    impls = {"fastbp-epoch": 1e-4, "floor": 0.9e-4, "numpy": 2e-4,
             "naive-numba": 1.5e-4, "torch": 5e-4, "jax.jit": 3e-4}
    doc = _made_up_document(impls, [((8, 16, 4), 8, 1.0), ((64, 128, 10), 32, spread)])
    bench.plot_results(doc, tmp_path / "chart.svg")
    svg = (tmp_path / "chart.svg").read_text()
    for label in ("naive Numba port", "NumPy step", "PyTorch eager", "jax.jit",
                  "BLAS 1/2", "float64"):
        assert label in svg


@pytest.mark.parametrize("widths", [(8, 16, 3), (8, 16, 12, 3), (5, 3)])
def test_naive_numba_step_matches_numpy_reference(widths):
    """One float64 step from the same initial parameters: same loss, same
    updated parameters and velocities as the NumPy reference step."""
    import numpy as np

    X, y = bench._data(widths, 16, "float64")
    ref = bench.NumpyMLP(widths, "float64")
    naive = bench.NaiveNumbaMLP(widths, "float64")
    for (W, b), (W2, b2) in zip(ref.params, naive.params):
        np.testing.assert_array_equal(W, W2)
    loss_ref = ref.step(X, y)
    loss = naive.step(X, y)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-12)
    for (W, b), (W2, b2) in zip(ref.params, naive.params):
        np.testing.assert_allclose(W2, W, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(b2, b, rtol=1e-10, atol=1e-13)
    for (vW, vb), (vW2, vb2) in zip(ref.vel, naive.vel):
        np.testing.assert_allclose(vW2, vW, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(vb2, vb, rtol=1e-10, atol=1e-13)
    # the step moved every layer's weights
    init = bench._init_params(widths, "float64")
    for (W2, _), (W0, _) in zip(naive.params, init):
        assert not np.array_equal(W2, W0)


def test_naive_numba_float32_stays_float32():
    import numpy as np

    X, y = bench._data((8, 16, 3), 16, "float32")
    naive = bench.NaiveNumbaMLP((8, 16, 3), "float32")
    first = naive.step(X, y)
    for _ in range(30):
        last = naive.step(X, y)
    assert last < first
    assert all(W.dtype == np.float32 and b.dtype == np.float32 for W, b in naive.params)
