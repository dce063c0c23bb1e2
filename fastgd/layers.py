"""Layer objects: another way to write a network; they compile to the layout table."""

import numbers

from ._codes import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS

__all__ = ["Dense", "Activation", "Identity", "ReLU", "Sigmoid", "Tanh", "Softmax", "Exp"]


class Dense:
    """Fully connected layer ``z = a @ W + b`` with ``W`` of shape ``(n_in, n_out)``."""

    def __init__(self, n_in: int, n_out: int):
        self.n_in, self.n_out = n_in, n_out

    def __repr__(self):
        return f"Dense({self.n_in}, {self.n_out})"


class Activation:
    """Element-wise (or, for softmax, row-wise) activation after a Dense layer."""

    name: str

    def __repr__(self):
        return f"{type(self).__name__}()"


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


def _is_width(n):
    """Whether ``n`` is a layer width: an integer in [1, 2**31) (BLAS takes a width as a C int)."""
    return isinstance(n, numbers.Integral) and not isinstance(n, bool) and 1 <= n < 2**31


def _choice(value, choices, name):
    if value not in choices:
        raise ValueError(f"{name}: unknown activation {value!r}; choose one of {', '.join(map(repr, choices))}")
    return value


def architecture(sizes, hidden, output):
    """``(sizes, activations)`` from layer widths or from a list of layer objects.

    ``sizes`` is either widths ``[n_in, h1, ..., n_out]`` (``hidden`` after
    every hidden layer, ``output`` after the last) or layer objects
    ``[Dense, activation, Dense, ...]`` (a Dense with no activation after it
    is linear).
    """
    try:
        sizes = list(sizes)
    except TypeError:
        raise TypeError(f"sizes: expected a list of layer widths or layers, got {sizes!r}") from None
    if sizes and all(isinstance(s, (Dense, Activation)) for s in sizes):
        return _compile_layers(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes: need at least 2 entries (inputs and outputs), got {sizes!r}")
    for s in sizes:
        if not _is_width(s):
            raise ValueError(f"sizes: every width must be a positive integer below 2**31, got {sizes!r}")
    _choice(hidden, HIDDEN_ACTIVATIONS, "hidden")
    _choice(output, OUTPUT_ACTIVATIONS, "output")
    return [int(s) for s in sizes], [hidden] * (len(sizes) - 2) + [output]


def _compile_layers(layers):
    sizes, activations = [], []
    for i, layer in enumerate(layers):
        if isinstance(layer, Dense):
            for n in (layer.n_in, layer.n_out):
                if not _is_width(n):
                    raise ValueError(f"sizes: layer {i} {layer!r} needs positive integer widths below 2**31")
            if sizes and layer.n_in != sizes[-1]:
                raise ValueError(f"sizes: layer {i} {layer!r} takes {layer.n_in} inputs, "
                                 f"but the layer before gives {sizes[-1]}")
            sizes += [layer.n_in, layer.n_out] if not sizes else [layer.n_out]
            activations.append("identity")
        elif not activations or (i > 0 and isinstance(layers[i - 1], Activation)):
            raise ValueError(f"sizes: layer {i} {layer!r} must follow a Dense layer")
        else:
            activations[-1] = layer.name
    for name in activations[:-1]:
        _choice(name, HIDDEN_ACTIVATIONS, "sizes (hidden activation)")
    _choice(activations[-1], OUTPUT_ACTIVATIONS, "sizes (output activation)")
    return sizes, activations


def layers_of(sizes, activations):
    """The layer objects of widths ``sizes`` with one activation name per layer."""
    names = {cls.name: cls for cls in Activation.__subclasses__()}
    layers = []
    for n_in, n_out, activation in zip(sizes, sizes[1:], activations):
        layers += [Dense(n_in, n_out), names[activation]()]
    return layers
