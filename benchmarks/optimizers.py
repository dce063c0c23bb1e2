"""Throughput of each optimizer per backend against the reference: W1, stochastic and mini-batch 64.

``python -m benchmarks.optimizers``: backends side by side in each round, one
BLAS thread, median of ``--rounds`` epochs after a warm-up epoch.
"""

import argparse

import numpy as np
from threadpoolctl import threadpool_limits

import fastgd
from fastgd.datasets import textbook

OPTIMIZERS = {
    "SGD": lambda: fastgd.SGD(lr=0.01),
    "SGD momentum": lambda: fastgd.SGD(lr=0.01, momentum=0.9),
    "Adam": lambda: fastgd.Adam(lr=1e-3),
    "RMSprop": lambda: fastgd.RMSprop(lr=1e-3),
    "line search": lambda: fastgd.BacktrackingLineSearch(),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    X, _, y, _ = textbook()
    backends = ["numpy"] + [b for b in fastgd.backends() if b != "numpy"]
    print("| batch | optimizer | " + " | ".join(f"{b} samples/s" for b in backends) + " | "
          + " | ".join(f"{b} vs reference" for b in backends[1:]) + " |")
    print("|---|---|" + "---|" * (2 * len(backends) - 1))
    with threadpool_limits(1):
        for batch_size in (1, 64):
            for name, make in OPTIMIZERS.items():
                nets = {b: fastgd.MLP([10, 64, 32, 3], backend=b, random_state=0) for b in backends}
                for net in nets.values():
                    net.fit(X, y, epochs=1, batch_size=batch_size, optimizer=make(), train_metrics=False)
                times = {b: [] for b in backends}
                for _ in range(args.rounds):
                    for b, net in nets.items():
                        history = net.fit(X, y, epochs=1, batch_size=batch_size, train_metrics=False)
                        times[b].append(history.history["epoch_time"][0])
                rate = {b: len(X) / np.median(t) for b, t in times.items()}
                print(f"| {batch_size} | {name} | " + " | ".join(f"{rate[b]:,.0f}" for b in backends) + " | "
                      + " | ".join(f"{rate[b] / rate['numpy']:.1f}x" for b in backends[1:]) + " |", flush=True)


if __name__ == "__main__":
    main()
