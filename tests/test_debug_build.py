"""The bounds-checked debug build (``FASTGD_BOUNDS_CHECK=1``; its baseline build alone, ``FASTGD_BUILDS=_cython``)
builds without a compiler warning and keeps its debug info, and checks: it trains in every mode with every
optimizer, on dense and on weighted sparse rows, without a false alarm, and stops the process, saying where, when
a kernel is handed a workspace too small for its rows (which the checked entry would have refused)."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXERCISE = """
import numpy as np
import scipy.sparse
import fastgd
import fastgd.kernels
from fastgd.kernels import _cython
assert _cython.__file__.startswith(sys.argv[1]), _cython.__file__
fastgd.kernels._loaded["cython"] = _cython  # this build, whatever the CPU
rng = np.random.RandomState(0)
X, y = rng.standard_normal((40, 5)), rng.randint(0, 3, 40)
for dtype in ("float64", "float32"):
    for optimizer in (fastgd.SGD(0.05), fastgd.SGD(0.05, momentum=0.9, nesterov=True), fastgd.Adam(amsgrad=True),
                      fastgd.RMSprop(momentum=0.5, centered=True), fastgd.Adagrad(), fastgd.Momentum(),
                      fastgd.BacktrackingLineSearch()):
        for batch_size in (None, 1, 7, 20):
            net = fastgd.MLP([5, 9, 7, 3], backend="cython", dtype=dtype, random_state=0)
            net.fit(X, y, epochs=2, batch_size=batch_size, optimizer=optimizer, l2=1e-3, clip_norm=5.0)
            weights = rng.uniform(0.5, 2, 40)
            sparse = scipy.sparse.csr_matrix(np.where(X > 0.3, X, 0))  # sparse rows, weighted
            net.fit(sparse, y, epochs=2, batch_size=batch_size, optimizer=optimizer, l2=1e-3, sample_weight=weights)
    fastgd.check_gradients(fastgd.MLP([5, 4, 3], backend="cython", dtype=dtype), X, y)
print("clean")
layout = net.kernels.layout
ws = _cython.workspace(layout, np.dtype("float32"), 4, 0, False, True)  # room for 4 rows
_cython.forward(layout, net.params, X[:10].astype(np.float32), ws)  # 10 rows, past the checked entry
print("not stopped")
"""


def test_the_bounds_checked_build_checks(tmp_path):
    if not (ROOT / "setup.py").exists():
        pytest.skip("builds from the source tree (the source-tree test run has it; an installed wheel does not)")
    site = tmp_path / "site"
    shutil.copytree(ROOT / "fastgd", site / "fastgd",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c", "*.nbi", "*.nbc"))
    built = subprocess.run([sys.executable, str(ROOT / "setup.py"), "build_ext", "--inplace"], cwd=site,
                           env={**os.environ, "FASTGD_BOUNDS_CHECK": "1", "FASTGD_BUILDS": "_cython"},
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    assert "warning:" not in built.stderr, built.stderr[-3000:]
    extensions = list((site / "fastgd" / "kernels").glob("_cython*.so"))
    assert [extension.name.split(".")[0] for extension in extensions] == ["_cython"], extensions  # the one asked for
    assert b".debug_info" in extensions[0].read_bytes()  # for a debugger, unlike a normal build
    run = subprocess.run([sys.executable, "-c", "import sys\n" + EXERCISE, str(site)], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=900)
    assert run.stdout.split() == ["clean"], run.stdout + run.stderr[-3000:]
    assert run.returncode == -signal.SIGABRT, (run.returncode, run.stderr[-3000:])
    assert "fastgd bounds check: lse needs [0, 10) of a buffer of 4 values" in run.stderr, run.stderr[-3000:]
