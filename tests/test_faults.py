"""Faults: interruption, concurrent prediction, and no needless copies of the data."""

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastgd
from fastgd import _threads
from fastgd.kernels import Kernels
from conftest import BACKENDS, make_problem


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_mid_epoch_keeps_the_last_whole_epoch(backend, monkeypatch):
    X, y = make_problem("softmax", n=64)
    net = fastgd.MLP([5, 16, 3], backend=backend, random_state=0)
    seen = []

    class Record:
        def on_epoch_end(self, epoch, logs):
            seen.append((net.params.copy(), net.training.state.copy()))

    train_epoch = net.kernels.backend.train_epoch
    calls = []

    def interrupted(layout, params, grads, state, *rest):
        calls.append(1)
        if len(calls) == 3:  # half-way through the third epoch: weights and momentum half-updated
            params[: len(params) // 2] += 1.0
            state[0, :10] = 7.0
            raise KeyboardInterrupt
        return train_epoch(layout, params, grads, state, *rest)

    monkeypatch.setattr(net.kernels.backend, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, epochs=10, batch_size=8, optimizer=fastgd.SGD(lr=0.1, momentum=0.9), callbacks=[Record()])
    assert len(net.history_.epoch) == 2 and net.training.step == 2 * 8  # 64 rows in batches of 8
    np.testing.assert_array_equal(net.params, seen[-1][0])
    np.testing.assert_array_equal(net.training.state, seen[-1][1])
    monkeypatch.undo()
    net.fit(X, y, epochs=1, batch_size=8)  # and training goes on from there


# Dense batches of 64 rows split every layer between the threads, batches of 300 their rows.
MINI_BATCH_KERNELS = [(backend, kernel, batch_size)
                      for backend in BACKENDS for kernel, batch_size in [("train_epoch_units", 64),
                                                                         ("train_epoch_share", 300)]
                      if hasattr(fastgd.MLP([2, 2], backend=backend).kernels.backend, kernel)]


@pytest.mark.parametrize("backend, kernel, batch_size", MINI_BATCH_KERNELS)
@pytest.mark.parametrize("share", [0, 1])
def test_ctrl_c_in_a_two_thread_mini_batch_epoch_keeps_the_last_whole_epoch(backend, kernel, batch_size, share,
                                                                             monkeypatch):
    """Thread 0 (the fit's, where a Ctrl-C lands) or thread 1 stops half-way through an epoch whose
    threads meet at every step: the other stops waiting, and the model is the last whole epoch's."""
    monkeypatch.setattr(_threads, "MIN_FLOPS_PER_SHARE", 1)  # steps on two threads
    X, y = make_problem("softmax", n=4 * batch_size)
    net = fastgd.MLP([5, 16, 3], backend=backend, random_state=0)
    seen, calls = [], []

    class Record:
        def on_epoch_end(self, epoch, logs):
            seen.append((net.params.copy(), net.training.state.copy()))

    module = net.kernels.backend
    original, state_at = getattr(module, kernel), {"train_epoch_share": 4, "train_epoch_units": 2}[kernel]

    def interrupted(*args):
        if args[-4] == share:
            calls.append(threading.get_ident())
            if len(calls) == 3:  # the third epoch: weights and momentum scribbled on, then the interrupt
                args[1][: len(args[1]) // 2] += 1.0
                args[state_at][0, :10] = 7.0
                raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(module, kernel, interrupted)
    with threadpool_limits(2), pytest.raises(KeyboardInterrupt):
        net.fit(X, y, epochs=10, batch_size=batch_size, optimizer=fastgd.SGD(lr=0.1, momentum=0.9),
                callbacks=[Record()])
    assert set(calls) == {threading.get_ident()} if share == 0 else threading.get_ident() not in calls
    assert len(net.history_.epoch) == 2 and net.training.step == 2 * 4  # four batches an epoch
    np.testing.assert_array_equal(net.params, seen[-1][0])
    np.testing.assert_array_equal(net.training.state, seen[-1][1])
    monkeypatch.undo()
    net.fit(X, y, epochs=1, batch_size=batch_size)  # and training goes on from there


@pytest.mark.parametrize("backend", [name for name in BACKENDS
                                     if fastgd.MLP([2, 2], backend=name).kernels.splits_units])
@pytest.mark.parametrize("share", [0, 1])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_ctrl_c_in_a_two_thread_one_row_epoch_keeps_the_last_whole_epoch(backend, share, momentum, monkeypatch):
    """As for mini-batches, in an epoch of one row a step whose threads each train a part of every layer
    (plain SGD's steps in the backward pass, or momentum's after it)."""
    monkeypatch.setattr(_threads, "MIN_FLOPS_PER_UNITS", 1)
    X, y = make_problem("softmax", n=64)
    net = fastgd.MLP([5, 16, 3], backend=backend, random_state=0)
    seen, calls = [], []

    class Record:
        def on_epoch_end(self, epoch, logs):
            seen.append((net.params.copy(), net.training.state.copy()))

    module = net.kernels.backend
    train_epoch_units = module.train_epoch_units

    def interrupted(layout, params, state, *rest):
        if rest[-4] == share:
            calls.append(threading.get_ident())
            if len(calls) == 3:  # the third epoch: weights (and momentum) scribbled on, then the interrupt
                params[: len(params) // 2] += 1.0
                state[:, :10] = 7.0
                raise KeyboardInterrupt
        return train_epoch_units(layout, params, state, *rest)

    monkeypatch.setattr(module, "train_epoch_units", interrupted)
    with threadpool_limits(2), pytest.raises(KeyboardInterrupt):
        net.fit(X, y, epochs=10, batch_size=1, optimizer=fastgd.SGD(lr=0.05, momentum=momentum), callbacks=[Record()])
    assert set(calls) == {threading.get_ident()} if share == 0 else threading.get_ident() not in calls
    assert len(net.history_.epoch) == 2 and net.training.step == 2 * 64
    np.testing.assert_array_equal(net.params, seen[-1][0])
    np.testing.assert_array_equal(net.training.state, seen[-1][1])
    monkeypatch.undo()
    net.fit(X, y, epochs=1, batch_size=1)  # and training goes on from there


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_from_many_threads_matches_serial(backend):
    rng = np.random.RandomState(0)
    X, y = rng.standard_normal((3000, 6)), rng.randint(0, 4, 3000)
    net = fastgd.MLP([6, 32, 16, 4], backend=backend, random_state=0)
    net.fit(X, y, epochs=2, batch_size=64)
    chunks = [X[i : i + 97 * (1 + i % 5)] for i in range(0, 3000, 150)]
    serial = [(net.predict(c), net.predict_proba(c)) for c in chunks]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            concurrent = list(pool.map(lambda c: (net.predict(c), net.predict_proba(c)), chunks))
            for (labels, proba), (want_labels, want_proba) in zip(concurrent, serial):
                np.testing.assert_array_equal(labels, want_labels)
                np.testing.assert_array_equal(proba, want_proba)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_does_not_copy_ready_data(dtype, monkeypatch):
    X, y = make_problem("softmax", n=50)
    X = np.ascontiguousarray(X, dtype=dtype)
    net = fastgd.MLP([5, 4, 3], dtype=dtype, random_state=0)
    given = []
    runner = Kernels.epoch_runner

    def spy(self, params, grads, state, X_seen, *rest):
        given.append(X_seen)
        return runner(self, params, grads, state, X_seen, *rest)

    monkeypatch.setattr(Kernels, "epoch_runner", spy)
    net.fit(X, y, epochs=2, batch_size=10)
    assert all(seen is X for seen in given)
    net.fit(X.astype(np.float16), y, epochs=1)  # another dtype: converted once, at the door
    assert given[-1] is not X and given[-1].dtype == dtype


# Fits (each with a metrics pass over its rows) in a loop while another thread sends SIGINT
# every 0.5-10 ms; counts what each fit ended with.
INTERRUPTED = """
import collections, json, os, random, signal, sys, threading, time
import numpy as np
import fastgd
X = np.random.RandomState(0).standard_normal((3000, 20))
y = np.arange(3000) % 3
batch_size, hidden, rows = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
X, y = X[:rows], y[:rows]
net = fastgd.MLP([20, hidden, 3], backend=sys.argv[1], random_state=0)
net.fit(X[:100], y[:100])
seen = collections.Counter()
deadline, stop, ready = time.time() + float(sys.argv[2]), threading.Event(), threading.Event()

def interrupt():
    ready.wait()  # until the loop below catches interrupts
    while not stop.is_set():
        time.sleep(random.uniform(0.0005, 0.01))
        os.kill(os.getpid(), signal.SIGINT)

sender = threading.Thread(target=interrupt)
sender.start()
while True:
    try:
        ready.set()
        if stop.is_set():
            sender.join()
            time.sleep(0.2)  # any interrupt still pending lands here
            break
        # Until enough of each, however slow the machine (an interrupt may land in this test too).
        if (seen["KeyboardInterrupt"] > 50 and seen["ok"] > 10) or time.time() > deadline:
            stop.set()
            continue
        net.fit(X, y, batch_size=batch_size)
        seen["ok"] += 1
    except KeyboardInterrupt:
        seen["KeyboardInterrupt"] += 1
    except BaseException as error:
        seen[f"{type(error).__name__}: {error}"] += 1
print(json.dumps(seen))
"""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_size, hidden, rows", [(3000, 64, 3000), (128, 1024, 384)],
                         ids=["full-batch", "mini-batch"])
def test_ctrl_c_anywhere_in_a_fit_is_a_keyboard_interrupt(backend, batch_size, hidden, rows):
    # On two cores the mini-batch fits split their steps across two threads where the backend can
    # (128 rows a step of [20, 1024, 3]: 12.8 MFLOP).
    done = subprocess.run([sys.executable, "-c", INTERRUPTED, backend, "120", str(batch_size), str(hidden), str(rows)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen.pop("KeyboardInterrupt", 0) > 50 and seen.pop("ok", 0) > 10, seen
    # Before, Numba's metrics pass turned some into "SystemError: ... returned a result with an exception set".
    assert not seen
