"""Build step for raqcodec's one C extension; everything else is declared in pyproject.toml.

raqcodec.entropy._context_kernel computes the context model's frequency rows (raqcodec/entropy/_context_kernel.c). It is
optional: where no C compiler is available the install still succeeds, and raqcodec uses the torch path,
which gives the same bits and decodes more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[Extension("raqcodec.entropy._context_kernel", ["raqcodec/entropy/_context_kernel.c"], optional=True)]
)
