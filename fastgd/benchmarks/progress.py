"""The run's progress on stderr: a tqdm bar over its steps that names what it is doing (the cell,
the system, warming up or timing) and for how long, refreshed by a thread every few seconds, so
that a step which lasts (a first compile, a peer's epoch in its own process) still shows."""

import contextlib
import os
import sys
import threading
import time

from tqdm.auto import tqdm
from tqdm.contrib import DummyTqdmFile

TERMINAL_EVERY = 1.0  # seconds between refreshes of the bar on a terminal
LOG_EVERY = 5.0  # seconds between lines where stderr is not a terminal (a CI log, a pipe)
SLOW_AFTER = 2.0  # seconds after which a stage's ``slow`` text (what it waits for) is shown


def compiling(dtype):
    """What a first fit of the Numba backend waits for."""
    return f"compiling the Numba kernels for {dtype} (once per machine; cached after)"


class _Lines:
    """tqdm's output where stderr is not a terminal: each refresh of the bar as a line of its own."""

    def __init__(self, stream):
        self.stream = stream
        self.encoding = getattr(stream, "encoding", None) or "utf-8"

    def write(self, text):
        text = text.strip("\r\n").rstrip()  # tqdm writes "\r" and the bar, padded with spaces
        if text:
            self.stream.write(text + "\n")

    def flush(self):
        self.stream.flush()


def _columns(stream):
    """The width of the terminal ``stream`` writes to; 0 when it has none (a pseudo-terminal no one sized)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


class Progress:
    """A context: a bar of ``total`` steps named ``desc``; ``stage(text)`` names what runs now, shown
    with its seconds so far. On a terminal the bar is redrawn at each stage and every second, and
    other output to stderr meanwhile (a library's notice, a warning) is written above it; elsewhere
    it is written as a line every ``LOG_EVERY`` seconds. ``enabled=False`` shows nothing."""

    def __init__(self, total, desc, unit, enabled=True, stream=None):
        stream = stream or sys.stderr
        terminal = enabled and stream.isatty()
        self.every = TERMINAL_EVERY if terminal else LOG_EVERY
        sized = terminal and _columns(stream) > 0
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=sized,
                        ncols=None if sized or not terminal else 120,
                        file=stream if terminal else _Lines(stream), mininterval=0.1 if terminal else LOG_EVERY,
                        bar_format="{desc}: {n_fmt}/{total_fmt} {unit}s |{bar:10}| {elapsed}{postfix}")
        self.enabled, self.terminal = enabled, terminal
        self.text, self.slow, self.started = "starting", None, time.perf_counter()
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.ticker = threading.Thread(target=self._tick, daemon=True)
        self.redirect = contextlib.redirect_stderr(DummyTqdmFile(stream)) if terminal else contextlib.nullcontext()

    def __enter__(self):
        if self.enabled:
            self.redirect.__enter__()
            self.ticker.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.stop.set()
            self.ticker.join()
            self.redirect.__exit__(*exc)
        self.bar.close()

    def stage(self, text, slow=None, refresh=True):
        """Name what runs now; ``slow``, what it waits for, is added once it has lasted ``SLOW_AFTER``
        seconds. ``refresh=False`` leaves the display to the next refresh."""
        with self.lock:
            self.text, self.slow, self.started = text, slow, time.perf_counter()
            self._show(refresh and self.terminal)

    def advance(self):
        """One step done."""
        with self.lock:
            self.bar.update(1)

    def _show(self, refresh):
        seconds = time.perf_counter() - self.started
        text = self.text
        if seconds >= SLOW_AFTER:
            text += f", {self.slow} {seconds:.0f} s" if self.slow else f" {seconds:.0f} s"
        self.bar.set_postfix_str(text, refresh=refresh)

    def _tick(self):
        while not self.stop.wait(self.every):
            with self.lock:
                self._show(True)
