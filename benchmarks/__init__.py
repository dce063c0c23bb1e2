"""Benchmarks of fastgd: training throughput of each backend against the NumPy reference."""
