"""Numba kernels compile once: later processes load them from the cache, a read-only install included."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastgd

pytestmark = pytest.mark.skipif("numba" not in fastgd.backends(), reason="numba is not installed")

# Fits every kind of step (one batch, loops, BLAS) and reports the kernels' cache statistics.
SCRIPT = """
import json, time
start = time.perf_counter()
import numpy as np
import fastgd
from fastgd.kernels import _numba as kernels
imported = time.perf_counter() - start
X = np.random.RandomState(0).standard_normal((40, 5))
y = np.arange(40) % 3
net = fastgd.MLP([5, 8, 3], backend="numba", random_state=0)
start = time.perf_counter()
for batch_size in (None, 1, 8, 32):
    net.fit(X, y, epochs=1, batch_size=batch_size)
fitted = time.perf_counter() - start
dispatchers = [kernels._train_epoch, kernels._evaluate]
print(json.dumps({
    "hits": sum(sum(d.stats.cache_hits.values()) for d in dispatchers),
    "misses": sum(sum(d.stats.cache_misses.values()) for d in dispatchers),
    "module": fastgd.__file__, "import_s": imported, "fit_s": fitted,
}))
"""


def run(env, cwd):
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_process_loads_kernels_from_the_cache(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    first, second = run(env, tmp_path), run(env, tmp_path)
    assert first["misses"] > 0  # a fresh cache: compiled
    assert second["misses"] == 0 and second["hits"] >= first["misses"]
    print(f"\nfresh cache: import {first['import_s']:.2f}s, first fits {first['fit_s']:.2f}s; "
          f"warm cache: import {second['import_s']:.2f}s, first fits {second['fit_s']:.2f}s")


@pytest.fixture
def read_only_copy(tmp_path):
    """The installed package copied to a folder that cannot be written, even by root."""
    source = tmp_path / "site"
    shutil.copytree(Path(fastgd.__file__).parent, source / "fastgd",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    if os.geteuid() != 0:
        for path in sorted(source.rglob("*"), reverse=True) + [source]:
            path.chmod(path.stat().st_mode & 0o555)
        yield source
        for path in [source] + sorted(source.rglob("*")):
            path.chmod(path.stat().st_mode | 0o200)
        return
    mount = tmp_path / "read-only"
    mount.mkdir()
    made = subprocess.run(["mount", "--bind", str(source), str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a read-only folder here: {made.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True, capture_output=True)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_read_only_install_runs_and_caches(read_only_copy, tmp_path):
    with pytest.raises(OSError):
        (read_only_copy / "fastgd" / "probe").touch()
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(PYTHONPATH=str(read_only_copy), HOME=str(read_only_copy), TMPDIR=str(tmp_path))
    first, second = run(env, tmp_path), run(env, tmp_path)
    assert first["module"].startswith(str(read_only_copy))
    assert first["misses"] > 0
    assert second["misses"] == 0 and second["hits"] > 0
