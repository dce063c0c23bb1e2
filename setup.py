"""Build script: compiles the Cython kernels (``fastgd/kernels/*.pyx``) when there are any."""

from pathlib import Path

from setuptools import setup

sources = sorted(str(p) for p in Path("fastgd/kernels").glob("*.pyx"))
ext_modules = []
if sources:
    import numpy
    from Cython.Build import cythonize
    from setuptools import Extension

    ext_modules = cythonize(
        [Extension(f"fastgd.kernels.{Path(s).stem}", [s], include_dirs=[numpy.get_include()]) for s in sources],
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False},
    )

setup(ext_modules=ext_modules)
