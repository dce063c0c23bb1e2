"""Benchmarks of fastgd beside its main run (``python -m fastgd.benchmarks``, here also ``python -m
benchmarks``): kernel by kernel timings, each optimizer, an estimator's overhead, memory and a first fit."""
