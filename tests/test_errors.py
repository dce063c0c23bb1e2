"""Bad input gets an error naming the argument, raised before anything changes."""

import numpy as np
import pytest

import fastgd
from conftest import BACKENDS

X = np.random.RandomState(0).standard_normal((20, 4))
y = np.arange(20) % 3


@pytest.fixture
def net():
    return fastgd.MLP([4, 5, 3], random_state=0)


BAD_FIT = [
    ({"X": X[:, 0]}, ValueError, r"^X: expected a 2-D array .* 1-D array of 20 values; use X.reshape\(-1, 1\)"),
    ({"X": X[:0], "y": y[:0]}, ValueError, "X: .*0 sample"),
    ({"X": np.full((20, 4), "a")}, ValueError, "X: .*convert"),
    ({"X": np.where(X > 1, np.nan, X)}, ValueError, "^X: contains NaN"),
    ({"X": np.where(X > 1, np.inf, X)}, ValueError, "X: .*infinity"),
    ({"X": X[:, :3]}, ValueError, "X: expected 4 features"),
    ({"y": np.where(y == 1, np.nan, y)}, ValueError, "y: contains NaN"),
    ({"y": y[:19]}, ValueError, "y: has 19 rows but X has 20"),
    ({"y": np.arange(20) % 4 + 10}, ValueError, r"y: 4 classes .* 3 unit\(s\), for 3 classes: widen it to 4 units"),
    ({"y": np.arange(20) % 2 + 10}, ValueError, "y: 2 distinct labels .* 3 unit.*use labels 0..2 or one-hot rows"),
    ({"y": np.eye(4)[y]}, ValueError, "y: one-hot rows must have 3 columns"),
    ({"y": y.reshape(-1, 1)}, ValueError, r"y: a column of shape \(20, 1\); pass class labels as a 1-D .*y.ravel"),
    ({"sample_weight": np.ones(19)}, ValueError, r"sample_weight: expected shape \(20,\), one weight per row"),
    ({"sample_weight": np.full(20, -1.0)}, ValueError, "sample_weight: weights must be finite and >= 0"),
    ({"sample_weight": np.zeros(20)}, ValueError, "sample_weight: .*not all 0"),
    ({"sample_weight": np.full(20, np.nan)}, ValueError, "sample_weight: weights must be finite"),
    ({"sample_weight": ["a"] * 20}, TypeError, "sample_weight: expected one number per row"),
    ({"epochs": 0}, ValueError, "epochs: expected an integer >= 1"),
    ({"epochs": 2.5}, ValueError, "epochs"),
    ({"batch_size": 0}, ValueError, "batch_size: expected an integer >= 1"),
    ({"l2": -1e-3}, ValueError, "l2: expected a finite number >= 0"),
    ({"l2": np.nan}, ValueError, "l2"),
    ({"optimizer": "sgd"}, TypeError, "optimizer: expected a fastgd optimizer"),
    ({"validation_data": (X, y[:5])}, ValueError, r"validation_data\[1\]: has 5 rows"),
    ({"validation_data": (X, y + 7)}, ValueError, r"validation_data\[1\]: unknown label"),
    ({"callbacks": [object()]}, TypeError, "callbacks: .* on_epoch_end"),
    ({"callbacks": [fastgd.EarlyStopping()]}, ValueError,
     r"callbacks: EarlyStopping monitors 'val_loss', which this fit does not log .*; pass validation_data="),
    ({"callbacks": [fastgd.ReduceLROnPlateau(monitor="train_loss")], "train_metrics": False}, ValueError,
     "callbacks: ReduceLROnPlateau monitors 'train_loss'.*; leave train_metrics=True"),
]


@pytest.mark.parametrize("change, error, message", BAD_FIT)
def test_bad_fit_arguments_raise_before_weights_change(net, change, error, message):
    arguments = {"X": X, "y": y, **change}
    before = net.params.copy()
    with pytest.raises(error, match=message):
        net.fit(arguments.pop("X"), arguments.pop("y"), **arguments)
    np.testing.assert_array_equal(net.params, before)
    assert net.classes_ is None and net.training.l2 == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weights, message", [
    (np.full(20, 1e308), r"^sample_weight: the weights add up to more than a float64 holds"),
    (np.where(np.arange(20) == 3, 1e-310, 1.0),
     r"^sample_weight: 1 weight\(s\) below 2.225e-308, .*\(the first: 1e-310 in row 3\), too small to divide by"),
], ids=["overflowing-total", "subnormal"])
def test_weights_a_batch_cannot_be_divided_by_are_refused_before_training(backend, weights, message):
    net = fastgd.MLP([4, 5, 3], backend=backend, random_state=0)
    before = net.params.copy()
    with pytest.raises(ValueError, match=message):
        net.fit(X, y, batch_size=1, sample_weight=weights)
    np.testing.assert_array_equal(net.params, before)
    assert net.classes_ is None


def test_poisson_targets_must_not_be_negative():
    net = fastgd.MLP([4, 5, 3], output="exp", random_state=0)
    before = net.params.copy()
    with pytest.raises(ValueError, match="^y: Poisson regression needs targets >= 0; got -2"):
        net.fit(X, -np.eye(3)[y] * 2)
    np.testing.assert_array_equal(net.params, before)


def test_a_second_fit_with_bad_labels_changes_nothing(net):
    net.fit(X, y, epochs=2)
    before, optimizer = net.params.copy(), net.optimizer
    with pytest.raises(ValueError, match="y: unknown label"):
        net.fit(X, y + 5, optimizer=fastgd.SGD(lr=1.0), l2=0.1)
    np.testing.assert_array_equal(net.params, before)
    assert net.optimizer is optimizer and net.training.l2 == 0.0


def test_unknown_label_at_evaluate(net):
    net.fit(X, y, epochs=1)
    with pytest.raises(ValueError, match=r"y: unknown label\(s\) \[9\]"):
        net.evaluate(X, np.where(y == 0, 9, y))


def test_predict_checks_features_and_fitting(net):
    with pytest.raises(RuntimeError, match="not been fitted"):
        net.predict(X)
    net.fit(X, y, epochs=1)
    with pytest.raises(ValueError, match="X: expected 4 features"):
        net.predict(X[:, :2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_refuses_outputs_past_the_dtype_s_range(backend):
    """An exp output grows without bound: finite weights can take it past float32's range (exp(89)),
    and predict says so, naming the rows, rather than return infinities."""
    net = fastgd.MLP([4, 1], output="exp", loss="poisson", backend=backend, dtype="float32", random_state=0)
    net.fit(X, np.ones(20), epochs=1)
    W, b = net.get_weights()
    net.set_weights([np.full_like(W, 10.0), b])
    inputs = np.vstack([np.zeros((2, 4)), np.full((1, 4), 3.0)])  # row 2: z = 120
    message = r"^X: the network's outputs are not finite for 1 row\(s\) \(the first: row 2\)"
    with pytest.raises(ValueError, match=message):
        net.predict(inputs)


@pytest.mark.parametrize("arguments, error, message", [
    ({"sizes": [4]}, ValueError, "sizes: need at least 2"),
    ({"sizes": [4, 0, 3]}, ValueError, "sizes: every width must be a positive integer"),
    ({"sizes": [4, -2, 3]}, ValueError, "sizes"),
    ({"sizes": [4, 2**31, 3]}, ValueError, r"sizes: every width must be a positive integer below 2\*\*31"),
    ({"sizes": [2**63, 3]}, ValueError, r"sizes: every width must be a positive integer below 2\*\*31"),
    ({"sizes": [2**31 - 1] * 4}, ValueError, "sizes: .* place more parameters than an int64 offset can"),
    ({"sizes": [fastgd.Dense(4, 2**31), fastgd.Dense(2**31, 3)]}, ValueError,
     r"sizes: layer 0 .* needs positive integer widths below 2\*\*31"),
    ({"sizes": 5}, TypeError, "sizes"),
    ({"dtype": "int32"}, ValueError, "dtype: must be 'float32' or 'float64'"),
    ({"dtype": "float16"}, ValueError, "dtype"),
    ({"hidden": "swish"}, ValueError, "hidden: unknown activation 'swish'; choose one of 'relu', 'sigmoid', 'tanh'"),
    ({"output": "relu"}, ValueError, "output: unknown activation 'relu'; choose one of 'softmax', 'sigmoid'"),
    ({"loss": "hinge"}, ValueError, "loss: unknown loss 'hinge'; choose one of 'cross_entropy', "
                                    "'binary_cross_entropy', 'mse', 'poisson'"),
    ({"loss": "poisson"}, ValueError, "loss: 'poisson' needs output='exp', got output='softmax'"),
    ({"loss": "cross_entropy", "output": "sigmoid"}, ValueError,
     "loss: 'cross_entropy' needs output='softmax', got output='sigmoid'"),
    ({"backend": "torch"}, ValueError, "backend: unknown backend 'torch'; choose one of 'auto', "),
    ({"sizes": [fastgd.ReLU(), fastgd.Dense(2, 2)]}, ValueError, "sizes: layer 0 .* must follow a Dense"),
    ({"sizes": [fastgd.Dense(2, 3), fastgd.Dense(4, 2)]}, ValueError, "sizes: layer 1 .* takes 4 inputs"),
])
def test_bad_model_arguments(arguments, error, message):
    arguments = {"sizes": [4, 5, 3], **arguments}
    with pytest.raises(error, match=message):
        fastgd.MLP(**arguments)


@pytest.mark.parametrize("lr", [0.0, -0.1, np.inf, np.nan, "0.1"])
def test_bad_learning_rate(lr):
    with pytest.raises(ValueError, match="lr: expected a finite number > 0"):
        fastgd.SGD(lr=lr)


@pytest.mark.parametrize("weights, error, message", [
    (lambda w: w[:-1], ValueError, "weights: expected 4 arrays"),
    (lambda w: [w[0].T] + w[1:], ValueError, r"weights\[0\]: expected shape \(4, 5\), got \(5, 4\)"),
    (lambda w: w[:3] + [w[3][:2]], ValueError, r"weights\[3\]: expected shape \(3,\)"),
    (lambda w: [w[0].astype(str)] + w[1:], TypeError, r"weights\[0\]: expected a real numeric array"),
    (lambda w: [w[0] * np.nan] + w[1:], ValueError, r"weights\[0\]: contains NaN"),
])
def test_set_weights_checks_everything_first(net, weights, error, message):
    before = net.params.copy()
    new = [w + 1 for w in net.get_weights()]
    with pytest.raises(error, match=message):
        net.set_weights(weights(new))
    np.testing.assert_array_equal(net.params, before)


@pytest.mark.parametrize("sizes, output, widen", [
    ([4, 2], "softmax", r"\(MLP\(\[\.\.\., 3\]\)\)$"),
    ([4, 1], "sigmoid", r"\(MLP\(\[\.\.\., 3\], output='softmax'\)\)$"),
])
def test_more_classes_than_output_units_suggests_widening_the_output_layer(sizes, output, widen):
    net = fastgd.MLP(sizes, output=output, random_state=0)
    units = sizes[-1]
    with pytest.raises(ValueError, match=rf"^y: 3 classes \['bird', 'cat', 'dog'\] but the output layer has {units} "
                                         rf"unit\(s\), for 2 classes: widen it to 3 units {widen}"):
        net.fit(X[:3], np.array(["bird", "cat", "dog"]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_diverged_fit_says_to_lower_the_learning_rate_and_scale_the_inputs(backend):
    targets = np.random.RandomState(1).standard_normal((20, 3))
    for scale, unscaled in ((1, ""), (1e4, r"; scale the inputs \(e.g. sklearn.preprocessing.StandardScaler; a "
                                           r"column's root mean square is 1.\d+e\+04, far from 1\)")):
        net = fastgd.MLP([4, 5, 3], output="identity", backend=backend, random_state=0)
        with pytest.raises(fastgd.TrainingDiverged, match=r"^training diverged in epoch \d .*the last finite epoch: "
                                                          r"lower the learning rate \(or clip gradients: "
                                                          rf"clip_norm=1.0\){unscaled}$"):
            net.fit(X * scale, targets, epochs=20, optimizer=fastgd.SGD(100.0))


def test_one_softmax_unit_suggests_what_to_use_instead():
    with pytest.raises(ValueError, match="softmax output needs at least 2 units; .*'identity' .*output='sigmoid'"):
        fastgd.MLP([10, 16, 1])


def test_rows_in_the_model_dtype_and_order_are_taken_as_they_are():
    from fastgd._validation import check_X

    assert check_X(X, np.float64, n_features=4) is X
    large = np.full((3, 2), 3e38, np.float32)  # finite, though their sum overflows (quietly)
    assert check_X(large, np.float32) is large
    for other in (np.asfortranarray(X), X.astype(np.float32), X[:, ::2]):
        checked = check_X(other, np.float64)
        assert checked.flags.c_contiguous and checked.dtype == np.float64
        np.testing.assert_array_equal(checked, other)
