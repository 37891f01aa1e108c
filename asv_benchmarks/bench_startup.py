"""Start-up: import and first fit, each in a fresh process, against the
references of issue 9 (asv timeraw_ for the times, track_ for the ratios).

The scripts are those of ``fastbp bench --startup`` (fastbp/bench.py):
``import numba`` alone; the cold compile of the naive Numba port of an MLP
step (fastbp/_bench_naive.py, one @njit per operation); import fastbp plus the first fit of a float32 ReLU 64-128-10 network
with an empty cache (cold) and with the cache written (warm).  asv times
each whole script (imports included).  The scripts of ``fastbp bench``
print their own timings as their last line; asv's timeraw reads a script's
stdout as the time it measured, so the scripts run here without that line
(``_quiet``; tests/test_bench.py::test_asv_timeraw_sources_print_nothing).
"""

from fastbp import bench

from .common import Benchmark


def _quiet(script):
    """``script`` without the line that prints its own timings."""
    return script.replace(bench.STARTUP_REPORT, "")


class StartupSuite(Benchmark):
    repeat = (1, 3, 60.0)
    number = 1
    timeout = 600

    def timeraw_import(self):
        return "import fastbp"

    def timeraw_import_numba(self):
        return "import numba"

    def timeraw_import_and_first_fit(self):
        # Uses the on-disk Numba cache as it stands (warm after the first run).
        return _quiet(bench.STARTUP_FIRST_FIT)

    def timeraw_import_and_first_fit_cold(self):
        # Empty cache directory: measures compilation.
        return ("import os, tempfile; "
                "os.environ['NUMBA_CACHE_DIR'] = tempfile.mkdtemp()\n"
                + _quiet(bench.STARTUP_FIRST_FIT))

    def timeraw_naive_step_cold(self):
        # The reference: the naive Numba port's step, compiled cold (the script
        # gives it an empty cache directory of its own).
        return _quiet(bench.STARTUP_NAIVE_STEP)


class StartupRatios:
    """The issue-9 ratios on CPU time, from one round of fresh processes:
    cold first fit / naive step compile (target <= 0.3) and warm first fit /
    ``import numba`` (target <= 1.6)."""

    timeout = 900
    unit = "ratio"

    def setup_cache(self):
        rep = bench.startup_report(rounds=1, extras=False)
        cpu = {k: rep[k][0][1] for k in bench.STARTUP_KEYS}
        return {
            "cold": cpu["fastbp, cold"] / cpu["naive step, cold"],
            "warm": cpu["fastbp, warm"] / cpu["import numba"],
            "floor": cpu["trivial @njit, warm"] / cpu["import numba"],
        }

    def track_cold_over_naive_step(self, ratios):
        return ratios["cold"]

    def track_warm_over_import_numba(self, ratios):
        return ratios["warm"]

    def track_trivial_cached_over_import_numba(self, ratios):
        return ratios["floor"]
