"""The layout table: where each layer's weights and biases live in ``params``.

``params`` is one flat C-contiguous array holding, layer after layer, ``W``
(row-major, shape ``(n_in, n_out)``) followed by ``b`` (shape ``(n_out,)``).
The layout has one int64 row per layer: ``n_in, n_out, activation code, W
offset, b offset, activation parameter`` (a leaky ReLU's slope, an ELU's alpha,
else 0: the bits of a float64, read with :func:`parameter`).
"""

import numpy as np

from ._codes import ACTIVATIONS, activation_rule

N_IN, N_OUT, ACTIVATION, W_OFFSET, B_OFFSET, PARAMETER = range(6)


def make_layout(sizes, activations):
    """Layout table, int64 of shape ``(n_layers, 6)``, for widths ``sizes`` and one activation per layer
    (as :func:`fastgd._codes.activation_rule` reads it)."""
    layout = np.zeros((len(sizes) - 1, 6), dtype=np.int64)
    offset = 0
    for i, (n_in, n_out, name) in enumerate(zip(sizes[:-1], sizes[1:], activations)):
        if offset + n_in * n_out + n_out >= 2**62:
            raise ValueError(f"sizes: {sizes} place more parameters than an int64 offset can")
        rule, value = activation_rule(name)
        layout[i] = n_in, n_out, ACTIVATIONS[rule], offset, offset + n_in * n_out, np.float64(value).view(np.int64)
        offset += n_in * n_out + n_out
    return layout


def parameter(layout, l):
    """The activation parameter of layer ``l`` (float)."""
    return float(layout[l, PARAMETER : PARAMETER + 1].view(np.float64)[0])


def n_params(layout):
    """Length of the flat parameter buffer."""
    last = layout[-1]
    return int(last[B_OFFSET] + last[N_OUT])


def weight_views(layout, params):
    """``[W0, b0, W1, b1, ...]`` as views into ``params`` (writes go through)."""
    views = []
    for n_in, n_out, _, w, b, _ in layout:
        views.append(params[w : w + n_in * n_out].reshape(n_in, n_out))
        views.append(params[b : b + n_out])
    return views


def he_normal(layout, params, rng):
    """He-normal initialisation in place: ``W = N(0, 1) * sqrt(2 / n_in)`` layer by layer, ``b = 0``.

    Draws ``rng.standard_normal((n_in, n_out))`` for each layer in order, so a
    ``RandomState`` seeded as the textbook's reproduces its weights exactly.
    """
    views = weight_views(layout, params)
    for W, b in zip(views[::2], views[1::2]):
        W[...] = rng.standard_normal(W.shape) * np.sqrt(2.0 / W.shape[0])
        b[...] = 0


def glorot_uniform(layout, params, rng, factor=6.0):
    """scikit-learn's MLP initialisation in place: layer by layer, ``W`` then ``b`` drawn from
    ``U(-r, r)`` with ``r = sqrt(factor / (n_in + n_out))`` (scikit-learn: 6, or 2 for logistic
    activations), in scikit-learn's order, so the same seed gives its weights."""
    views = weight_views(layout, params)
    for W, b in zip(views[::2], views[1::2]):
        bound = np.sqrt(factor / (W.shape[0] + W.shape[1]))
        W[...] = rng.uniform(-bound, bound, W.shape)
        b[...] = rng.uniform(-bound, bound, b.shape)
