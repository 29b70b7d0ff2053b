"""Build the Cython kernels, with OpenMP when the compiler has it and serially otherwise."""

import os
import shutil
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = """
#include <omp.h>
int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }
"""


def compiler_has_openmp(compiler):
    """Return True when `compiler` compiles and links a program that uses OpenMP."""
    if os.environ.get("MIREG_NO_OPENMP"):
        return False
    folder = tempfile.mkdtemp()
    try:
        source = os.path.join(folder, "probe.c")
        with open(source, "w") as handle:
            handle.write(OPENMP_PROBE)
        objects = compiler.compile([source], output_dir=folder, extra_postargs=["-fopenmp"])
        compiler.link_executable(
            objects, os.path.join(folder, "probe"), extra_postargs=["-fopenmp"]
        )
        return True
    except Exception:  # any compile or link failure means: no OpenMP
        return False
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class BuildWithOptionalOpenMP(build_ext):
    """build_ext that adds -fopenmp only when the compiler supports it."""

    def build_extensions(self):
        """Add the OpenMP flags when they work, then build."""
        use_openmp = self.compiler.compiler_type == "unix" and compiler_has_openmp(self.compiler)
        for extension in self.extensions:
            if use_openmp:
                extension.extra_compile_args.append("-fopenmp")
                extension.extra_link_args.append("-fopenmp")
        print(f"napari-mireg: building with OpenMP: {use_openmp}", file=sys.stderr)
        super().build_extensions()


KERNELS = "src/napari_mireg/engine/_kernels"


def kernel(name):
    """The Extension of one Cython module of the package."""
    return Extension(
        f"napari_mireg.engine._kernels.{name}",
        [f"{KERNELS}/{name}.pyx"],
        include_dirs=[np.get_include(), KERNELS],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3", "-fno-math-errno"] if sys.platform != "win32" else ["/O2"],
    )


setup(
    ext_modules=cythonize(
        [kernel("_mi"), kernel("_fields"), kernel("_pv"), kernel("_buffers")],
        include_path=["src"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
    cmdclass={"build_ext": BuildWithOptionalOpenMP},
)
