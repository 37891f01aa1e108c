"""Each example runs (small sizes) in a subprocess and exits 0."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

CASES = [
    ("train_digits.py", ["3"], None),
    ("numpy_to_fastbp.py", [], None),
    ("sklearn_pipeline.py", [], "sklearn"),
    ("sklearn_speed.py", ["3"], "sklearn"),
    ("sklearn_fit_time.py", ["--rounds", "1", "--max-iter", "2"], "sklearn"),
    ("benchmark_vs_numpy_torch.py", ["--batch", "32", "--hidden", "32", "--repeats", "3"], None),
]


@pytest.mark.parametrize("name,args,needs", CASES, ids=[c[0] for c in CASES])
def test_example_runs(name, args, needs, tmp_path):
    if needs:
        pytest.importorskip(needs)
    r = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, check=False,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.strip()
