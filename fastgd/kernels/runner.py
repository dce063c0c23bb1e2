"""A run of epochs over buffers checked once, on one thread or several: :class:`EpochRunner`."""

import functools

import numpy as np

from .._threads import blas_threads, pool, results
from .buffers import MAX_STEP, SYNC_LINE, _check_array, _check_int, generator_state


def _run(kernel, *args):
    """``kernel(*args)``. A Ctrl-C that reaches Python while compiled code returns its result
    surfaces as a ``SystemError`` caused by the ``KeyboardInterrupt``: raise the interrupt itself."""
    try:
        return kernel(*args)
    except SystemError as error:
        if isinstance(error.__cause__ or error.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise


class EpochRunner:
    """A run of epochs over buffers checked once (made by
    :meth:`Kernels.epoch_runner <fastgd.kernels.Kernels.epoch_runner>`)."""

    __slots__ = ("_kernels", "_arguments", "_batches", "_line_search", "_rng", "_shares", "_epoch")

    def __init__(self, kernels, arguments, batches, line_search, ws, rng, shares, threads_run):
        """``threads_run``: the kernel that runs on the threads, for ``shares`` not None."""
        self._kernels, self._batches, self._line_search = kernels, batches, line_search
        self._arguments, self._rng, self._shares = (arguments, ws), rng, shares
        self._epoch = self._one_thread if shares is None else {
            "batch_gradient": self._one_batch, "train_epoch_share": self._mini_batches,
            "train_epoch_units": self._units}[threads_run]

    def __call__(self, lrs, step: int) -> tuple[float, int, int]:
        """One epoch with learning rates ``lrs`` (float64, one per batch) from optimizer step ``step``:
        ``(mean loss per row over the batches, steps taken, status)``."""
        _check_array(lrs, "lrs", np.float64, (self._batches,), writable=True)
        if self._line_search and not np.isfinite(lrs).all():
            raise ValueError("lrs: a line search needs finite learning rates")  # it would search forever
        step = _check_int(step, "step", 0, MAX_STEP - self._batches)
        arguments, ws = self._arguments
        if self._rng is not None:
            self._shuffle(arguments[7])
        return self._epoch(lrs, step)

    def _one_thread(self, lrs, step):
        arguments, ws = self._arguments
        return _run(self._kernels.backend.train_epoch, *arguments, lrs, step, ws)

    def _shuffle(self, order):
        """``self._rng.shuffle(order)``, in the backend's kernel where it can read the generator's state."""
        bits = self._rng._bit_generator  # held while its state is written: re-seeding the RandomState replaces it
        words = generator_state(bits) if self._kernels.backend.SHUFFLES else None
        if words is None:
            self._rng.shuffle(order)
            return
        with bits.lock:
            _run(self._kernels.backend.shuffle, order, words)

    def _one_batch(self, lrs, step):
        """The epoch of one batch, its rows' gradient computed in shares on threads."""
        backend = self._kernels.backend
        (layout, params, grads, state, X, Y, weights, _, _, config), ws = self._arguments
        first_rows, shares, parts, losses = self._shares
        with blas_threads(1):  # the threads are the shares'
            futures = [pool(len(shares)).submit(_run, backend.batch_gradient, layout, params, part, X, Y, weights,
                                                 first, last, config, step, share_ws)
                       for first, last, share_ws, part in shares]
            try:
                losses[0] = _run(backend.batch_gradient, layout, params, grads, X, Y, weights, 0, first_rows, config,
                                 step, ws)
            finally:  # the other shares write into this run's buffers: never leave them running
                losses[1:] = results(futures)
            return _run(backend.batch_step, layout, params, grads, parts, state, X, Y, weights, losses, config, lrs,
                        step, ws)

    def _mini_batches(self, lrs, step):
        """An epoch of mini-batches (or of one batch by a line search), each batch's rows in shares on
        threads that meet at every step (:meth:`~fastgd.kernels.protocol.Backend.train_epoch_share`), BLAS
        on one thread each."""
        (layout, params, grads, state, X, Y, weights, order, batch_size, config), ws = self._arguments
        workspaces, parts, losses, partials = self._shares
        sync = _meeting_place(len(workspaces) + 1)
        share = functools.partial(self._kernels.backend.train_epoch_share, layout, params, grads, parts, state, X, Y,
                                  weights, order, batch_size, config, lrs, step)
        return _on_threads(share, sync, [(share_ws, t, sync, losses, partials)
                                         for t, share_ws in enumerate([ws, *workspaces])])

    def _units(self, lrs, step):
        """An epoch of one row a step, or of small dense batches, every layer split between threads that meet
        inside each step (:meth:`~fastgd.kernels.protocol.Backend.train_epoch_units`)."""
        (layout, params, _, state, X, Y, weights, order, batch_size, config), _ = self._arguments
        workspaces, own, exchange, partials = self._shares
        sync = _meeting_place(len(workspaces))
        share = functools.partial(self._kernels.backend.train_epoch_units, layout, params, state, X, Y, weights,
                                  order, batch_size, config, lrs, step)
        return _on_threads(share, sync, [(share_ws, own[t], t, sync, exchange, partials)
                                         for t, share_ws in enumerate(workspaces)])


def _meeting_place(threads):
    """Where ``threads`` threads meet (int64, zeros): a line of counters a thread, then the line of the
    "abandoned" flag. Each epoch has its own: a thread handed out just before a Ctrl-C, not yet seen, that
    starts later finds its meeting place abandoned rather than another epoch's."""
    return np.zeros(SYNC_LINE * (threads + 1), np.int64)


def _abandon(sync):
    """Tell the threads meeting at ``sync`` to stop waiting."""
    sync[sync.size - SYNC_LINE] = 1


def _on_threads(share, sync, arguments):
    """``share(*arguments[t])`` on as many threads at once, thread 0 this one, BLAS on one thread each,
    meeting at ``sync`` (:func:`_meeting_place`): thread 0's result. Threads that stop early, or cannot
    start, tell the others to stop waiting."""
    threads = len(arguments)
    others = []
    with blas_threads(1):
        try:
            for t in range(1, threads):
                others.append(pool(threads - 1).submit(_share, share, sync, arguments[t]))
            return _share(share, sync, arguments[0])
        except BaseException:  # before thread 0 ran (or while it was handing out the shares)
            _abandon(sync)
            raise
        finally:  # the others write into this run's buffers: never leave them running
            results(others, functools.partial(_abandon, sync))


def _share(share, sync, arguments):
    """One thread's ``share(*arguments)``; if it cannot run, the others stop waiting for it."""
    try:
        return _run(share, *arguments)
    except BaseException:
        _abandon(sync)
        raise
