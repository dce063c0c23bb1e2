"""Build script: compiles the Cython kernels (``fastgd/kernels/*.pyx``) when there are any."""

import os
from pathlib import Path

from setuptools import setup

# FASTGD_BOUNDS_CHECK=1 builds the kernels with bounds and wraparound checks, for debugging.
BOUNDS_CHECK = os.environ.get("FASTGD_BOUNDS_CHECK", "0") == "1"
# Reassociation (vectorised sums) and no errno from libm, as the Numba kernels
# do; never -ffast-math: it assumes no NaN or infinity, and divergence must show.
FLOAT_FLAGS = ["-O3", "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math"]

sources = sorted(str(p) for p in Path("fastgd/kernels").glob("*.pyx"))
ext_modules = []
if sources:
    import numpy
    from Cython.Build import cythonize
    from setuptools import Extension

    ext_modules = cythonize(
        [Extension(f"fastgd.kernels.{Path(s).stem}", [s], include_dirs=[numpy.get_include()],
                   extra_compile_args=FLOAT_FLAGS) for s in sources],
        compiler_directives={"language_level": 3, "boundscheck": BOUNDS_CHECK, "wraparound": BOUNDS_CHECK,
                             "cdivision": True, "initializedcheck": BOUNDS_CHECK},
    )

setup(ext_modules=ext_modules)
