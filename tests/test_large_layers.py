"""Layers of more than 2**31 weights and blocks of rows of more than 2**31 values (past what a C
int counts) predict right. Each run is a child process, so that a crash fails the test; float32
zeros from ``np.zeros`` that nothing writes cost no memory."""

import subprocess
import sys
from pathlib import Path

import pytest

import fastgd
from conftest import BACKENDS

GiB = 2**30
HOME = Path(fastgd.__file__).resolve().parents[1]  # a child run from here imports the fastgd under test

# A model [1, 2**23 + 64, 1] predicting 256 rows: its one block of hidden activations holds
# 256 * (2**23 + 64) > 2**31 values (8 GiB, written). A few weights near the end of the layer are
# set through the flat buffer; every other weight is 0.
WIDE_BLOCK = """
import sys
import numpy as np
import fastgd

width = 2**23 + 64
net = fastgd.MLP([1, width, 1], output="identity", backend=sys.argv[1], dtype="float32", random_state=0)
net.params[:] = 0
W0, b0, W1, b1 = net.weights
W0[0, -1], W1[-1, 0] = 1, 0.5
W0[0, -3], b0[-3], W1[-3, 0] = -2, 1, 0.25
b1[0] = 0.125
x = (np.arange(256) - 128) / 16
predicted = net.predict(x.astype(np.float32)[:, None])
expected = 0.5 * np.maximum(x, 0) + 0.25 * np.maximum(1 - 2 * x, 0) + 0.125
np.testing.assert_allclose(predicted, expected, rtol=1e-6, atol=0)
print(int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024)  # kB
"""

# Layer 0 of [2**16 + 1, 2**15 + 1, 1] holds 2**31 + 98305 weights (8 GiB of zeros, read, never
# written); the weights that the two inputs set lie past flat index 2**31.
MANY_WEIGHTS = """
import sys
import numpy as np
from fastgd._layout import make_layout, weight_views
from fastgd.kernels import kernels_for

n_in, width = 2**16 + 1, 2**15 + 1
entry = kernels_for(sys.argv[1], make_layout([n_in, width, 1], ["relu", "identity"]), "float32")
params = np.zeros(entry.n_params, np.float32)
W0, b0, W1, b1 = weight_views(entry.layout, params)
assert W0.size > 2**31 and np.shares_memory(W0, params)
W0[-1, -1], W1[-1, 0] = 2, 0.5  # flat index n_in * width - 1
W0[-2, 7], b0[7], W1[7, 0] = -1, 3, 0.25  # flat index (n_in - 2) * width + 7
b1[0] = 0.125
assert (n_in - 2) * width + 7 > 2**31
a, c = np.array([1.0, -1.5, 0.25]), np.array([0.5, 4.0, -2.0])
X = np.zeros((3, n_in), np.float32)
X[:, -1], X[:, -2] = a, c
predicted = entry.forward(params, X, entry.workspace(3))[:, 0]
expected = 0.5 * np.maximum(2 * a, 0) + 0.25 * np.maximum(3 - c, 0) + 0.125
np.testing.assert_allclose(predicted, expected, rtol=1e-6, atol=0)
print(int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024)  # kB
"""


def peak_memory(script, backend):
    """Run ``script`` for ``backend`` in a child: its peak resident memory in bytes (since it started
    the script: the high-water mark of getrusage counts the memory of the process that forked it)."""
    done = subprocess.run([sys.executable, "-c", script, backend], cwd=HOME, capture_output=True, text=True,
                          timeout=300)
    ended = f"died from signal {-done.returncode}" if done.returncode < 0 else f"exited {done.returncode}"
    assert done.returncode == 0, f"{backend}: the child {ended}:\n{done.stderr[-3000:]}"
    return int(done.stdout.split()[-1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_layer_of_more_than_2_31_weights_predicts_right(backend):
    assert peak_memory(MANY_WEIGHTS, backend) < 1 * GiB


@pytest.mark.parametrize("backend", [name for name in BACKENDS if name == "cython"])
def test_a_block_of_more_than_2_31_values_predicts_right(backend):
    # Its 8 GiB of activations are written, which takes seconds: the backend whose kernels
    # count in C is the one run here (the others count in int64 throughout).
    assert peak_memory(WIDE_BLOCK, backend) < 9.5 * GiB
