"""Layer objects: another way to write a network; they compile to the layout table."""

import math
import numbers

from ._codes import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS, activation_rule, activation_spelling

__all__ = ["Dense", "Dropout", "Activation", "Identity", "ReLU", "Sigmoid", "Tanh", "Softmax", "Exp", "LeakyReLU",
           "ELU", "GELU", "SiLU", "Softplus"]


class Dense:
    """Fully connected layer ``z = a @ W + b`` with ``W`` of shape ``(n_in, n_out)``."""

    def __init__(self, n_in: int, n_out: int):
        self.n_in, self.n_out = n_in, n_out

    def __repr__(self):
        return f"Dense({self.n_in}, {self.n_out})"


class Dropout:
    """Inverted dropout after a hidden layer (``torch.nn.Dropout``): each training step drops each of
    its units with probability ``p`` and scales the others by ``1 / (1 - p)``; predictions, ``evaluate``
    and the metrics use every unit."""

    def __init__(self, p: float = 0.5):
        self.p = _rate(p, "p")

    def __repr__(self):
        return f"Dropout(p={self.p!r})"


class Activation:
    """Element-wise (or, for softmax, row-wise) activation after a Dense layer; ``name`` is how a
    model spells it (``MLP.activations``)."""

    name: str

    def __repr__(self):
        return f"{type(self).__name__}()"

    @staticmethod
    def of(spelling: str) -> "Activation":
        """The layer of an activation as a model spells it."""
        name, parameter = activation_rule(spelling)
        layers = {rule: layer for layer in Activation.__subclasses__()
                  for rule in getattr(layer, "rules", None) or [layer.name]}
        return layers[name].of_rule(name, parameter)

    @classmethod
    def of_rule(cls, name: str, parameter: float) -> "Activation":
        """The layer for the activation ``name`` with its ``parameter`` (most take none)."""
        return cls()


class Identity(Activation):
    name = "identity"


class ReLU(Activation):
    name = "relu"


class Sigmoid(Activation):
    name = "sigmoid"


class Tanh(Activation):
    name = "tanh"


class Softmax(Activation):
    name = "softmax"


class Exp(Activation):
    """``exp(z)``: the output of a Poisson regression (non-negative counts or rates)."""

    name = "exp"


class LeakyReLU(Activation):
    """``z`` where ``z > 0``, else ``negative_slope * z`` (``torch.nn.LeakyReLU``)."""

    rules = ["leaky_relu"]
    of_rule = classmethod(lambda cls, name, parameter: cls(parameter))

    def __init__(self, negative_slope: float = 0.01):
        self.name = activation_spelling("leaky_relu", _finite(negative_slope, "negative_slope"))
        self.negative_slope = float(negative_slope)

    def __repr__(self):
        return f"LeakyReLU(negative_slope={self.negative_slope!r})"


class ELU(Activation):
    """``z`` where ``z > 0``, else ``alpha * (exp(z) - 1)`` (``torch.nn.ELU``)."""

    rules = ["elu"]
    of_rule = classmethod(lambda cls, name, parameter: cls(parameter))

    def __init__(self, alpha: float = 1.0):
        self.name = activation_spelling("elu", _finite(alpha, "alpha"))
        self.alpha = float(alpha)

    def __repr__(self):
        return f"ELU(alpha={self.alpha!r})"


class GELU(Activation):
    """``z * Phi(z)``, ``Phi`` the standard normal CDF (``torch.nn.GELU``); with ``approximate="tanh"``,
    ``0.5 z (1 + tanh(sqrt(2 / pi) (z + 0.044715 z**3)))``."""

    rules = ["gelu", "gelu_tanh"]
    of_rule = classmethod(lambda cls, name, parameter: cls("tanh" if name == "gelu_tanh" else "none"))

    def __init__(self, approximate: str = "none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self.name = "gelu_tanh" if approximate == "tanh" else "gelu"

    def __repr__(self):
        return "GELU(approximate='tanh')" if self.approximate == "tanh" else "GELU()"


class SiLU(Activation):
    """``z * sigmoid(z)`` (``torch.nn.SiLU``, also called swish)."""

    name = "silu"


class Softplus(Activation):
    """``log(1 + exp(z))``, and ``z`` itself above 20 (``torch.nn.Softplus`` with its defaults)."""

    name = "softplus"


def _rate(value, name):
    """A dropout rate: a number in [0, 1)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"{name}: expected a dropout rate in [0, 1), got {value!r}")
    return float(value)


def _finite(value, name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def _is_width(n):
    """Whether ``n`` is a layer width: an integer in [1, 2**31) (BLAS takes a width as a C int)."""
    return isinstance(n, numbers.Integral) and not isinstance(n, bool) and 1 <= n < 2**31


def _choice(value, choices, name):
    """The spelling of activation ``value`` (a name, a spelling or a layer) if it is one of ``choices``."""
    spelling = value.name if isinstance(value, Activation) else value
    try:
        known = activation_rule(spelling)[0] in choices
    except ValueError:
        known = False
    if not known:
        raise ValueError(f"{name}: unknown activation {value!r}; choose one of {', '.join(map(repr, choices))}")
    return spelling


def architecture(sizes, hidden, output, dropout=0.0):
    """``(sizes, activations, dropout)`` from layer widths or from a list of layer objects.

    ``sizes`` is either widths ``[n_in, h1, ..., n_out]`` (``hidden`` after
    every hidden layer, ``output`` after the last, ``dropout`` one rate or one
    per hidden layer) or layer objects ``[Dense, activation, Dropout, Dense, ...]``
    (a Dense with no activation after it is linear; a hidden one may be followed
    by a Dropout). ``dropout`` is the hidden layers' rates.
    """
    try:
        sizes = list(sizes)
    except TypeError:
        raise TypeError(f"sizes: expected a list of layer widths or layers, got {sizes!r}") from None
    if sizes and all(isinstance(s, (Dense, Activation, Dropout)) for s in sizes):
        if not (isinstance(dropout, numbers.Real) and dropout == 0):
            raise ValueError("dropout: with layer objects, place Dropout layers after the hidden layers")
        return _compile_layers(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes: need at least 2 entries (inputs and outputs), got {sizes!r}")
    for s in sizes:
        if not _is_width(s):
            raise ValueError(f"sizes: every width must be a positive integer below 2**31, got {sizes!r}")
    hidden, output = _choice(hidden, HIDDEN_ACTIVATIONS, "hidden"), _choice(output, OUTPUT_ACTIVATIONS, "output")
    return [int(s) for s in sizes], [hidden] * (len(sizes) - 2) + [output], dropout_rates(dropout, len(sizes) - 2)


def dropout_rates(dropout, n_hidden):
    """One dropout rate per hidden layer from ``dropout``: one rate for all, or a sequence of them."""
    if isinstance(dropout, numbers.Real) and not isinstance(dropout, bool):
        return [_rate(dropout, "dropout")] * n_hidden
    try:
        rates = [_rate(p, "dropout") for p in dropout]
    except TypeError:
        raise ValueError(f"dropout: expected a rate in [0, 1) or one per hidden layer, got {dropout!r}") from None
    if len(rates) != n_hidden:
        raise ValueError(f"dropout: expected one rate per hidden layer ({n_hidden}), got {len(rates)}")
    return rates


def _compile_layers(layers):
    sizes, activations, dropout = [], [], []
    for i, layer in enumerate(layers):
        if isinstance(layer, Dropout):
            if not activations or isinstance(layers[i - 1], Dropout):
                raise ValueError(f"sizes: layer {i} {layer!r} must follow a Dense layer or its activation")
            dropout[-1] = layer.p
        elif isinstance(layer, Dense):
            for n in (layer.n_in, layer.n_out):
                if not _is_width(n):
                    raise ValueError(f"sizes: layer {i} {layer!r} needs positive integer widths below 2**31")
            if sizes and layer.n_in != sizes[-1]:
                raise ValueError(f"sizes: layer {i} {layer!r} takes {layer.n_in} inputs, "
                                 f"but the layer before gives {sizes[-1]}")
            sizes += [layer.n_in, layer.n_out] if not sizes else [layer.n_out]
            activations.append("identity")
            dropout.append(0.0)
        elif not activations or isinstance(layers[i - 1], (Activation, Dropout)):
            raise ValueError(f"sizes: layer {i} {layer!r} must follow a Dense layer")
        else:
            activations[-1] = layer.name
    for name in activations[:-1]:
        _choice(name, HIDDEN_ACTIVATIONS, "sizes (hidden activation)")
    _choice(activations[-1], OUTPUT_ACTIVATIONS, "sizes (output activation)")
    if dropout[-1]:
        raise ValueError("sizes: a Dropout layer may follow a hidden layer, not the output layer")
    return sizes, activations, dropout[:-1]


def layers_of(sizes, activations, dropout=()):
    """The layer objects of widths ``sizes`` with one activation spelling per layer and the hidden
    layers' ``dropout`` rates."""
    layers = []
    for l, (n_in, n_out, activation) in enumerate(zip(sizes, sizes[1:], activations)):
        layers += [Dense(n_in, n_out), Activation.of(activation)]
        if l < len(dropout) and dropout[l]:
            layers.append(Dropout(dropout[l]))
    return layers
