"""The parts of the package build pyproject.toml cannot say: the one C module, and the SDKs.

edgefn/runtime/_native.c is a core guest's Store, calls and memory (see its header). guest-sdk/ (the C
header, the Python SDK, the WIT world) is copied into the wheel as edgefn/guest_sdk/, where an installed
edgefn finds it (edgefn/build/sdk.py); a checkout and an editable install read guest-sdk/ in place. The
Python SDK is also installed as the top-level `edgefn_guest`, so a handler can be unit-tested (and
completed in an IDE) on the host: guest-sdk/python/README.md.
"""

import shutil
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_py import build_py


class BuildPyWithSdk(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # guest-sdk/ is read in place
            return
        target = Path(self.build_lib) / "edgefn" / "guest_sdk"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(Path(__file__).parent / "guest-sdk", target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(
    packages=[*find_packages(include=["edgefn", "edgefn.*"]), "edgefn_guest"],
    package_dir={"edgefn_guest": "guest-sdk/python/edgefn_guest"},
    ext_modules=[Extension("edgefn.runtime._native", ["edgefn/runtime/_native.c"], extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror"])],
    cmdclass={"build_py": BuildPyWithSdk},
)
