"""Build step for the optional compiled accelerator; the metadata is all in pyproject.toml.

``timelapse._speedups`` (src/timelapse/_speedups.c) is optional: where there is no C compiler or
no Python headers, the build of the extension fails, setuptools says so and goes on, and
``timelapse.snapshot`` uses its Python implementation (``timelapse --version`` tells which).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("timelapse._speedups", ["src/timelapse/_speedups.c"], optional=True),
    ],
)
