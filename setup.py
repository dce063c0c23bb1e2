"""Build script: compiles the Cython kernels (``fastgd/kernels/_cython.pxi``), once per instruction set."""

import os
import platform

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

# FASTGD_BOUNDS_CHECK=1 builds the kernels for debugging: every block of a buffer a kernel
# reads or writes is checked against the buffer's length (a fault stops the process and says
# which), and so is every indexing of an array.
BOUNDS_CHECK = os.environ.get("FASTGD_BOUNDS_CHECK", "0") == "1"
# Reassociation (vectorised sums) and no errno from libm, as the Numba kernels
# do; never -ffast-math: it assumes no NaN or infinity, and divergence must show.
FLOAT_FLAGS = ["-O3", "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math"]
# No debug info (Python's own CFLAGS ask for it with -g): it is five sixths of each extension.
# The bounds-checked build keeps it, for a debugger.
DEBUG_FLAGS = [] if BOUNDS_CHECK else ["-g0"]

# Each build of the extension and its instruction-set flags; the registry
# (fastgd/kernels/__init__.py) loads the widest one the CPU runs.
BUILDS = {"_cython": []}
if platform.machine().lower() in ("x86_64", "amd64"):
    BUILDS["_cython_avx2"] = ["-mavx2", "-mfma"]
    BUILDS["_cython_avx512"] = ["-mavx2", "-mfma", "-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq",
                                "-mprefer-vector-width=512"]
# FASTGD_BUILDS=_cython,... builds only the builds it names (the bounds-checked build's test needs one).
ONLY = [name for name in os.environ.get("FASTGD_BUILDS", "").split(",") if name]
BUILDS = {name: flags for name, flags in BUILDS.items() if not ONLY or name in ONLY}

ext_modules = cythonize(
    [Extension(f"fastgd.kernels.{name}", [f"fastgd/kernels/{name}.pyx"], include_dirs=[numpy.get_include()],
               extra_compile_args=FLOAT_FLAGS + DEBUG_FLAGS + flags,
               define_macros=[("FASTGD_BOUNDS_CHECK", str(int(BOUNDS_CHECK)))])
     for name, flags in BUILDS.items()],
    compiler_directives={"language_level": 3, "boundscheck": BOUNDS_CHECK, "wraparound": BOUNDS_CHECK,
                         "cdivision": True, "initializedcheck": BOUNDS_CHECK},
    nthreads=os.cpu_count() or 1,
)

# The builds compile side by side, one per core.
setup(ext_modules=ext_modules, options={"build_ext": {"parallel": os.cpu_count() or 1}})
