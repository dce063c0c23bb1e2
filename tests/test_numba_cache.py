"""Numba kernels compile once: later processes load them from the cache, a read-only install included,
and never from a folder another user could have written into."""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastgd

pytestmark = pytest.mark.skipif("numba" not in fastgd.backends(), reason="numba is not installed")

# Fits every kind of step (one batch, loops, BLAS), or with "predict" only predicts, and reports
# the kernels' cache statistics, the threads Numba compiled on and the weights trained.
SCRIPT = """
import json, sys, threading, time
start = time.perf_counter()
import numpy as np
import fastgd
from fastgd.kernels import _numba as kernels
from numba.core import event
imported = time.perf_counter() - start
compiled_on = set()
class Threads(event.Listener):
    def on_start(self, what):
        compiled_on.add(threading.current_thread().name)
    def on_end(self, what):
        pass
event.register("numba:compile", Threads())
X = np.random.RandomState(0).standard_normal((40, 20))
y = np.arange(40) % 3
net = fastgd.MLP([20, 32, 16, 3], backend="numba", random_state=0)
start = time.perf_counter()
if sys.argv[1] == "predict":
    net.kernels.forward(net.params, X, net.kernels.workspace(40))
    dispatchers = [kernels._forward_blas]
else:
    for batch_size in (None, 1):  # a full batch and steps of one row: each its own kernel
        net.fit(X, y, epochs=1, batch_size=batch_size)
    dispatchers = [kernels._train_epoch, kernels._stochastic_epoch, kernels._data_loss]
fitted = time.perf_counter() - start
import numba
print(json.dumps({
    "hits": sum(sum(d.stats.cache_hits.values()) for d in dispatchers),
    "misses": sum(sum(d.stats.cache_misses.values()) for d in dispatchers),
    "module": fastgd.__file__, "import_s": imported, "fit_s": fitted,
    "cache": dispatchers[0]._cache._cache_path, "numba_cache_dir": numba.config.CACHE_DIR,
    "compiled_on": sorted(compiled_on), "params": net.params.tobytes().hex(),
}))
"""


def run(env, cwd, what="fit"):
    done = subprocess.run([sys.executable, "-c", SCRIPT, what], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_process_loads_kernels_from_the_cache(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    first, second = run(env, tmp_path), run(env, tmp_path)
    assert first["misses"] > 0  # a fresh cache: compiled
    # Off the main thread, where a Ctrl-C cannot land in the compiler (fastgd.kernels._numba).
    assert first["compiled_on"] == ["fastgd-compile_0"]
    assert second["misses"] == 0 and second["hits"] >= first["misses"]
    # The process that compiled runs the code the cache holds: the same bits (fastgd.kernels._numba._own_copies).
    assert second["params"] == first["params"]
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


def read_only_env(read_only_copy, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(PYTHONPATH=str(read_only_copy), HOME=str(read_only_copy), TMPDIR=str(tmp_path))
    return env


def test_read_only_install_runs_and_caches_in_a_private_folder(read_only_copy, tmp_path):
    with pytest.raises(OSError):
        (read_only_copy / "fastgd" / "probe").touch()
    env = read_only_env(read_only_copy, tmp_path)
    first, second = run(env, tmp_path, "predict"), run(env, tmp_path, "predict")
    assert first["module"].startswith(str(read_only_copy))
    assert first["misses"] > 0
    assert second["misses"] == 0 and second["hits"] > 0
    folder = tmp_path / f"fastgd-numba-cache-{os.getuid()}"
    assert second["cache"].startswith(str(folder)) and os.stat(folder).st_mode & 0o777 == 0o700
    assert first["numba_cache_dir"] == ""  # Numba's own setting, for everyone else in the process, untouched


@pytest.mark.parametrize("planted", ["open to others", "another owner", "a link"])
def test_a_cache_folder_another_user_could_write_is_never_used(read_only_copy, tmp_path, planted):
    folder = tmp_path / f"fastgd-numba-cache-{os.getuid()}"
    if planted == "a link":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        folder.symlink_to(tmp_path / "elsewhere")
    else:
        folder.mkdir()
        folder.chmod(0o777 if planted == "open to others" else 0o700)
        if planted == "another owner":
            if os.geteuid() != 0:
                pytest.skip("only root can give a folder to another owner")
            os.chown(folder, 12345, 12345)
    before = sorted(p.name for p in folder.rglob("*"))
    result = run(read_only_env(read_only_copy, tmp_path), tmp_path, "predict")
    private = Path(result["cache"]).parent  # compiled into a fresh private folder, not the planted one
    assert result["misses"] > 0 and private.parent == tmp_path and private.name != folder.name
    assert private.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in folder.rglob("*")) == before


def _constant_arguments(source):
    """``(caller, callee, argument)`` for each call in ``source`` that hands a function decorated ``@_jit``
    an integer or boolean constant, or a name that the caller binds to one."""
    tree = ast.parse(source)
    compiled_apart = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
                      and any(isinstance(d, ast.Name) and d.id == "_jit" for d in node.decorator_list)}

    def constant(node):
        return isinstance(node, ast.Constant) and isinstance(node.value, (bool, int))

    found = []
    for function in (node for node in tree.body if isinstance(node, ast.FunctionDef)):
        bound = set()
        for node in ast.walk(function):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    pairs = zip(target.elts, node.value.elts) if isinstance(target, ast.Tuple) and isinstance(
                        node.value, ast.Tuple) else [(target, node.value)]
                    bound.update(t.id for t, v in pairs if isinstance(t, ast.Name) and constant(v))
        for node in ast.walk(function):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in compiled_apart:
                for argument in node.args + [k.value for k in node.keywords]:
                    if constant(argument) or isinstance(argument, ast.Name) and argument.id in bound:
                        found.append((function.name, node.func.id, ast.unparse(argument)))
    return found


def test_no_kernel_compiled_apart_is_handed_a_constant():
    """Numba types a constant argument as its value (and a variable first bound to one, while typing) and
    compiles the callee again for it: each such call cost seconds of compile per process and type."""
    source = Path(fastgd.kernels.__file__).with_name("_numba.py").read_text()
    assert _constant_arguments(source) == []
    # The check finds both kinds of call.
    assert _constant_arguments("@_jit\ndef f(a): pass\ndef g():\n    m = 0\n    f(m)\n    f(True)\n") == [
        ("g", "f", "m"), ("g", "f", "True")]
