"""scikit-learn's own MLP tests, ``sklearn/neural_network/tests/test_mlp.py`` from the installed
scikit-learn, run against fastgd's estimators on every backend: the module's source with only its
import of ``MLPClassifier`` and ``MLPRegressor`` swapped, so a new scikit-learn release is checked
as it comes. Each test is collected once per backend as ``<name>__<backend>``."""

import inspect
import pathlib

import pytest
import sklearn

import fastgd
from conftest import BACKENDS

SOURCE = pathlib.Path(sklearn.__file__).parent / "neural_network" / "tests" / "test_mlp.py"
IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor"

# Tests that read scikit-learn's private internals, which fastgd's estimators do not have.
PRIVATE = {
    "test_fit": "sets and reads scikit-learn's private coefficient buffers and _forward_pass_fast",
    "test_gradient": "calls scikit-learn's private _loss_grad_lbfgs (fastgd checks its gradients against "
                     "scikit-learn's in tests/test_sklearn_steps.py and numerically in tests/test_gradients.py)",
    "test_learning_rate_warmstart": "reads scikit-learn's private _optimizer",
    "test_adaptive_learning_rate": "reads scikit-learn's private _optimizer",
}


def with_backend(Estimator, backend):
    """``Estimator`` with ``backend`` as its default, as a class of this module that pickle finds."""
    signature = inspect.signature(Estimator.__init__)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("backend", backend)
        Estimator.__init__(self, *args, **kwargs)

    __init__.__signature__ = signature.replace(parameters=[
        p.replace(default=backend) if p.name == "backend" else p for p in signature.parameters.values()])
    qualname = f"{Estimator.__name__}_{backend}"
    globals()[qualname] = cls = type(Estimator.__name__, (Estimator,), {
        "__init__": __init__, "__module__": __name__, "__qualname__": qualname, "__doc__": Estimator.__doc__})
    return cls


def _collect():
    source = SOURCE.read_text()
    assert IMPORT in source, f"{SOURCE} no longer imports the estimators as {IMPORT!r}"
    source = source.replace(IMPORT, "MLPClassifier, MLPRegressor = _ESTIMATORS")
    code = compile(source, str(SOURCE), "exec")
    for backend in BACKENDS:
        namespace = {"__name__": f"{__name__}.{backend}", "_ESTIMATORS": (
            with_backend(fastgd.MLPClassifier, backend), with_backend(fastgd.MLPRegressor, backend))}
        exec(code, namespace)
        for name, test in namespace.items():
            if name.startswith("test_") and callable(test):
                globals()[f"{name}__{backend}"] = test


_collect()


@pytest.fixture(params=[42])
def global_random_seed(request):
    """scikit-learn's fixture of the same name, at its default seed."""
    return request.param


@pytest.fixture(autouse=True)
def _private(request):
    name = request.node.originalname.rsplit("__", 1)[0]
    if name in PRIVATE:
        pytest.skip(f"scikit-learn internals: {PRIVATE[name]}")
