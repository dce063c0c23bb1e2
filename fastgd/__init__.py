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
from .layers import Dense, Identity, ReLU, Sigmoid, Softmax, Tanh
from .gradcheck import check_gradients
from .network import MLP, load
from .estimators import MLPClassifier, MLPRegressor
from .errors import ModelFileError, TrainingDiverged
from .training import TrainingState
from .optimizers import SGD, Adagrad, Adam, AdamW, BacktrackingLineSearch, Momentum, Optimizer, RMSprop

__version__ = "0.1.0"

__all__ = [
    "MLP", "MLPClassifier", "MLPRegressor", "Dense", "Identity", "ReLU", "Sigmoid", "Tanh", "Softmax",
    "SGD", "Momentum", "Adam", "AdamW", "RMSprop", "Adagrad", "BacktrackingLineSearch", "Optimizer", "schedules",
    "EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint", "Callback", "History",
    "lr_find", "LRFinderResult", "diagnose", "Diagnosis", "check_gradients", "minimize", "Trajectory",
    "load", "ModelFileError", "TrainingDiverged", "TrainingState", "backends", "__version__",
]
