"""Callbacks run between epochs, in Python; ``History`` records every epoch."""


class Callback:
    """Base callback. ``fit`` sets ``self.model``; setting ``model.stop_training = True`` stops training."""

    model = None

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_end(self, epoch: int, logs: dict):
        pass

    def on_train_end(self, logs=None):
        pass


class History(Callback):
    """Per-epoch metrics of one ``fit``: ``history[name]`` is a list with one entry per epoch."""

    def __init__(self):
        self.epoch = []
        self.history = {}

    def on_epoch_end(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"
