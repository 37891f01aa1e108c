"""The `fastbp` command (in-process through fastbp.cli.main, plus one subprocess)."""

import subprocess
import sys

import numpy as np
import pytest

import fastbp as fb
from fastbp.cli import main


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastbp: error: "), err
    return err[0]


def test_train_save_predict_evaluate(tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert main(["train", "--epochs", "3", "--layers", "32", "--out", str(model),
                 "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("epoch ") == 3 and "val_acc" in out and model.exists()
    X, y = fb.load_digits(dtype="float32")
    np.savez(tmp_path / "d.npz", X=X[:100], y=y[:100])
    assert main(["evaluate", str(model), "--data", str(tmp_path / "d.npz")]) == 0
    line = capsys.readouterr().out
    assert "accuracy" in line and float(line.split("accuracy")[1].split()[0]) > 0.8
    preds = tmp_path / "p.csv"
    assert main(["predict", str(model), "--data", str(tmp_path / "d.npz"), "--out", str(preds)]) == 0
    p = np.loadtxt(preds, dtype=int)
    assert p.shape == (100,) and np.mean(p == y[:100]) > 0.8


def test_csv_regression_and_predict_drops_target(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.1
    csv = tmp_path / "r.csv"
    np.savetxt(csv, np.c_[X, y], delimiter=",", header="a,b,c,t", comments="")
    model = tmp_path / "r.npz"
    assert main(["train", "--data", str(csv), "--target", "t", "--epochs", "20", "--lr", "0.01",
                 "--out", str(model), "--no-progress"]) == 0
    assert "regression" in capsys.readouterr().out
    assert main(["evaluate", str(model), "--data", str(csv), "--target", "t"]) == 0
    assert "r2" in capsys.readouterr().out
    assert main(["predict", str(model), "--data", str(csv), "--target", "t"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 200


@pytest.mark.parametrize("argv", [
    ["train", "--layers", "a,b"],
    ["train", "--epochs", "0"],
    ["train", "--lr", "-1"],
    ["train", "--validation-split", "1.5"],
    ["train", "--optimizer", "lbfgs"],
    ["train", "--bogus"],
    ["train", "--data", "/no/such/file.csv"],
    ["predict", "/no/such/model.npz", "--data", "x.csv"],
])
def test_errors_are_one_line_exit_2(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2
    _one_error_line(capsys)


def test_bad_file_contents(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n4,five,6\n")
    assert main(["train", "--data", str(bad)]) == 2
    _one_error_line(capsys)
    txt = tmp_path / "x.txt"
    txt.write_text("hello")
    assert main(["train", "--data", str(txt)]) == 2
    _one_error_line(capsys)


def test_wrong_feature_count(tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert main(["train", "--epochs", "1", "--out", str(model), "--no-progress"]) == 0
    np.save(tmp_path / "x.npy", np.zeros((5, 7)))
    assert main(["predict", str(model), "--data", str(tmp_path / "x.npy")]) == 2
    assert "expects 64" in _one_error_line(capsys)


def test_plot(tmp_path, capsys):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert main(["train", "--epochs", "1", "--plot", str(tmp_path / "c.png")]) == 2
        assert "matplotlib" in _one_error_line(capsys)
        pytest.skip("matplotlib not installed: checked the error only")
    png = tmp_path / "c.png"
    assert main(["train", "--epochs", "2", "--plot", str(png), "--no-progress"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_python_dash_m(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fastbp", "train", "--epochs", "1",
                        "--layers", "16"], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0 and "epoch   1" in r.stdout
    r = subprocess.run([sys.executable, "-m", "fastbp", "train", "--dtype", "int8"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_bench_forwards_args(monkeypatch):
    import types

    seen = []
    fake = types.ModuleType("fastbp.bench")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "fastbp.bench", fake)
    monkeypatch.setattr(fb, "bench", fake, raising=False)
    assert main(["bench", "--quick", "-n", "3"]) == 0
    assert seen == [["--quick", "-n", "3"]]
