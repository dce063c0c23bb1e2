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
EXAMPLES = [(page, textwrap.dedent(block)) for page in PAGES
            for block in re.findall(r"^ *```python\n(.*?)^ *```", page.read_text(), re.S | re.M)]

FRESH_MACHINE = README.read_text().split("## On a fresh machine")[1].split("\n## ")[0]


def test_the_fresh_machine_commands_run_from_the_root_of_a_clone():
    commands = [line for block in re.findall(r"^```bash\n(.*?)^```", FRESH_MACHINE, re.S | re.M)
                for line in block.splitlines()]
    assert commands == ["python3 -m venv .venv && source .venv/bin/activate",
                        'pip install -e ".[bench]" && python -m benchmarks --quick',
                        'pip install -e ".[test]" && python -m pytest -n auto']
    assert (README.parent / "pyproject.toml").exists()  # where they run: the README's folder


def test_the_readme_and_the_pages_have_their_examples():
    assert sum(page == README for page, _ in EXAMPLES) >= 2  # the quickstart and the estimators
    assert {page.name for page, _ in EXAMPLES} >= {"README.md", "guide.md", "course.md"}


@pytest.mark.parametrize("page, example", EXAMPLES,
                         ids=[f"{page.name}:{example.splitlines()[0]}" for page, example in EXAMPLES])
def test_an_example_runs_as_written(page, example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence advice is beside the point here
        exec(compile(example, str(page), "exec"), {"__name__": "__docs__"})


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_link_of_a_page_leads_to_a_file(page):
    targets = re.findall(r"\]\(([^)#\s]+)", page.read_text())
    local = [target for target in targets if "://" not in target]
    assert all((page.parent / target).exists() for target in local), local
    if page == README:
        linked = {(page.parent / target).resolve() for target in local}
        assert linked >= {path.resolve() for path in PAGES[1:] if path.name != "index.md"}


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
    documented = set(re.findall(r'<dt class="sig[^"]*" id="([\w.]+)"', (tmp_path / "api.html").read_text()))
    documented |= {f"module-{name}" for name in re.findall(r'id="module-([\w.]+)"', (tmp_path / "api.html").read_text())}
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
