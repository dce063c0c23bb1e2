"""Peer systems, each run in a process of its own and driven one epoch at a time.

``python -m fastgd.benchmarks.peers PEER THREADS CORES`` sets its CPU affinity to
CORES (comma-separated) before any library starts a thread, sets the
libraries' thread settings to THREADS, then reads commands on stdin: ``setup
CONFIG_JSON`` builds the peer's network for a workload and mode and runs an
untimed warm-up epoch, answering ``ready <warm-up seconds>`` (or ``skip
<reason>`` when the peer is not installed); ``epoch`` runs one epoch and
answers its wall seconds, the CPU seconds of all the process's threads and
the cores they may run on (``0.5 0.49 0``); ``quit`` ends. Every peer
trains the same network (ReLU hidden layers, softmax + cross-entropy or
identity + squared error), on the same data, with a fresh row order each
epoch and plain SGD at the same learning rate and L2.
"""

import json
import os
import sys

from .affinity import pin, timed

PEERS = ("scikit-learn", "torch", "jax-step", "jax-scan")


def _set_thread_settings(threads):
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" if threads == 1 else ""
    os.environ["XLA_FLAGS"] = flags


class Sklearn:
    def __init__(self, workload, X, y, batch_size, threads):
        from sklearn.neural_network import MLPClassifier, MLPRegressor
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
        Estimator = MLPRegressor if workload.output == "identity" else MLPClassifier
        self.model = Estimator(hidden_layer_sizes=workload.sizes[1:-1], solver="sgd", momentum=0.0,
                               nesterovs_momentum=False, learning_rate_init=workload.lr, alpha=workload.l2,
                               batch_size=batch_size or len(X), shuffle=True, random_state=0)
        self.X, self.y = X, y
        self.extra = {} if workload.output == "identity" else {"classes": sorted(set(y.tolist()))}

    def epoch(self):
        self.model.partial_fit(self.X, self.y, **self.extra)


class Torch:
    def __init__(self, workload, X, y, batch_size, threads):
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        dtype = getattr(torch, workload.dtype)
        layers = []
        for i, (a, b) in enumerate(zip(workload.sizes[:-1], workload.sizes[1:])):
            layers.append(torch.nn.Linear(a, b, dtype=dtype))
            if i < len(workload.sizes) - 2:
                layers.append(torch.nn.ReLU())
        self.torch, self.model = torch, torch.nn.Sequential(*layers)
        self.loss = torch.nn.MSELoss() if workload.output == "identity" else torch.nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=workload.lr, weight_decay=workload.l2)
        self.X = torch.from_numpy(X)
        self.y = torch.from_numpy(y.reshape(-1, 1) if workload.output == "identity" else y.astype("int64"))
        self.batch_size = batch_size or len(X)

    def epoch(self):
        order = self.torch.randperm(len(self.X))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            self.optimizer.zero_grad(set_to_none=True)
            self.loss(self.model(self.X[rows]), self.y[rows]).backward()
            self.optimizer.step()


class Jax:
    """A jitted SGD step (``scan=False``: one Python call per batch), or the whole epoch
    of full batches under ``lax.scan`` (``scan=True``; a short last batch takes one step call)."""

    def __init__(self, workload, X, y, batch_size, threads, scan):
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", workload.dtype == "float64")
        self.jax, self.jnp, self.scan = jax, jnp, scan
        key = jax.random.PRNGKey(0)
        params = []
        for a, b in zip(workload.sizes[:-1], workload.sizes[1:]):
            key, sub = jax.random.split(key)
            params.append((jax.random.normal(sub, (a, b), dtype=workload.dtype) * (2 / a) ** 0.5,
                           jnp.zeros(b, dtype=workload.dtype)))
        lr, l2, regression = workload.lr, workload.l2, workload.output == "identity"

        def loss(params, xb, yb):
            a = xb
            for W, b in params[:-1]:
                a = jax.nn.relu(a @ W + b)
            z = a @ params[-1][0] + params[-1][1]
            penalty = 0.5 * l2 * sum(jnp.sum(W * W) for W, _ in params)
            if regression:
                return jnp.mean((z[:, 0] - yb) ** 2) + penalty
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), yb[:, None], axis=1)) + penalty

        def step(params, batch):
            grads = jax.grad(loss)(params, *batch)
            return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), None

        self.step = jax.jit(lambda params, xb, yb: step(params, (xb, yb))[0])
        self.epoch_scan = jax.jit(lambda params, xs, ys: jax.lax.scan(step, params, (xs, ys))[0])
        self.params, self.X, self.y = params, jnp.asarray(X), jnp.asarray(y if regression else y.astype("int32"))
        self.batch_size = batch_size or len(X)
        self.rng = jax.random.PRNGKey(1)

    def epoch(self):
        self.rng, sub = self.jax.random.split(self.rng)
        order = self.jax.random.permutation(sub, len(self.X))
        full = len(order) // self.batch_size * self.batch_size
        if self.scan and full:
            rows = order[:full].reshape(-1, self.batch_size)
            self.params = self.epoch_scan(self.params, self.X[rows], self.y[rows])
        else:
            for start in range(0, full, self.batch_size):
                rows = order[start : start + self.batch_size]
                self.params = self.step(self.params, self.X[rows], self.y[rows])
        if full < len(order):
            self.params = self.step(self.params, self.X[order[full:]], self.y[order[full:]])
        self.jax.block_until_ready(self.params)


def build(peer, workload, X, y, batch_size, threads):
    if peer == "scikit-learn":
        return Sklearn(workload, X, y, batch_size, threads)
    if peer == "torch":
        return Torch(workload, X, y, batch_size, threads)
    return Jax(workload, X, y, batch_size, threads, scan=peer == "jax-scan")


def serve(peer, threads, cores):
    """Answer ``setup``, ``epoch`` and ``quit`` commands (see the module docstring)."""
    pin(cores)
    _set_thread_settings(threads)
    from .workloads import WORKLOADS

    system = None
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "setup":
            config = json.loads(argument)
            workload = WORKLOADS[config["workload"]]
            X, y = workload.data(config["scale"])
            X, y = X[: config["rows"]], y[: config["rows"]]
            try:
                system = build(peer, workload, X, y, config["batch_size"], threads)
            except ImportError as error:
                print(f"skip not installed ({error})", flush=True)
                continue
            print(f"ready {timed(system.epoch)[0]}", flush=True)
        elif command == "epoch":
            wall, cpu, used = timed(system.epoch)
            print(wall, cpu, ",".join(map(str, used)), flush=True)
        else:
            break


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), [int(core) for core in sys.argv[3].split(",")])
