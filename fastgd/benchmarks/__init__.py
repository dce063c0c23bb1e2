"""Benchmarks of fastgd, ``python -m fastgd.benchmarks``: throughput and time to accuracy of each
backend and peer against the NumPy reference."""
