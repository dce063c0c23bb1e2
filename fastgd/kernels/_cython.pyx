# cython: language_level=3, cdivision=True
"""Cython backend, built for any x86-64 (or other) CPU: the kernels of ``_cython.pxi``."""

include "_cython.pxi"
