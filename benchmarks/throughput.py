"""Training throughput: samples/s of forward + backward + update per backend and mode.

Backends are measured side by side in one process, round by round (each
round times one epoch of every backend), after an untimed warm-up epoch whose
time (JIT compilation included) is reported apart. The figure of a cell is
the median over rounds. FLOPs per sample are counted as ``4 W + 2 (W - W1)``
(forward, weight gradients, and input gradients of every layer but the
first), and set against one core's GEMM rate measured in the same run.
"""

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import fastgd
from fastgd.datasets import synthetic_classification, textbook


@dataclass
class Workload:
    name: str
    sizes: list
    dtype: str
    rows: int
    stochastic_rows: int
    lr: float = 0.01
    l2: float = 1e-4

    def data(self):
        if self.name == "W1":
            X, _, y, _ = textbook()
            return X, y
        return synthetic_classification(self.rows, self.sizes[0], self.sizes[-1], dtype=self.dtype)

    @property
    def flops_per_sample(self):
        weights = sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        first = self.sizes[0] * self.sizes[1]
        return 4 * weights + 2 * (weights - first)


WORKLOADS = {
    "W1": Workload("W1", [10, 64, 32, 3], "float64", 1500, 1500),
    "W2": Workload("W2", [784, 256, 128, 10], "float32", 60000, 5000),
}
MODES = {"batch": None, "mini-batch 64": 64, "stochastic": 1}
# Seconds of rest before each timed epoch. NumPy and SciPy (which Numba's np.dot
# calls) each carry an OpenBLAS with its own threads, which spin for a while
# after a call: without the rest, one system's spinning threads take the core
# the next system's BLAS threads need, and both run as if on half a machine.
COOL_DOWN = 0.25


def gemm_rate(dtype, n=2048, repeats=3):
    """FLOP/s of an ``n x n`` matrix product in ``dtype`` (best of ``repeats``)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    out = np.empty((n, n), dtype)
    np.dot(a, b, out=out)
    best = min(_timed(lambda: np.dot(a, b, out=out)) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class FastgdRunner:
    """One fastgd backend on one workload and mode; ``epoch()`` returns the seconds of one epoch.

    Each call fits two epochs and times the second, so that the epoch measured
    runs on a workspace already in use, as every epoch but the first of a fit does.
    """

    def __init__(self, backend, workload, X, y, batch_size):
        self.label = backend
        self.net = fastgd.MLP(workload.sizes, backend=backend, dtype=workload.dtype, random_state=0)
        self.X, self.y, self.batch_size = X, y, batch_size
        self.optimizer = fastgd.SGD(lr=workload.lr)
        self.l2 = workload.l2

    def epoch(self):
        history = self.net.fit(self.X, self.y, epochs=2, batch_size=self.batch_size, optimizer=self.optimizer,
                               l2=self.l2, train_metrics=False)
        return history.history["epoch_time"][1]


class SklearnRunner:
    """scikit-learn's MLPClassifier(solver="sgd"), same network, batch, rate and L2; one ``partial_fit`` per epoch."""

    label = "scikit-learn"

    def __init__(self, workload, X, y, batch_size):
        from sklearn.neural_network import MLPClassifier

        self.model = MLPClassifier(hidden_layer_sizes=workload.sizes[1:-1], solver="sgd", momentum=0.0,
                                   nesterovs_momentum=False, learning_rate_init=workload.lr, alpha=workload.l2,
                                   batch_size=batch_size or len(X), shuffle=True, random_state=0)
        self.X, self.y, self.classes = X, y, np.unique(y)

    def epoch(self):
        return _timed(lambda: self.model.partial_fit(self.X, self.y, classes=self.classes))


def runners(workload, mode, backends, X, y):
    batch_size = MODES[mode]
    if mode == "stochastic":
        X, y = X[: workload.stochastic_rows], y[: workload.stochastic_rows]
    made = [FastgdRunner(b, workload, X, y, batch_size) for b in backends]
    try:
        made.append(SklearnRunner(workload, X, y, batch_size))
    except ImportError:
        pass
    return made, len(X)


def measure(workloads, backends, rounds, thread_counts):
    """One result per workload x mode x system x BLAS thread count.

    Within each round every system is timed once under every thread count, so
    that all the figures of a cell, and its 1- and 2-thread figures, are
    taken side by side under the same load of the machine.
    """
    results = []
    for workload in workloads:
        X, y = workload.data()
        for mode in MODES:
            cells, n = runners(workload, mode, backends, X, y)
            times = {(c.label, t): [] for c in cells for t in thread_counts}
            gemm = {t: [] for t in thread_counts}
            warmup = {}
            for c in cells:
                with threadpool_limits(thread_counts[0]):
                    time.sleep(COOL_DOWN)
                    warmup[c.label] = _timed(c.epoch)
            for _ in range(rounds):
                for t in thread_counts:
                    with threadpool_limits(t):
                        gemm[t].append(gemm_rate(workload.dtype, repeats=1))
                        for c in cells:
                            time.sleep(COOL_DOWN)
                            times[c.label, t].append(c.epoch())
            for t in thread_counts:
                rate_of = {c.label: n / np.median(times[c.label, t]) for c in cells}
                peak = float(np.median(gemm[t]))
                for c in cells:
                    rate = rate_of[c.label]
                    gflops = rate * workload.flops_per_sample / 1e9
                    results.append({
                        "workload": workload.name, "mode": mode, "system": c.label, "threads": t, "rows": n,
                        "samples_per_s": rate, "ratio_to_reference": rate / rate_of["numpy"], "gflops": gflops,
                        "gemm_gflops": peak / 1e9, "gemm_fraction": gflops * 1e9 / peak,
                        "warmup_s": warmup[c.label], "epoch_times": times[c.label, t],
                    })
                    print(f"{t}T {workload.name} {mode:14s} {c.label:13s} {rate:12,.0f} samples/s "
                          f"x{rate / rate_of['numpy']:6.1f} {gflops:6.1f} GFLOP/s ({gflops * 1e9 / peak:6.1%} of "
                          f"GEMM) warm-up {warmup[c.label]:.2f}s", flush=True)
    return results


def table(results):
    """Markdown table: one row per workload x mode x system, a column group per thread count."""
    threads = sorted({r["threads"] for r in results})
    head = "| workload | mode | system | " + " | ".join(
        f"{t}T samples/s | {t}T vs reference | {t}T % of GEMM" for t in threads) + " |"
    lines = [head, "|" + "---|" * (3 + 3 * len(threads))]
    keys = list(dict.fromkeys((r["workload"], r["mode"], r["system"]) for r in results))
    by_key = {(r["workload"], r["mode"], r["system"], r["threads"]): r for r in results}
    for key in keys:
        cells = []
        for t in threads:
            r = by_key.get(key + (t,))
            cells.append(f"{r['samples_per_s']:,.0f} | {r['ratio_to_reference']:.1f}x | {r['gemm_fraction']:.0%}"
                         if r else "- | - | -")
        lines.append(f"| {' | '.join(key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "fastgd": fastgd.__version__, "blas": threadpool_info()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--backends", nargs="+", default=fastgd.backends())
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="BLAS thread counts to measure, each for every system (default: 1)")
    parser.add_argument("--json", help="write every raw number here")
    args = parser.parse_args(argv)
    backends = ["numpy"] + [b for b in args.backends if b != "numpy"]
    workloads = [WORKLOADS[w] for w in args.workloads]
    results = measure(workloads, backends, args.rounds, args.threads)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "results": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
