"""``python -m benchmarks`` from the repository's root: the run of ``python -m fastgd.benchmarks``."""

from fastgd.benchmarks.__main__ import main

main(prog="python -m benchmarks")
