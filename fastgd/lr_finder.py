"""Learning-rate finder: an exponential ramp of the learning rate over mini-batches."""

from dataclasses import dataclass

import numpy as np

from ._threads import blas_threads_for
from ._validation import check_int, check_positive, check_real
from .kernels import step_config

__all__ = ["LRFinderResult", "lr_find"]


@dataclass
class LRFinderResult:
    """``lrs`` (n,) the rates tried, ``losses`` (n,) their smoothed batch losses, ``raw_losses``
    (n,) unsmoothed, and ``suggestion``: the rate where the smoothed loss falls fastest."""

    lrs: np.ndarray
    losses: np.ndarray
    raw_losses: np.ndarray
    suggestion: float


def lr_find(net, X, y, start: float = 1e-7, end: float = 10.0, steps: int = 100, batch_size: int = 32,
            smoothing: float = 0.98, diverge: float = 4.0) -> LRFinderResult:
    """Train ``net`` for up to ``steps`` mini-batches with rates rising geometrically from
    ``start`` to ``end``, using its optimizer's update rule from fresh state.

    Stops once the smoothed loss (an exponential moving average with factor
    ``smoothing``, bias-corrected) exceeds ``diverge`` times its minimum or stops
    being finite. Suggests the rate of steepest descent of the smoothed loss
    against log(rate), looked for between the first tenth of the ramp and the
    loss's minimum. The model's weights,
    optimizer, optimizer state and shuffling generator are restored afterwards.
    """
    X, Y, _ = net.encode(X, y)
    start, end = check_positive(start, "start"), check_positive(end, "end")
    if end <= start:
        raise ValueError(f"end: must exceed start ({start!r}), got {end!r}")
    steps = check_int(steps, "steps", minimum=3)
    batch_size = min(check_int(batch_size, "batch_size"), len(X))
    smoothing = check_real(smoothing, "smoothing", 0.0, 1.0, high_open=True)
    diverge = check_real(diverge, "diverge", 1.0, low_open=True)
    optimizer, training, kernels = net.optimizer, net.training, net.kernels
    if optimizer.rule == "line_search":
        raise ValueError("net: its optimizer is a line search, which picks its own steps; set another first")

    rates = np.geomspace(start, end, steps)
    params = net.params
    saved = params.copy(), training.rng.get_state()
    state, grads = np.zeros_like(training.state), np.zeros_like(params)
    ws = kernels.workspace(batch_size)
    config = step_config(net.loss, optimizer.rule, optimizer.hyper(), dropout_seed=training.dropout_seed)
    order = np.concatenate([training.rng.permutation(len(X)) for _ in range(-(-steps * batch_size // len(X)))])
    in_order = np.arange(batch_size)
    raw, smoothed, average = [], [], 0.0
    with training.exclusive():
        try:
            with blas_threads_for(kernels.layout, batch_size):
                for i in range(steps):
                    rows = order[i * batch_size : (i + 1) * batch_size]
                    value, taken, _ = kernels.train_epoch(params, grads, state, X[rows], Y[rows], in_order,
                                                          batch_size, config, rates[i : i + 1].copy(), i, ws)
                    if not taken:
                        break
                    average = smoothing * average + (1 - smoothing) * value
                    raw.append(value)
                    smoothed.append(average / (1 - smoothing ** (i + 1)))
                    if smoothed[-1] > diverge * min(smoothed):
                        break
        finally:
            params[...] = saved[0]
            training.rng.set_state(saved[1])
    if len(smoothed) < 3:
        raise RuntimeError(f"lr_find: the loss diverged within {len(smoothed)} steps; lower start")
    losses, tried = np.array(smoothed), rates[: len(smoothed)]
    slope = np.gradient(losses, np.log(tried))
    lowest = int(np.argmin(losses))
    skip = steps // 10 if lowest > steps // 10 else 0  # the first rates' slopes are mostly noise
    suggestion = float(tried[skip + int(np.argmin(slope[skip : lowest + 1]))])
    return LRFinderResult(tried, losses, np.array(raw), suggestion)
