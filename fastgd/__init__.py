"""fastgd: small dense neural networks trained by gradient descent, fast.

Batch, mini-batch and stochastic gradient descent with compiled kernels
behind one model API, checked against a plain NumPy reference.
"""

from .kernels import backends
from .callbacks import Callback, History
from .layers import Dense, Identity, ReLU, Sigmoid, Softmax, Tanh
from .gradcheck import check_gradients
from .model import MLP
from .optimizers import SGD, Optimizer

__version__ = "0.1.0"

__all__ = [
    "MLP", "Dense", "Identity", "ReLU", "Sigmoid", "Tanh", "Softmax",
    "SGD", "Optimizer", "Callback", "History", "backends", "check_gradients", "__version__",
]
