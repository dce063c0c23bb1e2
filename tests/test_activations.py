"""The hidden activations beyond scikit-learn's four, as torch.nn.functional defines them."""

import numpy as np
import pytest

import fastgd
from conftest import BACKENDS, COMPILED, make_problem
from fastgd.layers import layers_of

# fastgd's spelling, and torch.nn.functional's call (torch imported by the tests that use it).
TORCH = {
    "leaky_relu": lambda F, z: F.leaky_relu(z),
    "leaky_relu(negative_slope=0.2)": lambda F, z: F.leaky_relu(z, negative_slope=0.2),
    "elu": lambda F, z: F.elu(z),
    "elu(alpha=0.5)": lambda F, z: F.elu(z, alpha=0.5),
    "gelu": lambda F, z: F.gelu(z),
    "gelu_tanh": lambda F, z: F.gelu(z, approximate="tanh"),
    "silu": lambda F, z: F.silu(z),
    "softplus": lambda F, z: F.softplus(z),
    "relu": lambda F, z: F.relu(z),
    "sigmoid": lambda F, z: F.sigmoid(z),
    "tanh": lambda F, z: F.tanh(z),
}
# Far into both tails, at 0, and at softplus's threshold (20: linear above it).
Z = np.array([-60, -40, -30, -25, -19.5, -5, -1, -1e-3, 0, 1e-3, 0.5, 3, 19.999, 20, 20.001, 25, 30, 40, 60],
             dtype=np.float64)


def through_one_unit(spelling, backend, dtype="float64"):
    """A [1, 1, 1] network whose output is its hidden unit's activation ``f(x)``."""
    net = fastgd.MLP([1, 1, 1], hidden=spelling, output="identity", backend=backend, dtype=dtype)
    net.params[:] = [1, 0, 1, 0]  # W0, b0, W1, b1
    return net


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spelling", TORCH)
def test_forward_values_match_torch_into_the_tails(backend, spelling):
    torch = pytest.importorskip("torch")
    expected = TORCH[spelling](torch.nn.functional, torch.tensor(Z)).numpy()
    got = through_one_unit(spelling, backend).predict(Z[:, None])
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spelling", TORCH)
def test_one_full_batch_sgd_step_matches_torch_autograd(backend, spelling):
    torch = pytest.importorskip("torch")
    X, y = make_problem("softmax", n=30, n_in=5, n_out=3, seed=2)
    X *= 8  # pre-activations well into both tails
    net = fastgd.MLP([5, 7, 6, 3], hidden=spelling, backend=backend, random_state=3)
    Ws = [torch.tensor(a, requires_grad=True) for a in net.weights]  # W0, b0, W1, b1, W2, b2
    lr, l2 = 0.1, 0.01

    a = torch.tensor(X)
    for l in range(3):
        z = a @ Ws[2 * l] + Ws[2 * l + 1]
        a = TORCH[spelling](torch.nn.functional, z) if l < 2 else z
    loss = torch.nn.functional.cross_entropy(a, torch.tensor(y)) + l2 / 2 * sum((W * W).sum() for W in Ws[::2])
    loss.backward()

    history = net.fit(X, y, epochs=1, optimizer=fastgd.SGD(lr=lr), l2=l2, train_metrics=False).history
    np.testing.assert_allclose(history["loss"][0], loss.item(), rtol=1e-12)
    for got, W in zip(net.weights, Ws):
        expected = (W - lr * W.grad).detach().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_activation_parameters_reach_every_kernel(backend, dtype):
    """A slope or alpha other than the default, in every mode, matches the reference."""
    X, y = make_problem("softmax", n=40, seed=4, dtype=np.dtype(dtype).type)
    for layers in ([fastgd.LeakyReLU(0.2), fastgd.ELU(0.5)], [fastgd.ELU(2.5), fastgd.LeakyReLU(-0.3)]):
        for batch_size in (None, 1, 8, 32):
            nets = [fastgd.MLP([fastgd.Dense(5, 9), layers[0], fastgd.Dense(9, 7), layers[1], fastgd.Dense(7, 3),
                                fastgd.Softmax()], backend=name, dtype=dtype, random_state=1)
                    for name in ("numpy", backend)]
            for net in nets:
                net.fit(X, y, epochs=2, batch_size=batch_size, optimizer=fastgd.SGD(lr=0.02, momentum=0.5),
                        l2=1e-3, train_metrics=False)
            rtol = 1e-10 if dtype == "float64" else 1e-4
            np.testing.assert_allclose(nets[1].params, nets[0].params, rtol=rtol,
                                       atol=rtol * np.abs(nets[0].params).max())
    default = fastgd.MLP([5, 4, 3], hidden=fastgd.LeakyReLU(), backend=backend, random_state=1)
    assert default.activations == ["leaky_relu", "softmax"]


def test_layers_spellings_and_files_round_trip(tmp_path):
    layers = [fastgd.Dense(4, 6), fastgd.LeakyReLU(0.2), fastgd.Dense(6, 5), fastgd.ELU(), fastgd.Dense(5, 5),
              fastgd.GELU(approximate="tanh"), fastgd.Dense(5, 4), fastgd.SiLU(), fastgd.Dense(4, 3),
              fastgd.Softplus(), fastgd.Dense(3, 2), fastgd.GELU(), fastgd.Dense(2, 2), fastgd.Softmax()]
    net = fastgd.MLP(layers, random_state=0)
    assert net.activations == ["leaky_relu(negative_slope=0.2)", "elu", "gelu_tanh", "silu", "softplus", "gelu",
                               "softmax"]
    assert [repr(layer) for layer in layers_of(net.sizes, net.activations)[1::2]] == [
        "LeakyReLU(negative_slope=0.2)", "ELU(alpha=1.0)", "GELU(approximate='tanh')", "SiLU()", "Softplus()",
        "GELU()", "Softmax()"]
    X, y = make_problem("softmax", n_in=4, n_out=2)
    net.fit(X, y, epochs=2, batch_size=8)
    net.save(tmp_path / "model.npz")
    loaded = fastgd.load(tmp_path / "model.npz")
    assert loaded.activations == net.activations
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
    same = fastgd.MLP([4, 3, 2], hidden="leaky_relu(negative_slope=0.2)", random_state=0)
    assert same.activations[0] == fastgd.MLP([4, 3, 2], hidden=fastgd.LeakyReLU(0.2)).activations[0]


@pytest.mark.parametrize("make, message", [
    (lambda: fastgd.LeakyReLU(float("nan")), "negative_slope: expected a finite number"),
    (lambda: fastgd.ELU("1"), "alpha: expected a finite number"),
    (lambda: fastgd.GELU(approximate="erf"), "approximate: expected 'none' or 'tanh'"),
    (lambda: fastgd.MLP([3, 4, 2], hidden="elu(alpha=inf)"), "hidden: unknown activation 'elu(alpha=inf)'"),
    (lambda: fastgd.MLP([3, 4, 2], output="gelu"), "output: unknown activation 'gelu'"),
    (lambda: fastgd.MLP([fastgd.Dense(3, 4), fastgd.SiLU(), fastgd.Dense(4, 2), fastgd.Softplus()]),
     "sizes (output activation): unknown activation 'softplus'"),
])
def test_bad_activations_are_named(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()
