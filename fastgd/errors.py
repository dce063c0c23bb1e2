"""Exceptions fastgd raises beyond ValueError and TypeError."""

__all__ = ["ModelFileError", "TrainingDiverged", "NonFiniteWeights"]


class ModelFileError(ValueError):
    """A model file that cannot be loaded: unreadable, truncated, corrupted or not a fastgd model."""


class TrainingDiverged(RuntimeError):
    """The training loss, the weights or the optimizer state stopped being finite. The model
    keeps the weights and optimizer state of its last finite epoch; ``history`` holds the
    epochs before."""

    def __init__(self, message, history):
        super().__init__(message)
        self.history = history


class NonFiniteWeights(TrainingDiverged, ValueError):
    """A scikit-learn estimator's fit diverged: scikit-learn's ``ValueError``, and fastgd's
    ``TrainingDiverged`` (the model keeps the weights of its last finite iteration)."""
