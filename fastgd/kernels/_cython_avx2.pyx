# cython: language_level=3, cdivision=True
"""Cython backend, built with AVX2 and FMA (twice the vector width of the baseline
build): the kernels of ``_cython.pxi``, loaded on CPUs that have both."""

include "_cython.pxi"
