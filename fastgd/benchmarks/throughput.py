"""Training throughput: samples/s of forward + backward + update per system, workload and mode.

fastgd's backends are measured side by side in this process; each peer
(scikit-learn, PyTorch, JAX) runs in a process of its own, driven one epoch
at a time in the same rounds, so that two thread pools never compete in one
process. A T-thread figure comes from a process that may run on T cores only
(CPU affinity, ``fastgd/benchmarks/affinity.py``): a peer's process for the whole
run, this one while it measures that thread count; each cell also records
the CPU time of the process's threads over the wall time of its timed epochs
(the cores it kept busy). Every system's epoch is timed over the same
boundary: the wall time of a whole training epoch as a user runs it (for
fastgd, ``fit(X, y, epochs=EPOCHS_PER_FIT)`` with metrics off, over
``EPOCHS_PER_FIT``: input checks, allocation, shuffling and learning rates
included; for a peer, its own epoch loop with its shuffle). Each round times
every system's epochs, after a warm-up epoch, every system's first, whose
time (JIT compilation included) is reported apart: as many epochs as take
``LEAST`` seconds (one, for most cells; a few milliseconds are too short to
time on a shared machine), their mean; a cell's figure is the median over
rounds. FLOPs per sample are counted as ``4 W + 2 (W - W1)`` and set against
the best rate of a 2048 x 2048 matrix product measured in the same rounds, in
the same dtype, with the same threads, through SciPy's BLAS: the one fastgd's
compiled kernels call.
"""

import json
import os
from importlib import metadata
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg.blas
from threadpoolctl import threadpool_info, threadpool_limits

import fastgd
from .affinity import cores_for, pinned, timed, usable_cores
from .progress import Progress, compiling
from .workloads import MODES

BACKENDS = ("numpy", "numba", "cython")  # fastgd's; every other system is a peer

# A cell whose CPU time over wall time exceeds its threads by more than this factor is flagged.
CORES_USED_MARGIN = 1.1
# Seconds of rest before each timed epoch: a BLAS pool's threads spin for a
# while after a call; without the rest they take the core the next system needs.
COOL_DOWN = 0.25
# Seconds a round's epochs of one system take at least: a shorter epoch is repeated.
LEAST = 0.2
# The folder holding the fastgd this process runs, first on the peers' path: they import its workloads.
HOME = Path(fastgd.__file__).resolve().parents[1]
EPOCHS_PER_FIT = 2  # epochs per timed fastgd fit: its per-call work is shared by that many epochs


def gemm_rate(dtype, n=2048, repeats=2):
    """FLOP/s of an ``n x n`` matrix product in ``dtype`` (best of ``repeats``), through SciPy's
    BLAS (``sgemm``/``dgemm``, on Fortran-ordered operands: no copies), as the kernels call it."""
    rng = np.random.default_rng(0)
    a, b = (np.asfortranarray(rng.standard_normal((n, n)).astype(dtype)) for _ in range(2))
    gemm = scipy.linalg.blas.sgemm if np.dtype(dtype) == np.float32 else scipy.linalg.blas.dgemm
    out = gemm(1.0, a, b)
    best = min(timed(lambda: gemm(1.0, a, b, c=out, overwrite_c=True))[0] for _ in range(repeats))
    return 2 * n**3 / best


def flop_rate(samples, flops_per_sample, seconds):
    """FLOP/s of ``samples`` samples of ``flops_per_sample`` FLOPs each in ``seconds``."""
    return samples * flops_per_sample / seconds


class FastgdRunner:
    """One fastgd backend as a user runs it: ``epoch()`` returns the wall and CPU time of
    ``fit(X, y, epochs=EPOCHS_PER_FIT)`` (metrics off) over ``EPOCHS_PER_FIT``, and the cores
    the process may run on; ``warmup`` is the wall time of its first epoch, a fit of one,
    compilation included."""

    def __init__(self, backend, workload, X, y, batch_size, threads):
        self.label = backend
        self.net = fastgd.MLP(workload.sizes, output=workload.output, backend=backend, dtype=workload.dtype,
                              random_state=0)
        self.X, self.y, self.batch_size, self.threads = X, y, batch_size, threads
        self.optimizer = fastgd.SGD(lr=workload.lr)
        self.l2 = workload.l2
        self.warmup = self._fit(1)[0]

    def _fit(self, epochs):
        """``timed`` of one ``fit`` of ``epochs`` epochs, the BLAS thread limit set outside the clock."""
        with threadpool_limits(self.threads):
            return timed(lambda: self.net.fit(self.X, self.y, epochs=epochs, batch_size=self.batch_size,
                                              optimizer=self.optimizer, l2=self.l2, train_metrics=False))

    def epoch(self):
        wall, cpu, cores = self._fit(EPOCHS_PER_FIT)
        return wall / EPOCHS_PER_FIT, cpu / EPOCHS_PER_FIT, cores


def ask(process, command, who):
    """``process``'s one-line answer to ``command`` (a line to its stdin), stripped; ``who`` (what the
    process is) names it in the error raised if the process has ended."""
    process.stdin.write(command + "\n")
    process.stdin.flush()
    answer = process.stdout.readline()
    if not answer:
        raise RuntimeError(f"{who} ended (exit code {process.wait()})")
    return answer.strip()


class PeerProcess:
    """A peer in a process of its own (``fastgd/benchmarks/peers.py``) that may run on ``cores`` only,
    kept for the whole run."""

    def __init__(self, peer, threads, cores):
        self.label = peer
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HOME), os.environ.get("PYTHONPATH")])))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fastgd.benchmarks.peers", peer, str(threads), ",".join(map(str, cores))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def _ask(self, command):
        return ask(self.process, command, f"{self.label}: the peer process")

    def setup(self, config):
        """``(warm-up seconds, None)`` once the peer is ready for the cell, or ``(None, reason)``."""
        kind, _, value = self._ask("setup " + json.dumps(config)).partition(" ")
        return (float(value), None) if kind == "ready" else (None, value)

    def epoch(self):
        """``(wall seconds, CPU seconds, cores)`` of one epoch in the peer's process."""
        wall, cpu, cores = self._ask("epoch").split()
        return float(wall), float(cpu), [int(core) for core in cores.split(",")]

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            self.process.wait(timeout=60)


def timed_round(runner, least):
    """``(wall seconds, CPU seconds, cores)`` per epoch of ``runner``'s epochs, repeated until they take
    ``least`` seconds in all; the cores any of them could run on."""
    walls, cpus, cores = [], [], set()
    while sum(walls) < least or not walls:
        wall, cpu, used = runner.epoch()
        walls.append(wall)
        cpus.append(cpu)
        cores.update(used)
    return sum(walls) / len(walls), sum(cpus) / len(cpus), sorted(cores)


def measure(workloads, backends, peers, rounds, thread_counts, scale=1.0, progress=True, cool_down=COOL_DOWN,
            least=LEAST):
    """``(results, skipped)``: one result per workload x mode x system x thread count,
    and the peers that could not run, with the reason. ``cool_down`` seconds pass before
    each timed round of a system's epochs (``timed_round``, ``least`` seconds of them). Every system
    runs its T-thread figures on the first T usable cores."""
    results, skipped = [], {}
    cores = {t: cores_for(t) for t in thread_counts}
    processes = {(peer, t): PeerProcess(peer, t, cores[t]) for peer in peers for t in thread_counts}
    cells = [(w, m) for w in workloads for m in MODES]
    with Progress(len(cells) * rounds * len(thread_counts), "throughput", "round", progress) as shown:
        for workload, mode in cells:
            cell = f"{workload.name} {mode}"
            X, y = workload.data(scale)
            rows = min(len(X), workload.rows_for(mode, scale))
            X, y = X[:rows], y[:rows]
            batch_size = MODES[mode]
            runners, warmup = {}, {}
            for t in thread_counts:
                with pinned(cores[t]):
                    for backend in backends:
                        shown.stage(f"{cell}, {backend} {t}T: warming up",
                                    slow=compiling(workload.dtype) if backend == "numba" else None)
                        runners[backend, t] = FastgdRunner(backend, workload, X, y, batch_size, t)
                        warmup[backend, t] = runners[backend, t].warmup
                for peer in peers:
                    shown.stage(f"{cell}, {peer} {t}T: warming up in its own process")
                    config = {"workload": workload.name, "rows": rows, "batch_size": batch_size, "scale": scale}
                    warmup[peer, t], reason = processes[peer, t].setup(config)
                    if reason:
                        skipped[peer] = reason
                    else:
                        runners[peer, t] = processes[peer, t]
            epochs = {key: [] for key in runners}
            gemm = {t: [] for t in thread_counts}
            for number in range(1, rounds + 1):
                for t in thread_counts:
                    with pinned(cores[t]):
                        shown.stage(f"{cell}, round {number}/{rounds}, {t}T: timing the GEMM rate")
                        with threadpool_limits(t):
                            gemm[t].append(gemm_rate(workload.dtype, repeats=1))
                        for key, runner in runners.items():
                            if key[1] == t:
                                shown.stage(f"{cell}, round {number}/{rounds}, {key[0]} {t}T: timing",
                                            refresh=False)
                                time.sleep(cool_down)
                                epochs[key].append(timed_round(runner, least))
                    shown.advance()
            for t in thread_counts:
                reference = rows / np.median([wall for wall, _, _ in epochs["numpy", t]])
                peak = float(np.max(gemm[t]))  # the machine's limit: the best GEMM rate seen in the cell's rounds
                for (label, threads), timings in epochs.items():
                    if threads != t:
                        continue
                    walls, cpus, used = zip(*timings)
                    seconds = float(np.median(walls))
                    rate, gflops = rows / seconds, flop_rate(rows, workload.flops_per_sample, seconds) / 1e9
                    results.append({
                        "workload": workload.name, "mode": mode, "system": label, "threads": t, "rows": rows,
                        "samples_per_s": rate, "ratio_to_reference": rate / reference, "gflops": gflops,
                        "gemm_gflops": peak / 1e9, "gemm_fraction": gflops * 1e9 / peak,
                        "warmup_s": warmup[label, t], "epoch_times": list(walls), "cpu_times": list(cpus),
                        "cores_used": sum(cpus) / sum(walls), "affinity": sorted(set().union(*used)),
                    })
        shown.stage("ending the peers' processes")
        for process in processes.values():
            process.close()
    return results, skipped


def over_threads(results):
    """The results whose system kept more cores busy than its threads, by more than ``CORES_USED_MARGIN``."""
    return [r for r in results if r["cores_used"] > CORES_USED_MARGIN * r["threads"]]


def table(results):
    """Markdown: one row per workload x mode x system, a column group per thread count (the last
    column of each: CPU time over wall time, the cores kept busy), and each thread count's
    speed-up over the fewest."""
    threads = sorted({r["threads"] for r in results})
    head = "| workload | mode | system | " + " | ".join(
        f"{t}T samples/s | {t}T vs reference | {t}T GFLOP/s | {t}T % of GEMM | {t}T cores used"
        for t in threads) + "".join(f" | {t}T / {threads[0]}T" for t in threads[1:]) + " | warm-up s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    keys = list(dict.fromkeys((r["workload"], r["mode"], r["system"]) for r in results))
    by_key = {(r["workload"], r["mode"], r["system"], r["threads"]): r for r in results}
    for key in keys:
        cells = []
        for t in threads:
            r = by_key.get(key + (t,))
            cells.append(f"{r['samples_per_s']:,.0f} | {r['ratio_to_reference']:.2f}x | {r['gflops']:.1f} | "
                         f"{r['gemm_fraction']:.0%} | {r['cores_used']:.2f}" if r else "- | - | - | - | -")
        fewest = by_key.get(key + (threads[0],))
        for t in threads[1:]:
            r = by_key.get(key + (t,))
            cells.append(f"{r['samples_per_s'] / fewest['samples_per_s']:.2f}x" if r and fewest else "-")
        warmup = by_key[key + (threads[0],)]["warmup_s"]
        lines.append(f"| {' | '.join(key)} | " + " | ".join(cells) + f" | {warmup:.2f} |")
    return "\n".join(lines)


def headline(results):
    """Markdown: per workload x mode and thread count, fastgd's fastest backend beside the fastest
    peer, and the ratio of the two."""
    threads = sorted({r["threads"] for r in results})
    head = "| workload | mode | " + " | ".join(f"fastgd {t}T | best peer {t}T | fastgd / peer {t}T"
                                               for t in threads) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for workload, mode in dict.fromkeys((r["workload"], r["mode"]) for r in results):
        cells = []
        for t in threads:
            cell = [r for r in results if (r["workload"], r["mode"], r["threads"]) == (workload, mode, t)]
            ours = max((r for r in cell if r["system"] in BACKENDS), key=lambda r: r["samples_per_s"])
            peers = [r for r in cell if r["system"] not in BACKENDS]
            peer = max(peers, key=lambda r: r["samples_per_s"]) if peers else None
            cells.append(f"{ours['system']} {ours['samples_per_s']:,.0f} | " + (
                f"{peer['system']} {peer['samples_per_s']:,.0f} | {ours['samples_per_s'] / peer['samples_per_s']:.2f}x"
                if peer else "- | -"))
        lines.append(f"| {workload} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine():
    cpu = platform.processor() or platform.machine()
    try:  # the first processor's fields; the name alone does not tell one generation of a CPU from the next
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        info = {key.strip(): value.strip() for key, value in info.items()}
        flags = info.get("flags", "").split()
        vectors = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
        cpu = f"{info['model name']} (family {info['cpu family']}, model {info['model']}; {vectors})"
    except (OSError, KeyError):
        pass
    versions = {"python": platform.python_version()}
    for name in ("fastgd", "numpy", "scipy", "numba", "scikit-learn", "threadpoolctl", "torch", "jax", "jaxlib"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable_cores(), "versions": versions,
            "blas": threadpool_info()}

