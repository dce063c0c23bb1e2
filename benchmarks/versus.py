"""This tree's fastgd against another revision's, cell by cell: ``python -m benchmarks.versus REV``.

REV (any git revision) is checked out into a temporary worktree and its Cython extension built
there. Each compiled backend then runs each cell of the throughput benchmark (its workloads and
modes, the same rows) in two processes, one importing each tree, both held to the first usable core
and to one BLAS thread: the benchmark's one-thread column. A fit's first epoch (Numba compiles or
loads its kernels) is not timed; then the two processes take turns, round by round, which of them
goes first alternating, each round as many two-epoch fits as take ``LEAST`` seconds. Prints, per
cell, the medians of the rounds' samples per second, their ratio, and the cores each process kept
busy (CPU time over wall time).
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import fastgd
from fastgd.benchmarks.affinity import cores_for
from fastgd.benchmarks.throughput import EPOCHS_PER_FIT, HOME, LEAST, ask, machine
from fastgd.benchmarks.workloads import MODES, WORKLOADS

# Run in each tree's process (``python -c SERVE TREE CORE``), which imports that tree's fastgd: answers
# ``setup {json}`` (a fit's first epoch) and ``round`` (wall and CPU seconds per epoch), one line each.
SERVE = """
import json, os, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
os.sched_setaffinity(0, [int(sys.argv[2])])
sys.path.insert(0, sys.argv[1])
import fastgd
assert fastgd.__file__.startswith(sys.argv[1]), fastgd.__file__

def fit(epochs):
    with threadpool_limits(1):  # outside the clock, as in the benchmark
        wall, cpu = time.perf_counter(), time.process_time()
        net.fit(X, y, epochs=epochs, batch_size=cell["batch_size"], optimizer=optimizer, l2=cell["l2"],
                train_metrics=False)
        return time.perf_counter() - wall, time.process_time() - cpu

for line in sys.stdin:
    command, _, argument = line.partition(" ")
    if command == "setup":
        cell = json.loads(argument)
        data = np.load(cell["data"])
        X, y = data["X"], data["y"]
        net = fastgd.MLP(cell["sizes"], output=cell["output"], backend=cell["backend"], dtype=cell["dtype"],
                         random_state=0)
        optimizer = fastgd.SGD(lr=cell["lr"])
        print(fit(1)[0], flush=True)
    elif command.strip() == "round":
        walls, cpus = [], []
        while sum(walls) < cell["least"]:
            wall, cpu = fit(cell["epochs"])
            walls.append(wall / cell["epochs"])
            cpus.append(cpu / cell["epochs"])
        print(np.mean(walls), np.mean(cpus), flush=True)
    else:
        break
"""


class Tree:
    """A process that imports the fastgd of ``path``, held to ``core``."""

    def __init__(self, label, path, core):
        self.label = label
        self.process = subprocess.Popen([sys.executable, "-c", SERVE, str(path), str(core)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())

    def ask(self, command):
        return [float(value) for value in ask(self.process, command, f"{self.label}: its process").split()]

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


def worktree(revision, folder):
    """``revision`` checked out into ``folder``, its Cython extension built in place."""
    subprocess.run(["git", "-C", str(HOME), "worktree", "add", "--detach", "--force", str(folder), revision],
                   check=True, capture_output=True)
    built = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=folder, capture_output=True,
                           text=True)
    if built.returncode:
        sys.exit(f"{revision}: its Cython extension did not build:\n{built.stderr[-3000:]}")


def main():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versus", description=__doc__.splitlines()[0])
    parser.add_argument("revision", help="the git revision to set this tree against")
    parser.add_argument("--backends", nargs="+", default=[b for b in fastgd.backends() if b != "numpy"],
                        choices=["numba", "cython"])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    core = cores_for(1)[0]
    print(f"Machine: {machine()['cpu']}; both processes on core {core}, "
          f"{args.rounds} rounds a cell\n")
    print(f"| workload | mode | backend | {args.revision} samples/s | this tree samples/s | this tree / "
          f"{args.revision} | cores used |")
    print("|---|---|---|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        worktree(args.revision, scratch / "tree")
        trees = [Tree(args.revision, scratch / "tree", core), Tree("this tree", HOME, core)]
        try:
            for name in args.workloads:
                workload = WORKLOADS[name]
                X, y = workload.data(1.0)
                for mode, batch_size in MODES.items():
                    rows = min(len(X), workload.rows_for(mode, 1.0))
                    data = scratch / f"{name}-{rows}.npz"
                    if not data.exists():
                        np.savez(data, X=X[:rows], y=y[:rows])
                    for backend in args.backends:
                        cell = dict(data=str(data), sizes=workload.sizes, output=workload.output, backend=backend,
                                    dtype=workload.dtype, lr=workload.lr, l2=workload.l2, batch_size=batch_size,
                                    epochs=EPOCHS_PER_FIT, least=LEAST)
                        for tree in trees:
                            tree.ask("setup " + json.dumps(cell))
                        timings = {tree.label: [] for tree in trees}
                        for number in range(args.rounds):
                            for tree in trees[::1 if number % 2 else -1]:
                                timings[tree.label].append(tree.ask("round"))
                        rates, cores = {}, {}
                        for label, rounds in timings.items():
                            walls, cpus = np.array(rounds).T
                            rates[label] = rows / np.median(walls)
                            cores[label] = cpus.sum() / walls.sum()
                        old, new = rates[args.revision], rates["this tree"]
                        print(f"| {name} | {mode} | {backend} | {old:,.0f} | {new:,.0f} | {new / old:.2f}x | "
                              f"{cores[args.revision]:.2f}, {cores['this tree']:.2f} |", flush=True)
        finally:
            for tree in trees:
                tree.close()
            subprocess.run(["git", "-C", str(HOME), "worktree", "remove", "--force", str(scratch / "tree")],
                           capture_output=True)


if __name__ == "__main__":
    main()
