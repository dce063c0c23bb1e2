"""Every Python example in README.md runs as written."""

import re
import textwrap
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = [textwrap.dedent(block) for block in re.findall(r"^ *```python\n(.*?)^ *```", README.read_text(),
                                                            re.S | re.M)]


def test_the_readme_has_its_examples():
    assert len(EXAMPLES) >= 2  # the quickstart and the dask grid search


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.splitlines()[0] for example in EXAMPLES])
def test_a_readme_example_runs_as_written(example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence advice is beside the point here
        exec(compile(example, str(README), "exec"), {"__name__": "__readme__"})
