"""First run: where the compiled kernels are cached (also for a read-only
installation), the stale-cache check there, ``prepare`` and the notice said
before a compile.  Each case runs in a fresh process with its own empty
cache and compiles only a small kernel, so the file stays fast."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs a small kernel and prints, as JSON: the cache directory fastbp uses,
# the kernel files in it, whether the kernel compiled (or came from the cache)
# and the stamp.  argv[1] == "readonly" makes the installation's __pycache__
# unusable the way Numba sees it (as root, chmod alone cannot).
_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    if sys.argv[1] == "readonly":
        from numba.core import caching
        caching.InTreeCacheLocator.from_function = classmethod(lambda cls, f, p: None)
    from numba.core.event import install_recorder
    import numpy as np
    with install_recorder("numba:compile") as rec:
        from fastbp import _kernels
        from fastbp._kernels import optim
        assert optim.all_finite(np.ones(5, np.float64))
    d = _kernels.CACHE_DIR
    stamp = os.path.join(d, "fastbp-sources.sha256")
    print(json.dumps({
        "dir": d,
        "files": sorted(f for f in os.listdir(d) if f.endswith((".nbi", ".nbc"))),
        "compiled": len(rec.buffer) > 0,
        "stamp": open(stamp).read() if os.path.exists(stamp) else None,
    }))
    """
)


def _run(mode, env):
    res = subprocess.run([sys.executable, "-c", _SCRIPT, mode], env=env, capture_output=True,
                         text=True, check=False, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _env(tmp_path, **extra):
    env = dict(os.environ, PYTHONPATH=ROOT, XDG_CACHE_HOME=str(tmp_path / "xdg"), **extra)
    env.pop("NUMBA_CACHE_DIR", None)
    env.update(extra)
    return env


def test_read_only_installation_caches_in_user_dir(tmp_path):
    env = _env(tmp_path)
    first = _run("readonly", env)
    user_dir = str(tmp_path / "xdg" / "numba")
    assert first["dir"].startswith(user_dir), first
    assert first["compiled"] and any(f.startswith("optim.all_finite") for f in first["files"])
    assert first["stamp"]
    second = _run("readonly", env)
    assert second["dir"] == first["dir"] and not second["compiled"], second


def test_stale_stamp_drops_cache_in_numba_cache_dir(tmp_path):
    env = _env(tmp_path, NUMBA_CACHE_DIR=str(tmp_path / "nc"))
    first = _run("default", env)
    assert first["dir"].startswith(str(tmp_path / "nc")) and first["compiled"]
    assert not _run("default", env)["compiled"]
    # as if the kernel sources had changed since the cache was written
    with open(os.path.join(first["dir"], "fastbp-sources.sha256"), "w") as fh:
        fh.write("0" * 64)
    third = _run("default", env)
    assert third["compiled"] and third["stamp"] == first["stamp"]


def test_prepare_reports_and_checks(capsys):
    import fastbp as fb

    with pytest.raises(ValueError, match="dtypes"):
        fb.prepare(dtypes=("int8",))
    with pytest.raises(ValueError, match="what"):
        fb.prepare(what="everything")
    rows = fb.prepare(dtypes="float64", what="fit", verbose=True)
    out = capsys.readouterr().out
    assert "fastbp: " in out and ("compiled" in out or "loaded from" in out)
    assert all(len(r) == 3 and r[1] >= 0 for r in rows)
    # compiled (or loaded) now: nothing left to compile for float64 training
    from fastbp._warmup import compile_pending

    assert not compile_pending("float64")
    assert fb.prepare(dtypes="float64", what="fit") == []


def test_fit_with_progress_says_it_compiles_first(monkeypatch, capsys):
    """The notice comes once, before the wait, and the bar starts after the
    compiling epoch (as if a compile were pending: no real compile here)."""
    import numpy as np

    import fastbp as fb
    from fastbp import network

    monkeypatch.setattr(network, "compile_pending", lambda dtype: True)
    X = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    m = fb.MLP([3, 4, 2], dtype="float32", seed=0)
    m.fit(X, np.arange(20) % 2, epochs=3, batch_size=5, progress=True)
    err = capsys.readouterr().err
    assert err.count("compiling") == 1 and "first run" in err, err
    bar_at = err.find("fit:")
    assert bar_at > err.index("compiling"), err
    assert "1/3" in err and "0/3" not in err, err


def test_cli_prepare(capsys):
    from fastbp.cli import main

    assert main(["prepare", "--dtype", "float64", "--what", "fit"]) == 0
    out = capsys.readouterr().out
    assert "fastbp: " in out and "float64" in out
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--dtype", "int8"])
    assert exc.value.code == 2
