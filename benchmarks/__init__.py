"""Benchmarks of fastgd: throughput and time to accuracy of each backend and peer against the NumPy reference."""
