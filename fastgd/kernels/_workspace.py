"""Workspace of the compiled backends: flat buffers allocated once per fit."""

import numpy as np

from .._codes import N_IN, N_OUT


class Workspace:
    """Flat buffers for up to ``rows`` rows.

    ``acts`` and ``deltas`` hold blocks of rows: block 0 the input (room for
    ``input_rows`` rows, for kernels that read the input from there), block ``l + 1``
    layer ``l``'s output, each row-major ``(m, width)`` from ``offsets[block]``.
    ``z`` holds the output logits, ``lse`` their log-sum-exp per row; ``x``,
    ``y`` take a gathered mini-batch of up to ``batch_rows`` rows.
    """

    def __init__(self, layout, dtype, rows, batch_rows=0, input_rows=0):
        widths = np.concatenate([layout[:1, N_IN], layout[:, N_OUT]])
        capacity = np.full(len(widths), rows)
        capacity[0] = input_rows
        self.offsets = np.concatenate([[0], np.cumsum(capacity * widths)]).astype(np.int64)
        self.acts = np.empty(int(self.offsets[-1]), dtype)
        self.deltas = np.empty_like(self.acts)
        self.z = np.empty(rows * int(widths[-1]), dtype)
        self.lse = np.empty(rows)  # log-sum-exp of each row of z (softmax outputs)
        self.x = np.empty((batch_rows, int(widths[0])), dtype)
        self.y = np.empty((batch_rows, int(widths[-1])), dtype)
        self.row = np.empty(int(widths.max()), dtype)
