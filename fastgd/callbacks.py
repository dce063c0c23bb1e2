"""Callbacks run between epochs, in Python; ``History`` records every epoch.

A callback is any object with ``on_epoch_end(epoch, logs)``; ``on_train_begin()``
and ``on_train_end()`` are optional. ``fit`` sets its ``model`` attribute;
setting ``model.stop_training = True`` ends training after the epoch.
``logs`` holds the epoch's ``loss`` and, as the fit computes them,
``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy``,
``step_size`` and ``epoch_time``.
"""

from tqdm.auto import tqdm

from ._validation import check_int, check_nonnegative, check_real

__all__ = ["Callback", "History", "EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint"]


class Callback:
    """Base callback: every hook does nothing."""

    model = None

    def on_train_begin(self):
        pass

    def on_epoch_end(self, epoch: int, logs: dict):
        pass

    def on_train_end(self):
        pass


class History(Callback):
    """Per-epoch metrics of one ``fit``: ``history[name]`` is a list with one entry per epoch.

    ``keys``: the names the fit will log, present (empty) before the first epoch ends;
    ``params``: the fit's ``epochs``, ``batch_size`` (None: full batch) and ``steps`` per epoch.
    """

    def __init__(self, keys=(), params=None):
        self.epoch = []
        self.history = {key: [] for key in keys}
        self.params = dict(params or {})

    def on_epoch_end(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


class _Monitor(Callback):
    """A callback that watches one logged metric for improvement (lower is better for
    losses, higher for accuracies, unless ``mode`` says)."""

    def __init__(self, monitor, min_delta, mode):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
        if not isinstance(monitor, str):
            raise TypeError(f"monitor: expected the name of a logged metric such as 'val_loss', got {monitor!r}")
        self.monitor, self.min_delta = monitor, check_nonnegative(min_delta, "min_delta")
        self.mode = ("max" if "accuracy" in monitor else "min") if mode == "auto" else mode

    def on_train_begin(self):
        self.best, self.best_epoch = None, None

    def _improved(self, logs):
        """Whether the monitored value beats the best so far by more than ``min_delta`` (and record it)."""
        if self.monitor not in logs:
            raise KeyError(f"monitor: {self.monitor!r} is not logged (logged: {sorted(logs)}); "
                           "val_* metrics need validation_data")
        value = logs[self.monitor]
        sign = 1 if self.mode == "min" else -1
        if self.best is None or sign * (self.best - value) > self.min_delta:
            self.best = value
            return True
        return False


class EarlyStopping(_Monitor):
    """Stop once ``monitor`` has gone ``patience`` epochs without improving by more than
    ``min_delta`` (as Keras counts); with ``restore_best_weights``, the model ends with the
    weights of its best epoch."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 restore_best_weights: bool = True, mode: str = "auto"):
        super().__init__(monitor, min_delta, mode)
        self.patience = check_int(patience, "patience", minimum=0)
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self):
        super().on_train_begin()
        self.wait, self.stopped_epoch, self.best_params = 0, None, None

    def on_epoch_end(self, epoch, logs):
        if self._improved(logs):
            self.best_epoch, self.wait = epoch, 0
            if self.restore_best_weights:
                self.best_params = self.model.params.copy()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self):
        if self.best_params is not None:
            self.model.params[...] = self.best_params


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for
    ``patience`` epochs, then wait ``cooldown`` epochs; never below ``min_lr``. Works with
    any optimizer and schedule (it lowers the model's ``training.lr_scale``)."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0, mode: str = "auto"):
        super().__init__(monitor, min_delta, mode)
        self.factor = check_real(factor, "factor", 0.0, 1.0, low_open=True, high_open=True)
        self.patience = check_int(patience, "patience", minimum=0)
        self.cooldown = check_int(cooldown, "cooldown", minimum=0)
        self.min_lr = check_nonnegative(min_lr, "min_lr")

    def on_train_begin(self):
        super().on_train_begin()
        self.wait = self.cooling = 0

    def on_epoch_end(self, epoch, logs):
        if self.cooling:
            self.cooling -= 1
        if self._improved(logs):
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience and not self.cooling:
            training = self.model.training
            rate = float(training.learning_rates(1)[0])
            if rate > self.min_lr:
                training.lr_scale *= max(rate * self.factor, self.min_lr) / rate
            self.wait, self.cooling = 0, self.cooldown


class ModelCheckpoint(_Monitor):
    """Save the model to ``path`` (``MLP.save``: weights, optimizer and its state) after
    each epoch, or with ``save_best_only`` only when ``monitor`` improves."""

    def __init__(self, path, monitor: str = "val_loss", save_best_only: bool = True, mode: str = "auto"):
        super().__init__(monitor, 0.0, mode)
        self.path, self.save_best_only = path, bool(save_best_only)

    def on_epoch_end(self, epoch, logs):
        improved = self._improved(logs)
        if improved:
            self.best_epoch = epoch
        if improved or not self.save_best_only:
            self.model.save(self.path)


class ProgressBar(Callback):
    """``verbose=1``: a tqdm bar over the epochs with the latest metrics, within 80 columns."""

    SHORT = {"train_loss": "loss", "train_accuracy": "acc", "val_loss": "val_loss", "val_accuracy": "val_acc"}

    def __init__(self, epochs):
        self.epochs = epochs

    def on_train_begin(self):
        self.bar = tqdm(total=self.epochs, bar_format="{n_fmt}/{total_fmt} |{bar}| {elapsed}{postfix}", leave=True)

    def on_epoch_end(self, epoch, logs):
        shown = {} if "train_loss" in logs else {"loss": logs["loss"]}  # the whole set's loss when measured
        shown.update({short: logs[key] for key, short in self.SHORT.items() if key in logs})
        text = " ".join(f"{name} {value:{'.3f' if 'acc' in name else '.4g'}}" for name, value in shown.items())
        self.bar.set_postfix_str(text, refresh=False)
        self.bar.update(1)

    def on_train_end(self):
        self.bar.close()


class EpochLog(Callback):
    """``verbose=2``: one line per epoch."""

    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs):
        metrics = " ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "epoch_time")
        print(f"Epoch {epoch + 1}/{self.epochs} | {metrics} | {logs['epoch_time'] * 1e3:.1f} ms", flush=True)
