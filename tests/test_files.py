"""Model files: round trips, atomic writes, and refusal of foreign files.

``MLP.save`` writes a temporary file in the target's directory, fsyncs it,
renames it over the target with ``os.replace`` and fsyncs the directory, so
the target is at every moment absent, the previous model or the new one.
``MLP.load`` refuses anything else with a ValueError that says why.
"""

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import fastbp as fb
from fastbp import _io


def small_model(dtype="float32"):
    m = fb.MLP([5, 7, 3], activation=["tanh"], dtype=dtype, seed=3, alpha=1e-3)
    X = np.random.default_rng(0).standard_normal((20, 5))
    m.fit(X, np.arange(20) % 3, epochs=2, batch_size=8, optimizer=fb.SGD(lr=0.1))
    return m, X


def arrays_of(model):
    return dict(_io.model_arrays(model))


def write_npz(path, arrays):
    np.savez(path, **arrays)
    return path


# --- round trips ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_round_trip(tmp_path, dtype):
    m, X = small_model(dtype)
    p = tmp_path / "m.npz"
    m.save(p)
    m2 = fb.MLP.load(p)
    assert m2.flat_params.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(m2.flat_params, m.flat_params)
    np.testing.assert_array_equal(m2.widths, m.widths)
    np.testing.assert_array_equal(m2.codes, m.codes)
    assert (m2.output, m2.alpha, m2.epochs_trained) == (m.output, m.alpha, m.epochs_trained)
    assert m2.history == m.history
    np.testing.assert_array_equal(m2.predict_proba(X), m.predict_proba(X))
    # str paths and open files work too
    m.save(str(p))
    with open(p, "rb") as fh:
        np.testing.assert_array_equal(fb.MLP.load(fh).flat_params, m.flat_params)


def test_save_leaves_no_temporary_files_and_keeps_mode(tmp_path):
    m, _ = small_model()
    p = tmp_path / "m.npz"
    m.save(p)
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]
    # a fresh file gets the umask's default mode, not mkstemp's 0600
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~_io._UMASK
    os.chmod(p, 0o640)
    m.save(p)
    assert os.stat(p).st_mode & 0o777 == 0o640
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_save_is_temp_fsync_replace(tmp_path, monkeypatch):
    """The order of operations: write a temp file in the same directory, fsync
    it, os.replace it over the target, fsync the directory."""
    m, _ = small_model()
    p = tmp_path / "m.npz"
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}")
                       if os.path.exists("/proc/self/fd") else None))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.dirname(os.fspath(src)) == os.fspath(tmp_path)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    m.save(p)
    names = [e[0] for e in events]
    assert names == ["fsync", "replace", "fsync"], events
    assert events[1][1] is True  # the temporary file lives beside the target
    if events[0][1] is not None:
        assert events[0][1] is False and events[2][1] is True  # file, then directory


@pytest.mark.parametrize("where", ["savez", "replace"])
def test_failed_save_keeps_previous_file(tmp_path, monkeypatch, where):
    m, _ = small_model()
    p = tmp_path / "m.npz"
    m.save(p)
    before = p.read_bytes()
    m.flat_params[:] = 7

    def boom(*a, **k):
        if where == "savez":
            fh = a[0]
            fh.write(b"PK\x03\x04 half an archive")  # a partial write, then failure
        raise OSError("disk full")

    monkeypatch.setattr(np if where == "savez" else os, where, boom)
    with pytest.raises(OSError, match="disk full"):
        m.save(p)
    monkeypatch.undo()
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]  # the temporary file is gone
    assert not (fb.MLP.load(p).flat_params == 7).all()


def test_save_into_missing_directory_fails_cleanly(tmp_path):
    m, _ = small_model()
    with pytest.raises(FileNotFoundError):
        m.save(tmp_path / "no" / "such" / "dir" / "m.npz")
    with pytest.raises(TypeError, match="path must be a file path"):
        m.save(None)


# --- foreign and damaged files --------------------------------------------------------

def _mutate(**changes):
    def make(arrays):
        arrays = dict(arrays)
        for k, val in changes.items():
            if val is None:
                arrays.pop(k)
            elif callable(val):
                arrays[k] = val(arrays[k])
            else:
                arrays[k] = val
        return arrays

    return make


BAD_ARRAYS = [
    ("no format tag", _mutate(format=None), r"not a fastbp model file"),
    ("other format tag", _mutate(format=np.array("keras")), r"not a fastbp model file"),
    ("numeric format tag", _mutate(format=np.array(1)), r"not a fastbp model file"),
    ("version 2", _mutate(format_version=np.array(2)), r"format version 2 is not supported \(expected 1\)"),
    ("version 0", _mutate(format_version=np.array(0)), r"format version 0 is not supported"),
    ("version as string", _mutate(format_version=np.array("1")), r"field 'format_version' must be a single int"),
    ("version as vector", _mutate(format_version=np.array([1, 1])), r"field 'format_version' must be a single int"),
    ("no version", _mutate(format_version=None), r"missing field 'format_version'"),
    ("no params", _mutate(params=None), r"missing field 'params'"),
    ("no widths", _mutate(widths=None), r"missing field 'widths'"),
    ("params too short", _mutate(params=lambda p: p[:-1]), r"parameters have shape \(\d+,\); widths \[5, 7, 3\] need"),
    ("params 2-D", _mutate(params=lambda p: p.reshape(1, -1)), r"parameters have shape \(1, \d+\)"),
    ("params int", _mutate(params=lambda p: p.astype(np.int32)), r"parameters have dtype int32"),
    ("params float16", _mutate(params=lambda p: p.astype(np.float16)), r"parameters have dtype float16"),
    ("params complex", _mutate(params=lambda p: p.astype(np.complex64)), r"parameters have dtype complex64"),
    ("params NaN", _mutate(params=lambda p: np.where(np.arange(p.size) == 4, np.nan, p).astype(p.dtype)), r"parameters contain NaN or infinity"),
    ("params inf", _mutate(params=lambda p: np.full_like(p, np.inf)), r"parameters contain NaN or infinity"),
    ("widths float", _mutate(widths=lambda w: w.astype(float)), r"bad widths"),
    ("widths zero", _mutate(widths=np.array([5, 0, 3])), r"bad widths"),
    ("widths 1 entry", _mutate(widths=np.array([5])), r"bad widths"),
    ("codes wrong length", _mutate(codes=np.array([3])), r"codes must have shape \(2,\)"),
    ("codes unknown", _mutate(codes=np.array([3, 99])), r"unknown activation codes \[3, 99\]"),
    ("output unknown", _mutate(output=np.array("softplus")), r"unknown output 'softplus'"),
    ("output layer not identity", _mutate(codes=np.array([3, 3])), r"output 'softmax' needs a last layer with activation code 0"),
    ("output numeric", _mutate(output=np.array(0)), r"field 'output' must be a single str"),
    ("alpha negative", _mutate(alpha=np.array(-1.0)), r"alpha must be finite and >= 0"),
    ("alpha NaN", _mutate(alpha=np.array(np.nan)), r"alpha must be finite and >= 0"),
    ("alpha string", _mutate(alpha=np.array("x")), r"field 'alpha' must be a single float"),
    ("epochs negative", _mutate(epochs_trained=np.array(-2)), r"epochs_trained must be >= 0"),
    ("history not JSON", _mutate(history=np.array("{not json")), r"history is not valid JSON"),
    ("history a list", _mutate(history=np.array("[1, 2]")), r"history must be a JSON object"),
    ("object array", _mutate(history=np.array([{"a": 1}], dtype=object)), r"not a readable|damaged|pickle"),
]


@pytest.mark.parametrize("label, mutate, pattern", BAD_ARRAYS, ids=[c[0] for c in BAD_ARRAYS])
def test_load_rejects_bad_fields(tmp_path, label, mutate, pattern):
    m, _ = small_model()
    p = write_npz(tmp_path / "bad.npz", mutate(arrays_of(m)))
    with pytest.raises(ValueError, match=r"cannot load model from .*bad.npz") as info:
        fb.MLP.load(p)
    assert info.match(pattern)


def test_load_accepts_big_endian_params(tmp_path):
    m, X = small_model("float64")
    a = arrays_of(m)
    a["params"] = a["params"].astype(">f8")
    m2 = fb.MLP.load(write_npz(tmp_path / "be.npz", a))
    assert m2.flat_params.dtype == np.float64 and m2.flat_params.dtype.isnative
    np.testing.assert_array_equal(m2.predict_proba(X), m.predict_proba(X))


@pytest.mark.parametrize("content", [
    b"",
    b"\x00" * 100,
    bytes(np.random.default_rng(5).integers(0, 256, 5000, dtype=np.uint8)),
    b"PK\x03\x04" + bytes(200),
    b"\x93NUMPY garbage after the magic",
    b"\x80\x04\x95 a pickle header",
    b"name,value\n1,2\n",
])
def test_load_rejects_foreign_bytes(tmp_path, content):
    p = tmp_path / "foreign.npz"
    p.write_bytes(content)
    with pytest.raises(ValueError, match=r"cannot load model from .*foreign.npz"):
        fb.MLP.load(p)


def test_load_rejects_other_archives(tmp_path):
    p = tmp_path / "zip.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="not a fastbp model file"):
        fb.MLP.load(p)
    np.save(tmp_path / "one.npy", np.arange(3))
    with pytest.raises(ValueError, match="not a .npz archive"):
        fb.MLP.load(tmp_path / "one.npy")


def test_load_rejects_every_truncation(tmp_path):
    """A model file cut anywhere (as by a non-atomic writer) is refused."""
    m, _ = small_model()
    buf = io.BytesIO()
    np.savez(buf, **arrays_of(m))
    whole = buf.getvalue()
    cuts = sorted(set(np.linspace(0, len(whole) - 1, 40).astype(int)) | {len(whole) - 1})
    for cut in cuts:
        p = tmp_path / f"cut{cut}.npz"
        p.write_bytes(whole[:cut])
        with pytest.raises(ValueError, match="cannot load model"):
            fb.MLP.load(p)


def test_load_rejects_flipped_byte_in_data(tmp_path):
    """A damaged member (CRC mismatch) is refused, not loaded."""
    m, _ = small_model("float64")
    p = tmp_path / "m.npz"
    m.save(p)
    data = bytearray(p.read_bytes())
    start = data.find(b"params.npy")
    assert start > 0
    data[start + 200] ^= 0xFF  # inside the stored params member
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="cannot load model"):
        fb.MLP.load(p)


# --- kill during save ------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import fastbp as fb

    path = sys.argv[1]
    m = fb.MLP([1000, 800, 100], dtype="float64", seed=0)  # 881,000 params, ~7 MB
    m.flat_params[:] = 0
    m.history = {"version": [0]}
    m.save(path)
    print("saved", flush=True)
    k = 0
    while True:
        k += 1
        m.flat_params[:] = k
        m.history = {"version": [k]}
        m.save(path)
""")


@pytest.mark.parametrize("delay", [0.0, 0.013, 0.041, 0.077, 0.15])
def test_kill_during_save_never_corrupts(tmp_path, delay):
    """SIGKILL a process that saves a large model over and over: the file is
    then always a complete model equal to one of the versions it saved.

    The child saves version 0, says so, then saves versions 1, 2, ... as fast
    as it can (each save takes a few ms, so most kills land inside a save).
    Leftover temporary files are allowed (a killed process cannot clean up);
    a damaged target is not.
    """
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    target = tmp_path / "model.npz"
    proc = subprocess.Popen([sys.executable, str(script), str(target)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "saved", proc.stderr.read()
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    m = fb.MLP.load(target)
    version = m.history["version"][0]
    assert version >= 0
    np.testing.assert_array_equal(m.flat_params, np.full(m.n_params, float(version)))
    np.testing.assert_array_equal(m.widths, [1000, 800, 100])
    leftovers = [n for n in os.listdir(tmp_path) if n not in ("child.py", "model.npz")]
    assert all(n.startswith(".fastbp-") and n.endswith(".tmp") for n in leftovers), leftovers
