"""The benchmark workloads and training modes, shared by fastgd's runs and the peers'."""

from dataclasses import dataclass

import numpy as np

from fastgd.datasets import synthetic_classification, textbook

MODES = {"batch": None, "mini-batch 64": 64, "stochastic": 1}


@dataclass
class Workload:
    name: str
    sizes: list
    dtype: str
    rows: int
    stochastic_rows: int
    output: str = "softmax"
    lr: float = 0.01
    l2: float = 1e-4

    def data(self, scale=1.0):
        """``(X, y)``: ``y`` class labels, or (n,) float targets for a regression workload."""
        if self.name == "W1":
            X, _, y, _ = textbook()
            rows = max(2, int(len(X) * scale))
            return X[:rows], y[:rows]
        rows = max(2, int(self.rows * scale))
        if self.output == "identity":
            rng = np.random.RandomState(0)
            X = rng.standard_normal((rows, self.sizes[0])).astype(self.dtype)
            y = np.tanh(X @ rng.standard_normal(self.sizes[0]).astype(self.dtype) / np.sqrt(self.sizes[0]))
            return X, y.astype(self.dtype)
        return synthetic_classification(rows, self.sizes[0], self.sizes[-1], dtype=self.dtype)

    def rows_for(self, mode, scale=1.0):
        return max(2, int((self.stochastic_rows if mode == "stochastic" else self.rows) * scale))

    def describe(self, scale=1.0):
        """One line: the network, the dtype and the rows a run at ``scale`` trains on."""
        task = "ReLU/identity regression" if self.output == "identity" else "ReLU/softmax"
        data = "the textbook data" if self.name == "W1" else "synthetic data"
        rows, stochastic = self.rows_for("batch", scale), self.rows_for("stochastic", scale)
        fewer = f" (stochastic: {stochastic:,})" if stochastic < rows else ""
        return f"{self.name}: {self.sizes} {task}, {self.dtype}, {rows:,} rows of {data}{fewer}"

    @property
    def flops_per_sample(self):
        """Forward, weight gradients, and input gradients of every layer but the first: ``4 W + 2 (W - W1)``."""
        weights = sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        first = self.sizes[0] * self.sizes[1]
        return 4 * weights + 2 * (weights - first)


WORKLOADS = {
    "W1": Workload("W1", [10, 64, 32, 3], "float64", 1500, 1500),
    "W2": Workload("W2", [784, 256, 128, 10], "float32", 60000, 5000),
    "W3": Workload("W3", [64, 1024, 1], "float32", 20000, 5000, output="identity", lr=1e-3),
}
