"""The documentation: every Python example in README.md and docs/ runs as written, every link
between the pages leads somewhere, and the reference pages build without a warning, with every
public name in them."""

import importlib
import json
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from fastgd.benchmarks import throughput
from test_public_names import MODULES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
DOCS = PAGES[1:]
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
FRESH_MACHINE = README.read_text().split("## On a fresh machine")[1].split("\n## ")[0]


def test_the_fresh_machine_commands_run_from_the_root_of_a_clone():
    commands = [line for block in re.findall(r"^```bash\n(.*?)^```", FRESH_MACHINE, re.S | re.M)
                for line in block.splitlines()]
    assert commands == ["python3 -m venv .venv && source .venv/bin/activate",
                        'pip install -e ".[bench]" && python -m benchmarks --quick',
                        'pip install -e ".[test,distributed]" && python -m pytest -n auto --dist loadfile']
    assert (README.parent / "pyproject.toml").exists()  # where they run: the README's folder


def test_the_readme_and_the_pages_have_their_examples():
    assert len(README_EXAMPLES) >= 2  # the quickstart and the estimators
    with_examples = {page.name for page in DOCS if examples(page)}
    assert with_examples >= {"guide.md", "course.md", "beyond-one-machine.md"}
    # a client; Incremental, the adaptive searches, ParallelPostFit; Ray's joblib backend and Ray Tune
    assert len(examples(ROOT / "docs" / "beyond-one-machine.md")) >= 6


@pytest.mark.parametrize("example", README_EXAMPLES,
                         ids=[example.strip().splitlines()[0] for example in README_EXAMPLES])
def test_a_readme_example_runs_as_written(example, tmp_path, monkeypatch):
    skip_without_extras(example)
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence advice is beside the point here
        exec(compile(example, str(README), "exec"), {"__name__": "__docs__"})


@pytest.mark.parametrize("page", [page for page in DOCS if examples(page)],
                         ids=[page.name for page in DOCS if examples(page)])
def test_a_docs_page_runs_as_written(page, tmp_path, monkeypatch):
    """A page's examples run one after the other in one session, as a reader runs them (a cluster
    started by one is used by the next); a Dask client or a Ray left running by a failure is stopped."""
    page_examples = examples(page)
    for example in page_examples:
        skip_without_extras(example)
    monkeypatch.chdir(tmp_path)
    session = {"__name__": "__docs__"}
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


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_every_link_of_a_page_leads_to_a_file(page):
    targets = re.findall(r"\]\(([^)#\s]+)", page.read_text())
    local = [target for target in targets if "://" not in target]
    assert all((page.parent / target).exists() for target in local), local
    if page == README:
        linked = {(page.parent / target).resolve() for target in local}
        assert linked >= {path.resolve() for path in DOCS if path.name != "index.md"}


def test_the_readme_headline_table_is_the_one_the_last_run_wrote():
    results = json.loads((ROOT / "docs" / "results" / "benchmarks.json").read_text())
    table = throughput.headline(results["throughput"])
    assert table in (ROOT / "docs" / "results" / "benchmarks.md").read_text()
    assert table in README.read_text()


def test_the_readme_pyproject_and_the_wheels_built_name_the_same_python_versions():
    pyproject = (README.parent / "pyproject.toml").read_text()
    low, high = map(int, re.search(r'^requires-python = ">=3\.(\d+),<3\.(\d+)"', pyproject, re.M).groups())
    built = re.search(r'^build = "(.*)"', pyproject, re.M)[1].split()
    assert built == [f"cp3{minor}-*" for minor in range(low, high)]
    assert f"Python 3.{low}–3.{high - 1}" in README.read_text()


def test_the_reference_builds_without_a_warning_and_names_every_public_name(tmp_path):
    build = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-n", "-W", "--keep-going", "-b", "html",
                            str(ROOT / "docs"), str(tmp_path)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr  # -n: a reference to a name that does not exist is a warning
    page = (tmp_path / "api.html").read_text()
    documented = set(re.findall(r'<dt class="sig[^"]*" id="([\w.]+)"', page))
    documented |= {f"module-{name}" for name in re.findall(r'id="module-([\w.]+)"', page)}
    missing = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attribute in module.__all__:
            value = getattr(module, attribute)
            if attribute == "__version__":
                continue
            if isinstance(value, type(sys)):
                wanted = {f"module-{value.__name__}"}
            elif hasattr(value, "__module__"):
                wanted = {f"{value.__module__}.{attribute}", f"{name}.{attribute}"}
            else:  # a value (a constant), documented where it is defined
                wanted = {anchor for anchor in documented if anchor.endswith(f".{attribute}")}
            if not wanted & documented:
                missing.append(f"{name}.{attribute}")
    assert not missing, missing
