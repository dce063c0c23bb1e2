"""Hostile shapes, dtypes, strides, sizes and objects into the public API and the kernel entry
points of every backend (``fuzz_calls.py``), in a child process: it must never die from a signal,
and never return wrong-shaped (or, from the public API, non-finite) results without an error.
Hostile model files (``fuzz_files.py``), also in a child, under a cap on its memory."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BACKENDS

EXAMPLES = 600  # per target, per backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_nothing_hostile_crashes_the_process(backend):
    script = Path(__file__).with_name("fuzz_calls.py")
    done = subprocess.run([sys.executable, str(script), backend, str(EXAMPLES)], capture_output=True, text=True,
                          timeout=900)
    tail = "\n".join(done.stderr.splitlines()[-40:])
    ended = f"died from signal {-done.returncode}" if done.returncode < 0 else "failed"
    assert done.returncode == 0, f"the child {ended}:\n{tail}"
    last = done.stderr.splitlines()[-1]
    assert last.startswith("done:"), tail
    refused, returned = (int(word) for word in last.split() if word.isdigit())
    assert refused > EXAMPLES / 2 and returned > EXAMPLES / 5, last  # both the errors and the good paths were hit


def test_hostile_model_files_are_refused_within_bounded_memory(tmp_path):
    script = Path(__file__).with_name("fuzz_files.py")
    done = subprocess.run([sys.executable, str(script), str(tmp_path), "300"], capture_output=True, text=True,
                          timeout=900)
    tail = "\n".join(done.stderr.splitlines()[-40:])
    assert done.returncode == 0, f"the child failed:\n{tail}"
    assert done.stderr.splitlines()[-1].startswith("done: "), tail
