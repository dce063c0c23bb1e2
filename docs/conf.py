"""Sphinx configuration: the Markdown pages (MyST) and the API reference from the docstrings.

``sphinx-build -W -n docs docs/_build`` fails on any warning, a reference to a name that does not
exist included (the tests build it so)."""

project = "fastgd"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_preprocess_types = True
napoleon_use_rtype = False

# Names of other projects: not resolved here (no network while building), so not checked.
nitpick_ignore_regex = [
    ("py:.*", r"(numpy|np|scipy|sklearn|matplotlib|collections|typing|pathlib|os)\b.*"),
    # the words of a NumPy-style type ("list of layers", "shape (n_layers, 7)"): lower case, not ours
    ("py:class", r"(?!fastgd)[^A-Z]*"),
]
napoleon_type_aliases = {"Optimizer": "~fastgd.optimizers.Optimizer", "TrainingState": "~fastgd.training.TrainingState"}

# scikit-learn's metadata-routing setters, generated on every estimator: its own reference has them.
autodoc_default_options = {"exclude-members": "set_fit_request, set_partial_fit_request, set_score_request"}
