"""The one part of edgefn in C: edgefn/runtime/_native.c (a core guest's Store, calls and memory; see its header).

Everything else about the package is in pyproject.toml; setuptools reads extension modules from here.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("edgefn.runtime._native", ["edgefn/runtime/_native.c"], extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror"])])
