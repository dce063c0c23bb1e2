"""Every Python example in README.md and in docs/ runs as written."""

import re
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BEYOND_ONE_MACHINE = ROOT / "docs" / "beyond-one-machine.md"
# The modules an example may import that come with an optional extra, not with the tests'.
EXTRAS = {"dask_ml": "distributed", "ray": "distributed"}


def examples(page):
    """The Python blocks of a Markdown ``page``, dedented, each after as many empty lines as come before
    it on the page (so that a traceback names the page's own line)."""
    text = page.read_text()
    return ["\n" * text[:block.start(1)].count("\n") + textwrap.dedent(block[1])
            for block in re.finditer(r"^ *```python\n(.*?)^ *```", text, re.S | re.M)]


def skip_without_extras(example):
    """Skip, naming the extra to install, where ``example`` imports a module an extra brings."""
    for module in re.findall(r"^(?:from|import) (\w+)", example, re.M):
        if module in EXTRAS:
            pytest.importorskip(module, reason=f'{module} is in the {EXTRAS[module]} extra: '
                                               f'pip install -e ".[{EXTRAS[module]}]"')


README_EXAMPLES = examples(README)
DOCS = sorted((ROOT / "docs").glob("*.md"))
FRESH_MACHINE = README.read_text().split("## On a fresh machine")[1].split("\n## ")[0]


def test_the_fresh_machine_commands_run_from_the_root_of_a_clone():
    commands = [line for block in re.findall(r"^```bash\n(.*?)^```", FRESH_MACHINE, re.S | re.M)
                for line in block.splitlines()]
    assert commands == ["python3 -m venv .venv && source .venv/bin/activate",
                        'pip install -e ".[bench]" && python -m benchmarks --quick',
                        'pip install -e ".[test,distributed]" && python -m pytest -n auto']
    assert (README.parent / "pyproject.toml").exists()  # where they run: the README's folder


def test_the_readme_and_the_docs_have_their_examples():
    assert len(README_EXAMPLES) >= 2  # the quickstart and the dask grid search
    assert BEYOND_ONE_MACHINE in DOCS and BEYOND_ONE_MACHINE.relative_to(ROOT).as_posix() in README.read_text()
    # a client; Incremental, the adaptive searches, ParallelPostFit; Ray's joblib backend and Ray Tune
    assert len(examples(BEYOND_ONE_MACHINE)) >= 6


@pytest.mark.parametrize("example", README_EXAMPLES,
                         ids=[example.strip().splitlines()[0] for example in README_EXAMPLES])
def test_a_readme_example_runs_as_written(example, tmp_path, monkeypatch):
    skip_without_extras(example)
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence advice is beside the point here
        exec(compile(example, str(README), "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize("page", DOCS, ids=[page.name for page in DOCS])
def test_a_docs_page_runs_as_written(page, tmp_path, monkeypatch):
    """A page's examples run one after the other in one session, as a reader runs them (a cluster
    started by one is used by the next); a Dask client or a Ray left running by a failure is stopped."""
    page_examples = examples(page)
    for example in page_examples:
        skip_without_extras(example)
    monkeypatch.chdir(tmp_path)
    session = {"__name__": "__readme__"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for example in page_examples:
                exec(compile(example, str(page), "exec"), session)
    finally:
        if "distributed" in sys.modules:
            for value in list(session.values()):
                if isinstance(value, sys.modules["distributed"].Client):
                    value.close()
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()


def test_the_readme_pyproject_and_the_wheels_built_name_the_same_python_versions():
    pyproject = (README.parent / "pyproject.toml").read_text()
    low, high = map(int, re.search(r'^requires-python = ">=3\.(\d+),<3\.(\d+)"', pyproject, re.M).groups())
    built = re.search(r'^build = "(.*)"', pyproject, re.M)[1].split()
    assert built == [f"cp3{minor}-*" for minor in range(low, high)]
    assert f"Python 3.{low}–3.{high - 1}" in README.read_text()
