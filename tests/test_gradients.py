"""Analytic gradients of every activation/loss combination against central differences."""

import warnings

import numpy as np
import pytest

import fastgd
from fastgd.kernels import Kernels
from conftest import BACKENDS, COMBINATIONS, make_problem


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hidden, output, loss", COMBINATIONS)
def test_backward_matches_central_differences(backend, hidden, output, loss):
    X, y = make_problem(output, n_out=3)
    net = fastgd.MLP([5, 7, 6, 3], hidden=hidden, output=output, loss=loss, backend=backend, random_state=1)
    errors = fastgd.check_gradients(net, X, y, eps=1e-6, l2=0.01)
    assert set(errors) == {"W0", "b0", "W1", "b1", "W2", "b2"}
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_layers_gradient(backend):
    layers = [fastgd.Dense(4, 6), fastgd.Tanh(), fastgd.Dense(6, 5), fastgd.ReLU(), fastgd.Dense(5, 3),
              fastgd.Sigmoid(), fastgd.Dense(3, 2), fastgd.Softmax()]
    net = fastgd.MLP(layers, backend=backend, random_state=0)
    X, y = make_problem("softmax", n_in=4, n_out=2)
    assert max(fastgd.check_gradients(net, X, y, l2=0.1).values()) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_activation_parameters_gradient(backend):
    layers = [fastgd.Dense(4, 6), fastgd.LeakyReLU(0.2), fastgd.Dense(6, 5), fastgd.ELU(0.5), fastgd.Dense(5, 3),
              fastgd.GELU(approximate="tanh"), fastgd.Dense(3, 2), fastgd.Softmax()]
    net = fastgd.MLP(layers, backend=backend, random_state=0)
    X, y = make_problem("softmax", n_in=4, n_out=2)
    assert max(fastgd.check_gradients(net, X, y, l2=0.1).values()) < 1e-6


def test_gradient_check_sees_a_wrong_gradient(monkeypatch):
    net = fastgd.MLP([5, 4, 3], backend="numpy", random_state=0)
    X, y = make_problem("softmax")
    original = Kernels.backward

    def off_by_a_bit(*args):
        value = original(*args)
        args[-1][3] *= 1.01  # one weight's gradient 1 % off
        return value

    monkeypatch.setattr(Kernels, "backward", off_by_a_bit)
    errors = fastgd.check_gradients(net, X, y)
    assert errors["W0"] > 1e-4
    assert errors["b1"] < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hidden, output, loss", COMBINATIONS)
def test_float32_gradients_match_at_a_float32_step(backend, hidden, output, loss):
    X, y = make_problem(output, n_out=3)
    net = fastgd.MLP([5, 7, 6, 3], hidden=hidden, output=output, loss=loss, backend=backend, dtype="float32",
                     random_state=1)
    # A pre-activation of these rows lies within the default step (1e-3) of leaky ReLU's kink
    # (in float64 too: errors of 0.02 to 0.07 there); the smallest step float32 measures passes it by.
    eps = 1e-4 if hidden == "leaky_relu" else None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default step for float32 raises no warning
        errors = fastgd.check_gradients(net, X, y, eps=eps, l2=0.01)
    assert max(errors.values()) < 1e-2, errors


def test_a_float32_step_too_small_to_measure_is_warned_about_and_zero_is_refused():
    net = fastgd.MLP([5, 4, 3], dtype="float32", random_state=0)
    X, y = make_problem("softmax")
    with pytest.warns(UserWarning, match="eps: a float32 model's loss is accurate to about 1e-7"):
        fastgd.check_gradients(net, X, y, eps=1e-6)
    for eps in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="^eps: expected a finite number > 0"):
            fastgd.check_gradients(net, X, y, eps=eps)


def test_large_inputs_are_sampled_rows_and_parameters(monkeypatch):
    X, y = make_problem("softmax", n=600, n_in=30, n_out=3, seed=2)
    net = fastgd.MLP([30, 40, 3], random_state=0)  # 1,363 parameters
    rows = np.sort(np.random.RandomState(0).choice(600, 256, replace=False))
    assert fastgd.check_gradients(net, X, y, max_params=None) == \
        fastgd.check_gradients(net, X[rows], y[rows], max_rows=None, max_params=None)
    checked = []
    monkeypatch.setattr(fastgd.gradcheck, "tqdm", lambda indices, **options: checked.append(indices) or indices)
    errors = fastgd.check_gradients(net, X, y)
    sizes = [30 * 40, 40, 40 * 3, 3]
    assert 1000 - len(sizes) <= len(checked[0]) <= 1000 + len(sizes)
    assert max(errors.values()) < 1e-6 and list(errors) == ["W0", "b0", "W1", "b1"]


def test_many_parameters_show_progress_and_bad_limits_are_named(capsys):
    X, y = make_problem("softmax", n=20, n_in=60, n_out=3)
    net = fastgd.MLP([60, 40, 3], random_state=0)  # 2,563 parameters
    fastgd.check_gradients(net, X, y, max_params=None)
    assert "check_gradients" in capsys.readouterr().err
    for name in ("max_rows", "max_params"):
        with pytest.raises(ValueError, match=f"^{name}: expected an integer >= 1"):
            fastgd.check_gradients(net, X, y, **{name: 0})
