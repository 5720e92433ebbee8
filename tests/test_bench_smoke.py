"""The benchmark suite runs from the installed package, once, with timing disabled, so that it cannot rot.

Speed itself is measured only in bench/ (python bench/report.py; docs/benchmarks.md), never here."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.slow
@pytest.mark.skipif(not BENCH.is_dir(), reason="bench/ is not part of this checkout")
def test_benchmarks_run_once_without_timing(tmp_path):
    env = dict(os.environ, PYTHONSAFEPATH="1", BENCH_ROUNDS="1", SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy")
    # from a neutral folder and without the script folder on sys.path: the installed vlmreward is exercised
    out = subprocess.run([sys.executable, "-m", "pytest", str(BENCH), "-q", "-p", "no:cacheprovider",
                          "--benchmark-disable", "-o", "python_files=bench_*.py", "-x"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and " failed" not in out.stdout


@pytest.mark.skipif(not BENCH.is_dir(), reason="bench/ is not part of this checkout")
def test_profiling_report_runs_from_the_installed_package(tmp_path):
    """`python bench/report.py` used to fail with "compiled kernels failed to load" unless built in place: its
    pytest run put the source tree first on sys.path."""
    out = subprocess.run([sys.executable, str(BENCH / "report.py"), "-k", "test_preprocess and 64x64-1-"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, BENCH_ROUNDS="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| group | ours (ms)" in out.stdout and "x |" in out.stdout, out.stdout
