"""The kernel contract: the functions every backend provides, over flat buffers.

A backend is a module (``_numpy.py``, the reference; ``_numba.py``;
``_cython.pxi``) with the functions of :class:`Backend` over flat buffers:

- ``layout``: int64 ``(n_layers, 7)``, rows ``n_in, n_out, activation, W offset, b offset``, and the
  float64 bits of the activation's parameter and of the layer's dropout rate (:mod:`fastgd._layout`);
  ``P`` is the number of parameters it places.
- ``params``, ``grads``: ``(P,)`` in the model dtype (float32 or float64);
  ``state``: ``(slots, P)``, the optimizer's state arrays.
- ``X``: ``(m, n_in)``, or sparse rows (:class:`CSR`); ``Y``: ``(m, n_out)`` target rows; both in
  the model dtype;
  ``weights``: float64 ``(m,)``, each row's weight, or ``(0,)``: every row weighs 1. A
  weighted batch's loss and gradient are means over its total weight (``l2_per_row``:
  the L2 coefficient over it too).
- ``config``: one record of dtype :data:`~fastgd.kernels.buffers.STEP` (shape ``(1,)``): the loss and
  optimizer codes, ``l2`` (``l2_per_row``: over the batch's rows), ``clip_value``, ``clip_norm`` (0: off) and every
  optimizer hyper-parameter by name (:func:`step_config` makes one).
- ``ws``: the backend's workspace, made by its ``workspace`` function.
- ``generator``: uint32 ``(625,)``, the state of a NumPy ``RandomState``'s MT19937 (its key of
  624 words, then its position; :func:`~fastgd.kernels.buffers.generator_state` gives a view of a live one).

Every array is C-contiguous and aligned, with the dtype and shape above.
:class:`Kernels` checks all of that, and the codes, the optimizer state
against the optimizer's slots, the workspace against the rows, and the
learning rates against the batches, in O(1) per call before any kernel
runs; behind it the kernels trust their inputs, and nothing else in fastgd
calls them. Kernels never raise: a training epoch returns a status.
"""

from typing import Protocol

__all__ = ["Backend", "missing"]


class Backend(Protocol):
    """The functions a backend module provides (none of them checks its arguments)."""

    SHUFFLES: bool
    """Whether it has :meth:`shuffle`; if not, its orders are shuffled by ``RandomState.shuffle``."""

    def workspace(self, layout, dtype, rows: int, batch_rows: int, sparse: bool, keep_outputs: bool):
        """Scratch for up to ``rows`` rows per call, plus room to gather ``batch_rows`` rows of
        ``X`` (none with ``sparse``: sparse rows are read in place), ``Y`` and the weights (0:
        none); an object with ``layout``, ``dtype``, ``rows``, ``batch_rows``, ``sparse``,
        ``keep_outputs`` and ``outputs(m)``, the ``(m, n_out)`` output activations of the last pass.
        Without ``keep_outputs`` it may keep the outputs of fewer rows than ``rows`` (of one block
        of rows at a time): enough to train (every function but ``forward`` and ``data_loss``)."""

    def forward(self, layout, params, X, ws) -> None:
        """Forward pass of the rows of ``X``; outputs in ``ws.outputs(m)``."""

    def data_loss(self, layout, params, X, Y, weights, loss: int, ws) -> float:
        """Forward pass and mean data loss of ``(X, Y)`` (no L2 term), accumulated in float64."""

    def l2_penalty(self, layout, params, l2: float) -> float:
        """``l2 / 2 * sum(W**2)`` over every weight matrix (biases excluded), float64."""

    def backward(self, layout, params, X, Y, weights, config, ws, grads) -> float:
        """Forward and backward pass: ``grads`` filled (L2 term included); returns the batch loss."""

    def clip(self, grads, config) -> None:
        """Clip ``grads`` in place: each element to ``[-clip_value, clip_value]``, then the whole
        vector to L2 norm ``clip_norm`` (scaled by ``clip_norm / (norm + 1e-6)`` when below 1)."""

    def update(self, params, grads, state, config, lr: float, step: int) -> None:
        """One optimizer step on ``params`` in place (rules in :mod:`fastgd.optimizers`);
        ``step`` counts from 0. ``grads`` is spent (may be overwritten)."""

    def shuffle(self, order, generator) -> None:
        """Shuffle ``order`` (int64) in place exactly as ``RandomState.shuffle`` does, advancing the
        MT19937 state ``generator`` as it does: from the last entry down, entry ``i`` swaps with
        entry ``j``, a 32-bit draw masked to the bits of ``i`` and drawn again while above ``i``."""

    def train_epoch(self, layout, params, grads, state, X, Y, weights, order, batch_size: int, config,
                    lrs, step: int, ws) -> tuple[float, int, int]:
        """One epoch of every batch's forward, backward, clipping and update, in one call.

        Batch ``i`` is the rows ``order[i*batch_size:(i+1)*batch_size]`` (int64; the last may be
        short; a single batch takes ``X`` as it is) with learning rate ``lrs[i]`` (float64, one per
        batch; a line search starts from it and writes back the step it took), optimizer step
        ``step + i``. Returns ``(the batches' losses averaged over rows, steps taken, status)``: the epoch stops before
        the update of a batch whose loss is not finite (``NOT_FINITE``) or that names a row
        outside ``X`` (``BAD_ROW``); after its last step, weights or optimizer state that are not
        finite are ``NOT_FINITE`` too.

        Its passes drop hidden units as the layout's dropout rates say (inverted dropout: a unit's
        activation and derivative become 0, or are scaled by ``1 / (1 - p)``), each unit of the row at
        place ``r`` of batch ``i`` by the counter-based masks of ``config``'s ``dropout_seed``, optimizer
        step ``step + i`` and ``r`` (the reference's ``dropped``), in every training function
        below too, a line search's trial points included; ``forward``, ``data_loss`` and ``backward``
        drop nothing.
        """

    def batch_gradient(self, layout, params, grads, X, Y, weights, first: int, last: int, config, step: int,
                       ws) -> float:
        """``grads`` of the data loss of rows ``first`` to ``last`` of the batch ``(X, Y)`` (its loss and
        dropout masks as ``config`` and optimizer step ``step`` say), that loss taken over the whole
        batch's total weight (no L2 term); returns it. The shares of a batch
        that threads compute (``ws`` for ``last - first`` rows, one per thread) add up to its
        gradient and loss: :meth:`batch_step` adds them."""

    def batch_step(self, layout, params, grads, parts, state, X, Y, weights, losses, config, lrs, step: int,
                   ws) -> tuple[float, int, int]:
        """The step of an epoch of one batch ``(X, Y)`` whose gradient was computed in shares:
        ``grads`` (the first share's) plus each row of ``parts`` (the others', ``(k, P)``), the
        shares' losses float64 ``losses``; then as :meth:`train_epoch`'s step: the L2 term, clipping and
        the update (or line search) with ``lrs[0]``, optimizer step ``step``. Returns what
        :meth:`train_epoch` returns."""

    def train_epoch_share(self, layout, params, grads, parts, state, X, Y, weights, order, batch_size: int, config,
                          lrs, step: int, ws, share: int, sync, losses, partials):
        """Optional (``Kernels.splits_batches``): thread ``share``'s part of :meth:`train_epoch` on
        ``len(losses)`` threads, each calling it at once with a workspace of its own (``ws``,
        for ``ceil(batch_size / threads)`` rows and as many gathered rows; for a single batch, which takes ``X``
        as it is, ``ceil(n / threads)`` rows and none gathered). Of each batch, thread ``t``
        takes rows ``m*t//threads`` to ``m*(t+1)//threads``, their gradient over the batch's total
        weight in ``grads`` (thread 0) or ``parts[t - 1]``; then the threads take the step, each on its
        range ``P*t//threads`` to ``P*(t+1)//threads`` of the parameters (a line search: its part of each
        trial point, then the loss of its rows there). They meet in ``sync`` (int64, zeros, ``SYNC_LINE``
        words a thread and a last line that, set, tells them to give up); ``losses`` (float64
        ``(threads,)``) and ``partials`` (``(4 threads,)``) take their sums. Thread 0 returns what
        :meth:`train_epoch` returns, the others None."""

    def train_epoch_units(self, layout, params, state, X, Y, weights, order, batch_size: int, config, lrs,
                          step: int, ws, own, share: int, sync, exchange, partials):
        """Optional (``Kernels.splits_units``): thread ``share``'s part of :meth:`train_epoch` on one row a
        step, or on dense batches of ``batch_size`` rows (at most ``UNITS_ROWS``, every layer with at least as
        many inputs as threads), through two layers or more, on ``exchange.shape[1]`` threads, each calling it
        at once with a workspace of its own (``ws``, for ``batch_size`` rows and as many gathered; all alike:
        every thread gathers each batch whole and computes its loss) and a buffer ``own`` (zeros, ``(2 + slots,
        P)``) for the weights it trains, their gradient and the rows of ``state``, each packed alike. The last
        layer and every second one below it are split by their inputs, the others by their units: thread ``t``
        takes of each the rows or columns of ``W`` (and the biases of its units) ``n*t//threads`` to
        ``n*(t+1)//threads``, its parts of the sums they share through its row of ``exchange`` (``(2, threads,
        len(ws.acts))``, the parity of the step first), and writes its weights and state back into ``params``
        and ``state`` at the end. Plain SGD on one row steps in the backward pass; the other rules, and every
        rule on batches, after it, each thread on its part, the sums a step needs (a global norm to clip to, a
        line search's slope and losses) added over the threads in thread order. They meet in ``sync`` as
        :meth:`train_epoch_share`'s do; ``partials`` (float64 ``(2 threads,)``) takes the threads' parts of
        each sum. Thread 0 returns what :meth:`train_epoch` returns, the others None."""


def missing(module) -> list[str]:
    """The names of :class:`Backend` that the backend ``module`` lacks (``shuffle`` only where it
    ``SHUFFLES``; ``train_epoch_share`` and ``train_epoch_units`` are optional)."""
    if not hasattr(module, "SHUFFLES"):
        return ["SHUFFLES"]
    optional = {"train_epoch_share", "train_epoch_units"} | (set() if module.SHUFFLES else {"shuffle"})
    return [name for name, value in vars(Backend).items() if callable(value) and not name.startswith("_")
            and name not in optional and not callable(getattr(module, name, None))]
