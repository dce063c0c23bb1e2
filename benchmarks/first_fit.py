"""Warm-up: the first fit in a fresh process against a warmed fit, per backend.

Each backend runs in new processes (Numba's cache left warm by a first one),
which import fastgd, time a first one-epoch fit of the textbook network
(mini-batch 64) and then a second one.

``--compile`` times Numba's first use instead: each kind of fit (or ``warmup``)
in a fresh process with an empty cache (compiling what it needs), then in
another with that cache warm (loading it), in wall and CPU seconds.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import fastgd

SCRIPT = """
import json, sys, time
import fastgd
from fastgd.datasets import textbook
X, _, y, _ = textbook()
net = fastgd.MLP([10, 64, 32, 3], backend=sys.argv[1], random_state=0)
times = []
for _ in range(2):
    start = time.perf_counter()
    net.fit(X, y, epochs=1, batch_size=64, train_metrics=False)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""

# One kind of first use of the Numba backend: the textbook network fitted for one epoch (or the
# estimator, or warmup); prints the wall and CPU seconds it took, import excluded.
COMPILE_SCRIPT = """
import json, sys, time
import numpy as np
import scipy.sparse
import fastgd
import fastgd.kernels
from fastgd.datasets import textbook
case, dtype = sys.argv[1], sys.argv[2]
X, _, y, _ = textbook()
fit = dict(epochs=1, batch_size=64, train_metrics=False)
wall, cpu = time.perf_counter(), time.process_time()
if case == "warmup":
    fastgd.kernels.warmup("numba", (dtype,))
elif case == "MLPClassifier":
    fastgd.MLPClassifier(backend="numba", max_iter=1).fit(X.astype(dtype), y)
else:
    net = fastgd.MLP([10, 64, 32, 3], backend="numba", dtype=dtype, random_state=0)
    if case == "Adam":
        fit["optimizer"] = fastgd.Adam()
    elif case == "line search":
        fit.update(optimizer=fastgd.BacktrackingLineSearch(), batch_size=None)
    elif case == "stochastic":
        fit["batch_size"] = 1
    elif case == "full batch, 2 threads":  # 20,000 rows: two threads (fastgd._threads)
        X, y, fit["batch_size"] = np.tile(X, (14, 1))[:20000], np.tile(y, 14)[:20000], None
    elif case == "sparse rows":
        X = scipy.sparse.csr_matrix(X)
    net.fit(X, y, **fit)
print(json.dumps([time.perf_counter() - wall, time.process_time() - cpu]))
"""

# (case, dtype): every case names what it compiles beyond the others' ("SGD": mini-batch, plain SGD).
COMPILE_CASES = [("SGD", "float32"), ("SGD", "float64"), ("Adam", "float32"), ("stochastic", "float32"),
                 ("full batch, 2 threads", "float32"), ("line search", "float32"), ("sparse rows", "float32"),
                 ("MLPClassifier", "float64"), ("warmup", "float32"), ("warmup", "float64")]


def first_and_warmed(backend):
    done = subprocess.run([sys.executable, "-c", SCRIPT, backend], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def first_use(case, dtype, cache):
    """``(wall, cpu)`` seconds of ``case`` in a fresh process whose Numba cache is the folder ``cache``."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    done = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT, case, dtype], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def compile_table(cases):
    """Print, as a Markdown table, each case's first use with an empty cache and then with it warm."""
    print(f"load average before: {' '.join(f'{load:.2f}' for load in os.getloadavg())} on {os.cpu_count()} cores")
    print("| first use (numba) | dtype | empty cache: wall, CPU (s) | warm cache: wall, CPU (s) |")
    print("|---|---|---|---|")
    for case, dtype in cases:
        with tempfile.TemporaryDirectory() as cache:
            cold, warm = first_use(case, dtype, cache), first_use(case, dtype, cache)
        print(f"| {case} | {dtype} | {cold[0]:.1f}, {cold[1]:.1f} | {warm[0]:.2f}, {warm[1]:.2f} |", flush=True)
    print(f"load average after: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=fastgd.backends())
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="time Numba's first use of each kind of fit instead")
    parser.add_argument("--cases", nargs="+", type=int, help="with --compile: only these cases (numbered from 0: "
                        + ", ".join(f"{case} {dtype}" for case, dtype in COMPILE_CASES) + ")")
    args = parser.parse_args(argv)
    if args.compile:
        compile_table([COMPILE_CASES[i] for i in args.cases] if args.cases else COMPILE_CASES)
        return
    for backend in args.backends:
        first_and_warmed(backend)  # leaves Numba's cache warm, as after installation and a first use
        runs = [first_and_warmed(backend) for _ in range(args.processes)]
        for first, warmed in runs:
            print(f"{backend:7s} first fit {first * 1e3:8.1f} ms, warmed fit {warmed * 1e3:6.1f} ms, "
                  f"ratio {first / warmed:6.1f}")


if __name__ == "__main__":
    main()
