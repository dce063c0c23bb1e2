"""The tables every layer derives from: activations, losses and optimizers by name and code.

Kernels only ever see the integer codes; the names are for people. The
compiled backends keep their own copies of the codes (a Numba cache or a
built extension cannot see a change here), and a test checks that every
backend agrees with these tables.
"""

import math
import re
from dataclasses import dataclass
from typing import Callable, Mapping

ACTIVATIONS = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "softmax": 4, "exp": 5, "leaky_relu": 6, "elu": 7,
               "gelu": 8, "gelu_tanh": 9, "silu": 10, "softplus": 11}
HIDDEN_ACTIVATIONS = ("relu", "sigmoid", "tanh", "identity", "leaky_relu", "elu", "gelu", "gelu_tanh", "silu",
                      "softplus")
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid", "identity", "exp")
# The activations that take a parameter: its name and default, as in torch.nn.functional. A model names
# another value in its activation's spelling, e.g. "leaky_relu(negative_slope=0.2)".
ACTIVATION_PARAMETERS = {"leaky_relu": ("negative_slope", 0.01), "elu": ("alpha", 1.0)}

LOSSES = {"cross_entropy": 0, "binary_cross_entropy": 1, "mse": 2, "poisson": 3}
DEFAULT_LOSS = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy", "identity": "mse", "exp": "poisson"}
# The output activations each loss may follow.
LOSS_OUTPUTS = {"cross_entropy": ("softmax",), "binary_cross_entropy": ("sigmoid",), "mse": ("identity", "sigmoid"),
                "poisson": ("exp",)}
# A model classifies when its loss is one of these; with squared error it regresses, whatever its output.
CLASSIFYING_LOSSES = ("cross_entropy", "binary_cross_entropy")


def activation_rule(spelling: str) -> tuple[str, float]:
    """``(name, parameter)`` of an activation spelt ``"name"`` or ``"name(parameter=value)"`` (the
    parameter 0.0 for an activation that takes none); ValueError names what is wrong."""
    match = re.fullmatch(r"(\w+)(?:\((\w+)=([^()]*)\))?", spelling) if isinstance(spelling, str) else None
    name = match and match[1]
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {spelling!r}")
    parameter, default = ACTIVATION_PARAMETERS.get(name, (None, 0.0))
    if match[2] is None:
        return name, default
    if match[2] != parameter:
        raise ValueError(f"{spelling!r}: {name} takes " + (f"one parameter, {parameter}" if parameter else "none"))
    try:
        value = float(match[3])
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{spelling!r}: {parameter} must be a finite number")
    return name, value


def activation_spelling(name: str, parameter: float) -> str:
    """How a model names activation ``name`` with ``parameter``: the name alone at the default."""
    if name not in ACTIVATION_PARAMETERS or parameter == ACTIVATION_PARAMETERS[name][1]:
        return name
    return f"{name}({ACTIVATION_PARAMETERS[name][0]}={float(parameter)!r})"


@dataclass(frozen=True)
class OptimizerRule:
    """An update rule as the kernels know it: its ``code``, the names of its
    hyper-parameters besides the learning rate (each a field of the step
    configuration), and ``slots(hyper)``: the names of the state arrays shaped
    like ``params`` it keeps, in the kernels' order, given its hyper-parameters
    by name (PyTorch's names where it has the rule)."""

    code: int
    hyper: tuple[str, ...]
    slots: Callable[[Mapping[str, float]], tuple[str, ...]]


OPTIMIZERS = {
    "sgd": OptimizerRule(0, ("momentum", "dampening", "nesterov", "weight_decay", "sutskever"),
                         lambda h: ("momentum_buffer",) if h["momentum"] else ()),
    "momentum": OptimizerRule(1, ("beta",), lambda h: ("velocity",)),
    # the first and second moments, and their running maximum (amsgrad)
    "adam": OptimizerRule(2, ("beta1", "beta2", "eps", "weight_decay", "amsgrad", "decoupled", "eps_hat"),
                          lambda h: ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")[:3 if h["amsgrad"] else 2]),
    # the mean square, the mean gradient (centered), the momentum buffer (momentum; after the mean gradient,
    # used or not)
    "rmsprop": OptimizerRule(3, ("alpha", "eps", "momentum", "centered"),
                             lambda h: ("square_avg", "grad_avg", "momentum_buffer")[
                                 :3 if h["momentum"] else (2 if h["centered"] else 1)]),
    "adagrad": OptimizerRule(4, ("eps",), lambda h: ("sum",)),  # of squares
    "line_search": OptimizerRule(5, ("rho", "c", "min_step", "fallback_step"), lambda h: ("trial",)),
}

# Every hyper-parameter name, in the order of the step configuration's fields.
HYPER = tuple(dict.fromkeys(name for rule in OPTIMIZERS.values() for name in rule.hyper))

# What a training epoch reports besides its loss.
OK, NOT_FINITE, BAD_ROW = 0, 1, 2
