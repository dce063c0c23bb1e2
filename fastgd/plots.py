"""Plots of training, with matplotlib (``pip install matplotlib``).

Each function returns a :class:`matplotlib.figure.Figure` and, given
``path``, also saves it as a PNG. Figures are made without pyplot, so they
render the same with or without a display.
"""

import numpy as np

from ._validation import check_X
from .callbacks import History

__all__ = ["plot_history", "plot_runs", "plot_decision_boundary", "plot_lr_find", "plot_trajectories"]


def _figure(ncols=1):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("fastgd's plots need matplotlib: pip install matplotlib") from None
    figure = Figure(figsize=(5.5 * ncols, 4), layout="constrained")
    return figure, figure.subplots(1, ncols, squeeze=False)[0]


def _finish(figure, path):
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure


# What each logged metric is, for axes and legends.
LABELS = {"loss": "loss while training", "train_loss": "training loss", "val_loss": "validation loss",
          "train_accuracy": "training accuracy", "val_accuracy": "validation accuracy", "step_size": "step size",
          "epoch_time": "seconds per epoch"}


def _series_style(i, points):
    """The ``i``-th of several series of ``points`` points: its own line style and marker (about ten
    markers a line, hollow every other one), thinner and drawn over the series before it, so that
    none hides another where they coincide."""
    return dict(linestyle=["-", "--", ":", "-."][i % 4], marker="osD^vP"[i % 6], markevery=max(1, points // 10),
                markersize=5, markerfacecolor="none" if i % 2 else None, linewidth=2.4 - 0.3 * (i % 5), zorder=2 + i)


def _logs(history):
    return history.history if isinstance(history, History) else dict(history)


def plot_history(history, path=None):
    """Learning curves: loss, and accuracy when logged, training against validation."""
    logs = _logs(history)
    panels = [("loss", ["train_loss" if "train_loss" in logs else "loss", "val_loss"])]
    if "train_accuracy" in logs or "val_accuracy" in logs:
        panels.append(("accuracy", ["train_accuracy", "val_accuracy"]))
    figure, axes = _figure(len(panels))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            if key in logs:
                ax.plot(np.arange(1, len(logs[key]) + 1), logs[key], label=LABELS.get(key, key))
        ax.set(xlabel="epoch", ylabel=title, title=f"{title}: training and validation")
        ax.legend()
    return _finish(figure, path)


def plot_runs(histories: dict, key: str = "loss", path=None, title: str | None = None):
    """One logged metric of several runs (``{name: History}``) side by side, each line with its own
    style and markers, so that none hides another."""
    figure, (ax,) = _figure()
    for i, (name, history) in enumerate(histories.items()):
        values = _logs(history)[key]
        ax.plot(np.arange(1, len(values) + 1), values, label=str(name), **_series_style(i, len(values)))
    label = LABELS.get(key, key)
    ax.set(xlabel="epoch", ylabel=label, title=title or f"{label} of {len(histories)} runs")
    ax.legend()
    return _finish(figure, path)


def plot_decision_boundary(net, X, y, path=None, resolution: int = 200, title: str = "decision boundary"):
    """The regions a classifier of 2 features assigns to each class, with the data on top; the title
    ends with the accuracy on ``(X, y)``."""
    X = check_X(X, net.dtype, n_features=2)
    if not net.is_classifier:
        raise TypeError("net: a decision boundary needs a classifier")
    low, high = X.min(axis=0), X.max(axis=0)
    margin = 0.1 * (high - low) + 1e-9
    u, v = np.meshgrid(np.linspace(low[0] - margin[0], high[0] + margin[0], resolution),
                       np.linspace(low[1] - margin[1], high[1] + margin[1], resolution))
    labels = net.predict(np.column_stack([u.ravel(), v.ravel()]))
    codes = np.searchsorted(net.classes_, labels).reshape(u.shape)
    figure, (ax,) = _figure()
    ax.contourf(u, v, codes, levels=np.arange(len(net.classes_) + 1) - 0.5, alpha=0.3, cmap="coolwarm")
    ax.scatter(X[:, 0], X[:, 1], c=np.searchsorted(net.classes_, np.asarray(y)), s=min(80, max(12, 3000 / len(X))),
               cmap="coolwarm", edgecolors="k", linewidths=0.3)
    accuracy = np.mean(net.predict(X) == np.asarray(y))
    ax.set(xlabel="x1", ylabel="x2", title=f"{title} (accuracy {accuracy:.1%})")
    return _finish(figure, path)


def plot_lr_find(result, path=None):
    """The learning-rate finder's smoothed loss against the rate (log scale), with its suggestion."""
    figure, (ax,) = _figure()
    ax.plot(result.lrs, result.losses)
    ax.axvline(result.suggestion, color="C3", linestyle="--", label=f"suggestion {result.suggestion:.2g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed loss", title="learning-rate finder")
    ax.legend()
    return _finish(figure, path)


def plot_trajectories(fun, trajectories: dict, path=None, bounds=None, resolution: int = 200, minimum=None,
                      title: str = "optimizer trajectories"):
    """Optimizer paths (``{name: Trajectory}`` from :func:`fastgd.minimize <fastgd.functions.minimize>`),
    each with its own line style and markers, on the contours of a function of 2 variables, from
    their start (a black dot) to ``minimum`` (a star) when given; ``bounds = (x_min, x_max, y_min,
    y_max)``, else around the paths."""
    points = np.vstack([t.points for t in trajectories.values()])
    if points.shape[1] != 2:
        raise ValueError("trajectories: contours need points of 2 coordinates")
    if bounds is None:
        low, high = points.min(axis=0), points.max(axis=0)
        margin = 0.15 * (high - low) + 1e-3
        bounds = (low[0] - margin[0], high[0] + margin[0], low[1] - margin[1], high[1] + margin[1])
    u, v = np.meshgrid(np.linspace(bounds[0], bounds[1], resolution), np.linspace(bounds[2], bounds[3], resolution))
    values = np.array([fun(np.array(p)) for p in zip(u.ravel(), v.ravel())]).reshape(u.shape)
    figure, (ax,) = _figure()
    ax.contour(u, v, values, levels=np.geomspace(max(values.min(), 1e-6), values.max(), 15), colors="0.6",
               linewidths=0.6)
    for i, (name, trajectory) in enumerate(trajectories.items()):
        ax.plot(trajectory.points[:, 0], trajectory.points[:, 1], label=str(name), alpha=0.85,
                **_series_style(i, len(trajectory.points)))
    start = next(iter(trajectories.values())).points[0]
    ax.plot(*start, "ko", markersize=7, label="start", zorder=2 + len(trajectories))
    if minimum is not None:
        ax.plot(*minimum, "*", color="gold", markeredgecolor="k", markersize=14, label="minimum",
                zorder=2 + len(trajectories))
    ax.set(xlim=bounds[:2], ylim=bounds[2:], xlabel="x", ylabel="y", title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the paths, never over them
    return _finish(figure, path)
