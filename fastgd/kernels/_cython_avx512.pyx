# cython: language_level=3, cdivision=True
"""Cython backend, built with AVX-512 (F, VL, BW, DQ) and 512-bit vectors (twice the
width of the AVX2 build): the kernels of ``_cython.pxi``, loaded on CPUs that have them."""

include "_cython.pxi"
