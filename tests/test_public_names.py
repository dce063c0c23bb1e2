"""Each public module names what it offers in ``__all__``: names it defines, not its imports or helpers."""

import importlib

import pytest

MODULES = ["fastgd", "fastgd.plots", "fastgd.schedules", "fastgd.callbacks", "fastgd.datasets", "fastgd.layers",
           "fastgd.optimizers", "fastgd.estimators", "fastgd.network", "fastgd.functions", "fastgd.gradcheck",
           "fastgd.lr_finder", "fastgd.kernels", "fastgd.diagnosis", "fastgd.errors"]


@pytest.mark.parametrize("name", MODULES)
def test_a_public_module_exports_only_its_public_names(name):
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(set(exported)) == len(exported), exported
    for attribute in exported:
        assert not attribute.startswith("_") or attribute == "__version__", attribute
        value = getattr(module, attribute)  # every name exists
        assert not isinstance(value, type(importlib)) or value.__name__.startswith(name + "."), attribute
        home = getattr(value, "__module__", name)
        if hasattr(module, "__path__"):  # a package gathers its modules' names
            assert home == name or home.startswith(name + "."), (attribute, home)
        else:
            assert home == name, (attribute, home)
    star = {}
    exec(f"from {name} import *", star)
    assert sorted(set(star) - {"__builtins__"}) == sorted(exported)
    assert not {"np", "check_X", "check_int", "dataclass", "tqdm"} & set(star)
