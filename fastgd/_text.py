"""Docstrings as terminal text."""

import re
import shutil
import textwrap


def summary(doc: str) -> str:
    """The first paragraph of a docstring on one line, without reStructuredText's ``literal`` marks."""
    paragraph = textwrap.dedent(doc).strip().split("\n\n")[0]
    return re.sub(r"``(.*?)``", r"\1", " ".join(paragraph.split()))


def wrapped(text: str, indent: int = 0, first: str = "") -> str:
    """``text`` after ``first`` (padded to ``indent`` columns), wrapped to the terminal's width."""
    width = shutil.get_terminal_size().columns
    return textwrap.fill(text, width=max(width, 40), initial_indent=first.rjust(indent),
                         subsequent_indent=" " * indent)
