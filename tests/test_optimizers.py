"""Optimizers, schedules, clipping and line search: every backend against the
documented update equations, written out here independently of the library."""

import tracemalloc

import numpy as np
import pytest
from sklearn.datasets import make_moons

import fastgd
from conftest import BACKENDS, COMPILED
from fastgd._codes import LOSSES, OK
from fastgd.kernels import step_config
from fastgd.schedules import Constant, CosineAnnealing, ExponentialDecay, InverseScaling, StepDecay

STEPS = 50


def assert_close(got, expected, rtol):
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


# ---------------------------------------------------------------- the equations, as documented
def sgd(lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, sutskever=False):
    buffer = None
    velocity = 0.0

    def step(w, g, t):
        nonlocal buffer, velocity
        g = g + weight_decay * w
        if momentum and sutskever:
            velocity = momentum * velocity - lr * g
            return w + (momentum * velocity - lr * g if nesterov else velocity)
        if momentum:
            buffer = g.copy() if buffer is None else momentum * buffer + (1 - dampening) * g
            g = g + momentum * buffer if nesterov else buffer
        return w - lr * g
    return step


def momentum_ema(lr, beta=0.9):
    v = 0.0

    def step(w, g, t):
        nonlocal v
        v = beta * v + (1 - beta) * g
        return w - lr * v
    return step


def adam(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False,
         eps_hat=False):
    m = v = v_max = 0.0

    def step(w, g, t):
        nonlocal m, v, v_max
        t += 1
        if decoupled:
            w = w * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * w
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        v_max = np.maximum(v_max, v)
        if eps_hat:
            return w - lr * np.sqrt(1 - beta2**t) / (1 - beta1**t) * m / (np.sqrt(v_max if amsgrad else v) + eps)
        v_hat = (v_max if amsgrad else v) / (1 - beta2**t)
        return w - lr * (m / (1 - beta1**t)) / (np.sqrt(v_hat) + eps)
    return step


def adamw(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, amsgrad=False):
    return adam(lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled=True)


def rmsprop(lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, centered=False):
    s = a = b = 0.0

    def step(w, g, t):
        nonlocal s, a, b
        s = alpha * s + (1 - alpha) * g**2
        a = alpha * a + (1 - alpha) * g
        d = np.sqrt(s - a**2 if centered else s) + eps
        if momentum:
            b = momentum * b + g / d
            return w - lr * b
        return w - lr * g / d
    return step


def adagrad(lr=1e-2, eps=1e-10):
    s = 0.0

    def step(w, g, t):
        nonlocal s
        s = s + g**2
        return w - lr * g / (np.sqrt(s) + eps)
    return step


EQUATIONS = {"SGD": sgd, "Momentum": momentum_ema, "Adam": adam, "AdamW": adamw, "RMSprop": rmsprop,
             "Adagrad": adagrad}
SETTINGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, weight_decay=0.05)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.9, sutskever=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, sutskever=True)),
    ("Momentum", dict(lr=0.2)),
    ("Momentum", dict(lr=0.3, beta=0.5)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.02, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, eps=1e-3, eps_hat=True)),
    ("Adam", dict(lr=0.01, eps=1e-3, eps_hat=True, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.005, momentum=0.9)),
    ("RMSprop", dict(lr=0.005, centered=True)),
    ("RMSprop", dict(lr=0.002, alpha=0.9, momentum=0.5, centered=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.05, eps=1e-6)),
]
IDS = [f"{name}-" + "-".join(f"{k}={v}" for k, v in kwargs.items()) for name, kwargs in SETTINGS]


class Problem:
    """A fixed network and batch, with the loss and gradient at any weights from the reference kernels."""

    def __init__(self, l2=0.0, seed=0):
        rng = np.random.RandomState(seed)
        self.X = rng.standard_normal((12, 4))
        self.y = rng.randint(0, 3, 12)
        self.l2 = l2
        self.net = self.model("numpy")
        self.kernels = self.net.kernels
        _, self.Y, _ = self.net.encode(self.X, self.y)
        self.ws = self.kernels.workspace(12)

    def model(self, backend, dtype="float64"):
        return fastgd.MLP([4, 6, 5, 3], hidden="tanh", backend=backend, dtype=dtype, random_state=1)

    def gradient(self, w):
        g = np.empty_like(w)
        self.kernels.backward(w, self.X, self.Y, step_config("cross_entropy", l2=self.l2), self.ws, g)
        return g

    def loss(self, w):
        value, _ = self.kernels.data_loss(w, self.X, self.Y, LOSSES["cross_entropy"], self.ws)
        return value + self.kernels.l2_penalty(w, self.l2)

    def fit(self, backend, optimizer, epochs=STEPS, **options):
        net = self.model(backend)
        history = net.fit(self.X, self.y, epochs=epochs, optimizer=optimizer, l2=self.l2, train_metrics=False,
                          **options)
        return net, history


def run_equations(problem, step, steps=STEPS, clip=None):
    w = problem.net.params.copy()
    for t in range(steps):
        g = problem.gradient(w)
        w = step(w, clip(g) if clip else g, t)
    return w


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, kwargs", SETTINGS, ids=IDS)
def test_fifty_steps_follow_the_documented_equations(backend, name, kwargs):
    problem = Problem(l2=1e-3)
    net, _ = problem.fit(backend, getattr(fastgd, name)(**kwargs))
    expected = run_equations(problem, EQUATIONS[name](**kwargs))
    assert_close(net.params, expected, 1e-10)
    assert not np.allclose(expected, problem.net.params, rtol=1e-3)  # the steps did move the weights


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("schedule, rates", [
    (ExponentialDecay(0.2, 0.95), lambda t: 0.2 * 0.95**t),
    (StepDecay(0.2, step_size=10, gamma=0.5), lambda t: 0.2 * 0.5 ** (t // 10)),
    (lambda t: 0.3 / (1 + t), lambda t: 0.3 / (1 + t)),
], ids=["exponential", "step", "callable"])
def test_schedules_set_each_steps_rate(backend, schedule, rates):
    problem = Problem()
    net, _ = problem.fit(backend, fastgd.SGD(lr=schedule, momentum=0.5), epochs=25)
    plain = sgd(1.0, momentum=0.5)
    expected = run_equations(problem, lambda w, g, t: w - rates(t) * (w - plain(w, g, t)), steps=25)
    assert_close(net.params, expected, 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_survives_between_fits(backend):
    problem = Problem()
    whole, _ = problem.fit(backend, fastgd.Adam(lr=0.01, amsgrad=True), epochs=30)
    halves = problem.model(backend)
    halves.fit(problem.X, problem.y, epochs=15, optimizer=fastgd.Adam(lr=0.01, amsgrad=True))
    halves.fit(problem.X, problem.y, epochs=15)  # optimizer=None: the same Adam, its moments and step count
    np.testing.assert_array_equal(halves.params, whole.params)


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-4)])
@pytest.mark.parametrize("batch_size", [1, 5, 17], ids=["stochastic", "mini5", "mini17"])
@pytest.mark.parametrize("name, kwargs", SETTINGS[2::3] + [("BacktrackingLineSearch", {})],
                         ids=IDS[2::3] + ["line-search"])
def test_mini_batches_match_reference(backend, dtype, rtol, batch_size, name, kwargs):
    rng = np.random.RandomState(3)
    X, y = rng.standard_normal((40, 4)), rng.randint(0, 3, 40)
    nets = [fastgd.MLP([4, 20, 3], hidden="relu", backend=b, dtype=dtype, random_state=2) for b in ("numpy", backend)]
    # Gentler steps than the settings': at a full step (a line search from alpha0 = 1) this problem
    # is chaotic, and float32 rounding alone moves the reference's own weights by 1.5e-4 after 120
    # steps (float32 against float64); at a fifth of it, by under 1e-6, on every backend and build.
    spec = getattr(fastgd, name)
    rate = kwargs.get(spec.learning_rate, getattr(spec(), spec.learning_rate))
    optimizer = spec(**kwargs | {spec.learning_rate: rate / 5})
    histories = [net.fit(X, y, epochs=3, batch_size=batch_size, optimizer=optimizer, l2=1e-3,
                         clip_value=5.0, train_metrics=False).history for net in nets]
    assert_close(nets[1].params.astype(np.float64), nets[0].params.astype(np.float64), rtol)
    assert_close(histories[1]["loss"], histories[0]["loss"], rtol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer, slot, expected", [
    (fastgd.Adam(beta1=0.9, beta2=0.999), 0, 0.1), (fastgd.Adam(beta1=0.9, beta2=0.999), 1, 0.001),
    (fastgd.RMSprop(alpha=0.99), 0, 0.01), (fastgd.Momentum(lr=0.1, beta=0.99), 0, 0.01),
], ids=["adam-m", "adam-v", "rmsprop", "momentum"])
def test_float32_moments_take_each_coefficient_rounded_once(backend, optimizer, slot, expected):
    """From zero state and a unit gradient, one step stores ``1 - beta`` rounded to float32 once,
    as the reference does; ``1 - float32(0.999)`` would be 4.7e-5 off and bias Adam's every step."""
    net = fastgd.MLP([2, 2], output="softmax", backend=backend, dtype="float32", random_state=0)
    state = np.zeros((optimizer.n_slots, net.kernels.n_params), np.float32)
    config = step_config("cross_entropy", optimizer.rule, optimizer.hyper())
    net.kernels.update(net.params.copy(), np.ones_like(net.params), state, config, 1e-3, 0)
    np.testing.assert_array_equal(state[slot], np.float32(expected))


# ---------------------------------------------------------------- line search
def armijo(problem, alpha0=1.0, rho=0.5, c=1e-4, min_step=1e-10, fallback_step=1e-6):
    taken = []

    def step(w, g, t):
        a, f = alpha0, problem.loss(w)
        while a >= min_step:
            if problem.loss(w - a * g) <= f - c * a * (g @ g):
                break
            a *= rho
        else:
            a = fallback_step
        taken.append(a)
        return w - a * g
    return step, taken


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kwargs", [dict(alpha0=10.0), dict(alpha0=4.0, rho=0.3, c=0.2)])
def test_line_search_follows_armijo(backend, kwargs):
    problem = Problem(l2=1e-2)
    net, history = problem.fit(backend, fastgd.BacktrackingLineSearch(**kwargs))
    step, taken = armijo(problem, **kwargs)
    expected = run_equations(problem, step)
    assert_close(net.params, expected, 1e-10)
    np.testing.assert_allclose(history.history["step_size"], taken, rtol=1e-12)
    assert len(set(taken)) > 1  # the search did backtrack by different amounts


@pytest.mark.parametrize("backend", BACKENDS)
def test_line_search_falls_back_below_min_step(backend):
    problem = Problem()
    # c close to 1 asks for more decrease than any step gives: every search ends at the fallback.
    net, history = problem.fit(backend, fastgd.BacktrackingLineSearch(c=0.999999, min_step=1e-3,
                                                                      fallback_step=1e-4), epochs=3)
    assert history.history["step_size"] == [1e-4] * 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_line_search_beats_a_fixed_step_on_moons(backend):
    X, y = make_moons(300, noise=0.2, random_state=0)
    accuracies = {}
    for name, optimizer in [("fixed", fastgd.SGD(lr=0.1)), ("line search", fastgd.BacktrackingLineSearch(alpha0=10.0))]:
        net = fastgd.MLP([2, 16, 1], hidden="sigmoid", output="sigmoid", backend=backend, random_state=0)
        history = net.fit(X, y, epochs=300, optimizer=optimizer)
        accuracies[name] = history.history["train_accuracy"][-1]
    assert accuracies["line search"] >= accuracies["fixed"] + 0.08, accuracies
    assert accuracies["line search"] > 0.9, accuracies


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_long_line_search_keeps_no_memory_per_step(backend):
    """Each step of a line search tries new points: what a run keeps does not grow with its steps."""
    X, y = make_moons(2000, noise=0.2, random_state=0)
    net = fastgd.MLP([2, 8, 2], backend=backend, random_state=0)
    X, Y, _ = net.encode(X, y)
    optimizer, kernels = fastgd.BacktrackingLineSearch(), net.kernels
    config = step_config(net.loss, optimizer.rule, optimizer.hyper())
    state, grads = np.zeros((1, kernels.n_params)), np.zeros(kernels.n_params)
    run = kernels.epoch_runner(net.params, grads, state, X, Y, np.arange(len(X)), 1, config, kernels.workspace(1, 1))
    first, second = np.ones(len(X)), np.ones(len(X))
    run(first, 0)  # makes what the steps reuse
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert run(second, len(X))[1:] == (len(X), OK)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 50_000, f"{kept} bytes kept after {len(X)} steps"


# ---------------------------------------------------------------- clipping
def torch_clip(clip_value=None, clip_norm=None):
    def clip(g):
        if clip_value:
            g = np.clip(g, -clip_value, clip_value)
        if clip_norm:
            g = g * min(1.0, clip_norm / (np.linalg.norm(g) + 1e-6))
        return g
    return clip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bounds", [dict(clip_norm=0.3), dict(clip_value=0.02), dict(clip_value=0.05, clip_norm=0.1)],
                         ids=["norm", "value", "both"])
def test_clipping_follows_torch(backend, bounds):
    problem = Problem()
    net, _ = problem.fit(backend, fastgd.SGD(lr=0.5, momentum=0.9), **bounds)
    expected = run_equations(problem, sgd(0.5, momentum=0.9), clip=torch_clip(**bounds))
    assert_close(net.params, expected, 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_clip_kernel_bounds_the_global_norm(backend, dtype):
    kernels = fastgd.MLP([99, 5], backend=backend, dtype=dtype).kernels  # 500 parameters
    config = step_config("cross_entropy", clip_norm=2.5)
    grads = (np.random.RandomState(0).standard_normal(500) * 1e3).astype(dtype)
    kernels.clip(grads, config)
    assert np.linalg.norm(grads.astype(np.float64)) == pytest.approx(2.5, rel=1e-6 if dtype == "float64" else 1e-5)
    small = np.full(500, 1e-3, dtype)
    kernels.clip(small, config)
    np.testing.assert_array_equal(small, np.full(500, 1e-3, dtype))  # under the bound: untouched


@pytest.mark.parametrize("backend", BACKENDS)
def test_clipping_keeps_an_exploding_fit_finite(backend):
    rng = np.random.RandomState(0)
    X = rng.standard_normal((64, 3)) * 10
    y = X @ np.array([30.0, -20.0, 50.0])  # large targets: huge gradients for a step of 0.1
    results = {}
    for clip_norm in (None, 1.0):
        net = fastgd.MLP([3, 16, 1], output="identity", backend=backend, random_state=0)
        try:
            history = net.fit(X, y, epochs=20, optimizer=fastgd.SGD(lr=0.1), clip_norm=clip_norm)
        except fastgd.TrainingDiverged as diverged:
            history = diverged.history
        results[clip_norm] = history.history["loss"]
    assert len(results[None]) < 20  # diverged: stopped early
    assert len(results[1.0]) == 20 and np.all(np.isfinite(results[1.0]))
    assert results[1.0][-1] < results[1.0][0]
    # One clipped plain-SGD step of lr 1 moves the weights by exactly the bound.
    net = fastgd.MLP([3, 16, 1], output="identity", backend=backend, random_state=0)
    before = net.params.copy()
    net.fit(X, y, epochs=1, optimizer=fastgd.SGD(lr=1.0), clip_norm=1.0)
    assert np.linalg.norm(net.params - before) == pytest.approx(1.0, rel=1e-9)


# ---------------------------------------------------------------- schedules
def test_schedule_values():
    steps = np.arange(6)
    np.testing.assert_allclose(Constant(0.1)(steps), [0.1] * 6)
    np.testing.assert_allclose(StepDecay(1.0, step_size=2, gamma=0.5)(steps), [1, 1, 0.5, 0.5, 0.25, 0.25])
    np.testing.assert_allclose(ExponentialDecay(2.0, 0.5)(steps), 2.0 * 0.5 ** steps)
    np.testing.assert_allclose(InverseScaling(1.0, power_t=0.5)(steps), 1 / np.sqrt(steps + 1))
    cosine = CosineAnnealing(1.0, total_steps=6, min_lr=0.1, warmup_steps=2)(np.arange(8))
    np.testing.assert_allclose(cosine[:2], [0.5, 1.0])
    np.testing.assert_allclose(cosine[2], 1.0)
    np.testing.assert_allclose(cosine[4], 0.55)  # half-way from 1.0 to 0.1
    np.testing.assert_allclose(cosine[6:], [0.1, 0.1])
    assert np.all(np.diff(cosine[2:]) <= 0)


def test_a_bad_callable_schedule_is_named():
    net = fastgd.MLP([2, 3, 2], random_state=0)
    with pytest.raises(ValueError, match="^lr:"):
        net.fit(np.eye(2), [0, 1], optimizer=fastgd.SGD(lr=lambda t: float("nan")))


# ---------------------------------------------------------------- minimize
def test_minimize_learning_rates_on_a_parabola():
    values = {lr: fastgd.minimize(lambda x: float(x @ x), lambda x: 2 * x, [1.0], fastgd.SGD(lr=lr), 50).values
              for lr in (0.01, 0.1, 0.5, 1.1)}
    assert 0.1 < values[0.01][-1] < 1  # slow
    assert values[0.1][-1] < 1e-8  # converged
    assert values[0.5][1] == 0.0  # converged in one step: x - 0.5 * 2x
    assert values[1.1][-1] > 1e3 and np.all(np.diff(values[1.1]) > 0)  # diverged


def test_minimize_nesterov_beats_momentum_on_an_elongated_bowl():
    def f(p):
        return p[0] ** 2 + 100 * p[1] ** 2

    def grad(p):
        return np.array([2 * p[0], 200 * p[1]])

    runs = {nesterov: fastgd.minimize(f, grad, [1.0, 1.0], fastgd.SGD(lr=0.005, momentum=0.9, nesterov=nesterov), 100)
            for nesterov in (False, True)}
    assert runs[True].values[-1] < runs[False].values[-1] / 100
    assert runs[True].points.shape == (101, 2) and runs[True].values.shape == (101,)
    trajectory = fastgd.minimize(f, grad, [1.0, 1.0], fastgd.BacktrackingLineSearch(), 30)
    assert np.all(np.diff(trajectory.values) < 0) and np.all(trajectory.step_sizes < 1)  # backtracked, descended


def test_minimize_checks_its_arguments():
    with pytest.raises(ValueError, match="^x0:"):
        fastgd.minimize(np.sum, np.ones_like, [np.nan], fastgd.SGD(0.1))
    with pytest.raises(TypeError, match="^optimizer:"):
        fastgd.minimize(np.sum, np.ones_like, [1.0], "sgd")
    with pytest.raises(ValueError, match="^grad:"):
        fastgd.minimize(np.sum, lambda x: np.ones(3), [1.0, 2.0], fastgd.SGD(0.1))


# ---------------------------------------------------------------- bad hyper-parameters
@pytest.mark.parametrize("make, name", [
    (lambda: fastgd.SGD(lr=-0.1), "lr"),
    (lambda: fastgd.SGD(lr=0.0), "lr"),
    (lambda: fastgd.SGD(lr=float("nan")), "lr"),
    (lambda: fastgd.SGD(lr=0.1, momentum=-0.5), "momentum"),
    (lambda: fastgd.SGD(lr=0.1, dampening=1.5), "dampening"),
    (lambda: fastgd.SGD(lr=0.1, nesterov=True), "nesterov"),
    (lambda: fastgd.SGD(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (lambda: fastgd.SGD(lr=0.1, weight_decay=-1e-4), "weight_decay"),
    (lambda: fastgd.Momentum(lr=0.1, beta=1.0), "beta"),
    (lambda: fastgd.Momentum(lr=0.1, beta=-0.1), "beta"),
    (lambda: fastgd.Adam(beta1=1.0), "beta1"),
    (lambda: fastgd.Adam(beta2=1.2), "beta2"),
    (lambda: fastgd.Adam(eps=-1e-8), "eps"),
    (lambda: fastgd.AdamW(weight_decay=-0.01), "weight_decay"),
    (lambda: fastgd.RMSprop(alpha=1.0), "alpha"),
    (lambda: fastgd.RMSprop(momentum=-0.9), "momentum"),
    (lambda: fastgd.Adagrad(lr=0), "lr"),
    (lambda: fastgd.BacktrackingLineSearch(rho=1.0), "rho"),
    (lambda: fastgd.BacktrackingLineSearch(rho=0.0), "rho"),
    (lambda: fastgd.BacktrackingLineSearch(c=0.0), "c"),
    (lambda: fastgd.BacktrackingLineSearch(alpha0=-1.0), "alpha0"),
    (lambda: fastgd.BacktrackingLineSearch(min_step=0.0), "min_step"),
    (lambda: StepDecay(0.1, step_size=0), "step_size"),
    (lambda: CosineAnnealing(0.1, total_steps=10, warmup_steps=10), "warmup_steps"),
    (lambda: CosineAnnealing(0.1, total_steps=10, min_lr=0.2), "min_lr"),
])
def test_bad_hyper_parameters_are_named(make, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        make()


def test_flags_must_be_booleans():
    with pytest.raises(TypeError, match="^amsgrad:"):
        fastgd.Adam(amsgrad="yes")
    with pytest.raises(TypeError, match="^centered:"):
        fastgd.RMSprop(centered=1)


@pytest.mark.parametrize("bounds, name", [(dict(clip_norm=0.0), "clip_norm"), (dict(clip_value=-1.0), "clip_value")])
def test_bad_clipping_bounds_are_named_before_training(bounds, name):
    net = fastgd.MLP([2, 3, 2], random_state=0)
    before = net.params.copy()
    with pytest.raises(ValueError, match=f"^{name}:"):
        net.fit(np.eye(2), [0, 1], **bounds)
    np.testing.assert_array_equal(net.params, before)
