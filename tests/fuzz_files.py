"""Hostile model files, built member by member, loaded under a cap on the process's address space.

Run by ``test_fuzz.py`` in a child process (``python fuzz_files.py FOLDER EXAMPLES``). After a warm-up
(every backend loaded once), ``RLIMIT_AS`` is set to what the process maps plus ``MARGIN``: a file
that made ``load`` allocate more than that beyond the model it declares would raise ``MemoryError``,
which ``load`` lets through. Every hostile file must raise ``ModelFileError``; honest files of big
models (under 2 MB on disk) must load within the margin beyond the model's own bytes.
"""

import resource
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgd
from archives import header_npy, preamble, read, write, zeros

warnings.simplefilter("ignore")  # zipfile warns of the duplicate names written on purpose
FOLDER, EXAMPLES = Path(sys.argv[1]), int(sys.argv[2])
MARGIN = 100 << 20
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))
HUGE = st.integers(10**8, 10**12)  # items: 0.8 GB to 8 TB of float64


def mapped_bytes():
    """The process's virtual memory size (what RLIMIT_AS caps)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def refused(path):
    try:
        fastgd.load(path)
    except fastgd.ModelFileError:
        return
    raise AssertionError(f"{path} loaded")


# ---------------------------------------------------------------- a valid model to start from
X, y = np.random.RandomState(0).standard_normal((30, 4)), np.arange(30) % 3
for backend in fastgd.backends():  # warm-up: every backend's kernels loaded before the cap
    model = fastgd.MLP([4, 5, 3], backend=backend, random_state=0)
    model.fit(X, np.array(["a", "b", "c"])[y], epochs=2, optimizer=fastgd.Adam(lr=0.01))
    model.save(FOLDER / "valid.npz")
    fastgd.load(FOLDER / "valid.npz")
HEADER, MEMBERS = read(FOLDER / "valid.npz")


def hostile_file(draw_case):
    """Write the case to a file: ``(header edits, member edits, compression)``."""
    header_edits, member_edits, compression = draw_case
    header = {**HEADER, "arrays": {k: dict(v) for k, v in HEADER["arrays"].items()}}
    for key, value in header_edits:
        if key.startswith("arrays."):
            header["arrays"][key[7:]] = value
        else:
            header[key] = value
    members = [("header.npy", header_npy(header)), *MEMBERS.items(), *member_edits]
    path = FOLDER / "hostile.npz"
    write(path, members, compression)
    return path


MEMBER_NAMES = st.sampled_from(["params.npy", "state.npy", "classes.npy", "rng_keys.npy", "header.npy",
                                "params", "state", "classes", "header"])


@st.composite
def bomb(draw):
    """A member (possibly an alias or a duplicate) whose preamble declares a huge array, with little data."""
    name = draw(MEMBER_NAMES)
    dtype = draw(st.sampled_from(["<f8", "<f4", "|u1", "<u4", "<U100000000", "<U1", "O"]))
    shape = draw(st.one_of(HUGE.map(lambda n: (n,)), st.tuples(HUGE, st.integers(1, 10**4))))
    n_data = draw(st.integers(0, 1 << 16))
    return name, (preamble(shape, dtype), n_data)


def agreeing(sizes):
    """Header edits declaring the model of ``sizes``, its arrays agreeing."""
    n = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    dtype, slots = HEADER["arrays"]["params"]["dtype"], HEADER["arrays"]["state"]["shape"][0]
    return [("sizes", sizes), ("arrays.params", {"shape": [n], "dtype": dtype}),
            ("arrays.state", {"shape": [slots, n], "dtype": dtype})]


@st.composite
def lie(draw):
    """A header that declares a model or labels far larger than the members hold."""
    return draw(st.sampled_from([
        [("sizes", [4, draw(st.integers(10**6, 2**31 - 1)), 3])],
        agreeing([4, draw(st.integers(10**7, 2**31 - 1)), 3]),
        [("sizes", [draw(st.integers(10**4, 2**31 - 1))] * draw(st.integers(3, 40)))],
        [("arrays.classes", {"shape": [3], "dtype": f"<U{draw(st.integers(1025, 10**9))}"})],
        [("arrays.params", {"shape": [draw(HUGE)], "dtype": "<f8"})],
        [("arrays.header", {"shape": [draw(HUGE)], "dtype": "|u1"})],
    ]))


CASES = st.tuples(st.one_of(st.just([]), lie()), st.lists(bomb(), max_size=3),
                  st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))


def big_honest_file(path, sizes, declared=None):
    """A deflated file of a real model of ``sizes`` (zero weights, Adam's state), under 2 MB on disk;
    its header may declare other ``sizes``."""
    n = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    header = {**HEADER, "sizes": declared or sizes, "activations": ["relu"] * (len(sizes) - 2) + ["identity"],
              "loss": "mse", "backend": "numpy", "object_labels": False,
              "optimizer": {"name": "Adam", "params": {"lr": 0.01}, "lr_scale": 1.0},
              "arrays": {"params": {"shape": [n], "dtype": "<f8"}, "state": {"shape": [2, n], "dtype": "<f8"},
                         "rng_keys": {"shape": [624], "dtype": "<u4"}}}
    write(path, [("header.npy", header_npy(header)), ("params.npy", zeros((n,), "<f8")),
                 ("state.npy", zeros((2, n), "<f8")), ("rng_keys.npy", MEMBERS["rng_keys.npy"])], zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2 << 20, path.stat().st_size
    return 3 * n * 8


big = FOLDER / "big.npz"
model_bytes = big_honest_file(big, [1, 4_000_000, 1])
lying_big = FOLDER / "lying-big.npz"
big_honest_file(lying_big, [1, 4_000_000, 1], declared=[1, 40_000_000, 1])
inflating = FOLDER / "inflating.npz"  # 1.2 GB of zeros behind an alias of params, 1.2 MB on disk
write(inflating, [("header.npy", header_npy(HEADER)), *MEMBERS.items(), ("params", zeros((150_000_000,), "<f8"))],
      zipfile.ZIP_DEFLATED)

resource.setrlimit(resource.RLIMIT_AS, (mapped_bytes() + model_bytes + MARGIN, resource.RLIM_INFINITY))
net = fastgd.load(big)
assert net.params.nbytes + net.training.state.nbytes == model_bytes
del net
resource.setrlimit(resource.RLIMIT_AS, (mapped_bytes() + MARGIN, resource.RLIM_INFINITY))
refused(lying_big)
refused(inflating)
counts = {"refused": 0}


@SETTINGS
@given(case=CASES)
def test_hostile(case):
    if not case[0] and not case[1]:
        return
    print(case, file=sys.stderr, flush=True)
    refused(hostile_file(case))
    counts["refused"] += 1


test_hostile()
print(f"done: {counts['refused']} hostile files refused", file=sys.stderr)
