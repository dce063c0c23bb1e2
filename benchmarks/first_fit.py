"""Warm-up: the first fit in a fresh process against a warmed fit, per backend.

Each backend runs in new processes (Numba's cache left warm by a first one),
which import fastgd, time a first one-epoch fit of the textbook network
(mini-batch 64) and then a second one.
"""

import argparse
import json
import subprocess
import sys

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


def first_and_warmed(backend):
    done = subprocess.run([sys.executable, "-c", SCRIPT, backend], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=fastgd.backends())
    parser.add_argument("--processes", type=int, default=3)
    args = parser.parse_args(argv)
    for backend in args.backends:
        first_and_warmed(backend)  # leaves Numba's cache warm, as after installation and a first use
        runs = [first_and_warmed(backend) for _ in range(args.processes)]
        for first, warmed in runs:
            print(f"{backend:7s} first fit {first * 1e3:8.1f} ms, warmed fit {warmed * 1e3:6.1f} ms, "
                  f"ratio {first / warmed:6.1f}")


if __name__ == "__main__":
    main()
