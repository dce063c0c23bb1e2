"""Every Python example in README.md runs as written."""

import re
import textwrap
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = [textwrap.dedent(block) for block in re.findall(r"^ *```python\n(.*?)^ *```", README.read_text(),
                                                            re.S | re.M)]

FRESH_MACHINE = README.read_text().split("## On a fresh machine")[1].split("\n## ")[0]


def test_the_fresh_machine_commands_run_from_the_root_of_a_clone():
    commands = [line for block in re.findall(r"^```bash\n(.*?)^```", FRESH_MACHINE, re.S | re.M)
                for line in block.splitlines()]
    assert commands == ["python3 -m venv .venv && source .venv/bin/activate",
                        'pip install -e ".[bench]" && python -m benchmarks --quick',
                        'pip install -e ".[test]" && python -m pytest -n auto']
    assert (README.parent / "pyproject.toml").exists()  # where they run: the README's folder


def test_the_readme_has_its_examples():
    assert len(EXAMPLES) >= 2  # the quickstart and the dask grid search


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.splitlines()[0] for example in EXAMPLES])
def test_a_readme_example_runs_as_written(example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence advice is beside the point here
        exec(compile(example, str(README), "exec"), {"__name__": "__readme__"})


def test_the_readme_pyproject_and_the_wheels_built_name_the_same_python_versions():
    pyproject = (README.parent / "pyproject.toml").read_text()
    low, high = map(int, re.search(r'^requires-python = ">=3\.(\d+),<3\.(\d+)"', pyproject, re.M).groups())
    built = re.search(r'^build = "(.*)"', pyproject, re.M)[1].split()
    assert built == [f"cp3{minor}-*" for minor in range(low, high)]
    assert f"Python 3.{low}–3.{high - 1}" in README.read_text()
