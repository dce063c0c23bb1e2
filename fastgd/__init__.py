"""fastgd: small dense neural networks trained by gradient descent, fast.

Batch, mini-batch and stochastic gradient descent with compiled kernels
behind one model API, checked against a plain NumPy reference.
"""

from . import schedules
from .kernels import backends
from .callbacks import Callback, EarlyStopping, History, ModelCheckpoint, ReduceLROnPlateau
from .diagnosis import Diagnosis, diagnose
from .lr_finder import LRFinderResult, lr_find
from .functions import Trajectory, minimize
from .layers import ELU, GELU, Dense, Dropout, Exp, Identity, LeakyReLU, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh
from .gradcheck import check_gradients
from .network import MLP, load
from .errors import ModelFileError, TrainingDiverged
from .training import TrainingState
from .optimizers import SGD, Adagrad, Adam, AdamW, BacktrackingLineSearch, Momentum, Optimizer, RMSprop

__version__ = "0.1.0"


def __getattr__(name):
    """The scikit-learn estimators, imported (with scikit-learn) when first asked for."""
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'fastgd' has no attribute {name!r}")

__all__ = [
    "MLP", "MLPClassifier", "MLPRegressor", "Dense", "Dropout", "Identity", "ReLU", "Sigmoid", "Tanh", "Softmax", "Exp",
    "LeakyReLU", "ELU", "GELU", "SiLU", "Softplus",
    "SGD", "Momentum", "Adam", "AdamW", "RMSprop", "Adagrad", "BacktrackingLineSearch", "Optimizer", "schedules",
    "EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint", "Callback", "History",
    "lr_find", "LRFinderResult", "diagnose", "Diagnosis", "check_gradients", "minimize", "Trajectory",
    "load", "ModelFileError", "TrainingDiverged", "TrainingState", "backends", "__version__",
]
