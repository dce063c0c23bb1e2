"""The layout table: where each layer's weights and biases live in ``params``.

``params`` is one flat C-contiguous array holding, layer after layer, ``W``
(row-major, shape ``(n_in, n_out)``) followed by ``b`` (shape ``(n_out,)``).
The layout has one int64 row per layer: ``n_in, n_out, activation code, W
offset, b offset, activation parameter, dropout``; the last two are the bits of
float64 numbers (read with :func:`floats`): the activation's parameter (a leaky
ReLU's slope, an ELU's alpha, else 0) and the rate at which training drops the
layer's units (0 for the output layer).
"""

import numpy as np

from ._codes import ACTIVATIONS, activation_rule

N_IN, N_OUT, ACTIVATION, W_OFFSET, B_OFFSET, PARAMETER, DROPOUT = range(7)


def make_layout(sizes, activations, dropout=None):
    """Layout table, int64 of shape ``(n_layers, 7)``, for widths ``sizes``, one activation per layer
    (as :func:`fastgd._codes.activation_rule` reads it) and one dropout rate per hidden layer (None: 0)."""
    layout = np.zeros((len(sizes) - 1, 7), dtype=np.int64)
    rates = [*(dropout or [0.0] * (len(sizes) - 2)), 0.0]
    offset = 0
    for i, (n_in, n_out, name, rate) in enumerate(zip(sizes[:-1], sizes[1:], activations, rates)):
        if offset + n_in * n_out + n_out >= 2**62:
            raise ValueError(f"sizes: {sizes} place more parameters than an int64 offset can")
        rule, value = activation_rule(name)
        layout[i, :5] = n_in, n_out, ACTIVATIONS[rule], offset, offset + n_in * n_out
        layout[i, PARAMETER:] = np.array([value, rate]).view(np.int64)
        offset += n_in * n_out + n_out
    return layout


def floats(layout, column):
    """Column ``PARAMETER`` or ``DROPOUT`` of ``layout``: the float64 numbers whose bits it holds."""
    return np.ascontiguousarray(layout[:, column]).view(np.float64)


def n_params(layout):
    """Length of the flat parameter buffer."""
    last = layout[-1]
    return int(last[B_OFFSET] + last[N_OUT])


def weight_views(layout, params):
    """``[W0, b0, W1, b1, ...]`` as views into ``params`` (writes go through)."""
    views = []
    for n_in, n_out, _, w, b, *_ in layout:
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
