"""Workspace of the compiled backends: flat buffers allocated once per fit."""

import numpy as np

from .._layout import N_IN, N_OUT
from .buffers import frozen


class Workspace:
    """Flat buffers for up to ``rows`` rows per call; read-only once made.

    ``acts`` and ``deltas`` hold blocks of rows: block 0 the input (room for
    ``input_rows`` rows, for kernels that read the input from there), block ``l + 1``
    layer ``l``'s output, each row-major ``(m, width)`` from ``offsets[block]``: room for
    ``block_rows`` rows of each hidden layer (the kernels go through larger batches in
    blocks of rows) and for every row of the output layer, or with ``keep_outputs`` False
    for one block of it (training keeps no more). In memory the hidden layers' blocks come
    first, then the input's, then the output's: ``derivatives`` holds f'(z) of the hidden
    layers' units, as a forward pass that a backward pass follows leaves it, at the same
    offsets, and ends where the hidden blocks do. ``z`` holds the output logits,
    ``lse`` their log-sum-exp per row; ``x``,
    ``y``, ``w`` take a gathered mini-batch of up to ``batch_rows`` rows (inputs,
    targets, weights; with ``sparse``, no inputs: sparse rows are read in place); ``row`` is
    scratch as wide as the widest layer.
    """

    def __init__(self, layout, dtype, rows, batch_rows, input_rows, block_rows, sparse, keep_outputs):
        widths = [int(layout[0, N_IN]), *(int(width) for width in layout[:, N_OUT])]
        capacity = [input_rows, *[block_rows] * (len(widths) - 2), rows if keep_outputs else block_rows]
        # offsets[b]: where block b starts (the hidden blocks 1, ..., L - 1, then 0, then the output's
        # block L); then the end of every block
        offsets, end = [0] * (len(widths) + 1), 0
        for block in [*range(1, len(widths) - 1), 0, len(widths) - 1]:
            offsets[block], end = end, end + capacity[block] * widths[block]
        offsets[-1] = end
        hidden_end = offsets[0]
        offsets = frozen(np.array(offsets, np.int64))
        acts = np.empty(end, dtype)
        fields = dict(
            layout=layout, dtype=np.dtype(dtype), rows=rows, batch_rows=batch_rows, sparse=sparse,
            keep_outputs=keep_outputs, offsets=offsets, acts=acts,
            deltas=np.empty_like(acts), derivatives=np.empty(hidden_end, dtype),
            z=np.empty(capacity[-1] * widths[-1], dtype),
            lse=np.empty(capacity[-1]),  # log-sum-exp of each row of z (softmax outputs), float64
            x=np.empty((0 if sparse else batch_rows, widths[0]), dtype),  # sparse rows: read in place
            y=np.empty((batch_rows, widths[-1]), dtype),
            w=np.empty(batch_rows),  # the gathered rows' weights, float64
            row=np.empty(max(widths), dtype),
        )
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("a workspace is read-only")

    def outputs(self, m):
        """The output activations of the last pass over ``m`` rows, ``(m, n_out)``: a view."""
        n = int(self.layout[-1, N_OUT])
        start = int(self.offsets[-2])
        return self.acts[start : start + m * n].reshape(m, n)
