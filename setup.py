"""Build the Cython kernels, with OpenMP when the compiler has it and serially otherwise.

OpenMP per platform (the first candidate that compiles and links a small OpenMP program wins;
none: the kernels are built serially, with the same results on one thread):

- Windows (MSVC): ``/openmp``, MSVC's own runtime (vcomp); the wheels carry its DLL.
- macOS: Apple's clang has no OpenMP runtime of its own. With Homebrew's libomp
  (``brew install libomp``) the kernels use it (``-Xpreprocessor -fopenmp -lomp``); a
  compiler with its own OpenMP (gcc, LLVM clang) gets plain ``-fopenmp``; else serial.
- Linux and other Unix: ``-fopenmp`` (gcc's libgomp; the Linux wheels carry it).

``MIREG_NO_OPENMP=1`` builds serially whatever the compiler has.
"""

import os
import shutil
import subprocess
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


def homebrew_libomp():
    """Homebrew's libomp folder (with include/omp.h), or None."""
    brew = shutil.which("brew")
    if brew is None:
        return None
    try:
        prefix = subprocess.run(
            [brew, "--prefix", "libomp"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    # brew prints the prefix a formula would have even when it is not installed
    return prefix if os.path.isfile(os.path.join(prefix, "include", "omp.h")) else None


def openmp_candidates(compiler_type):
    """(compile flags, link flags) to try, in order, for this platform and compiler."""
    if compiler_type == "msvc":
        return [(["/openmp"], [])]
    candidates = [(["-fopenmp"], ["-fopenmp"])]
    libomp = homebrew_libomp() if sys.platform == "darwin" else None
    if libomp:
        candidates.append(
            (
                ["-Xpreprocessor", "-fopenmp", f"-I{libomp}/include"],
                [f"-L{libomp}/lib", "-lomp"],
            )
        )
    return candidates


def compiles_with(compiler, compile_args, link_args):
    """Return True when `compiler` compiles and links a program that uses OpenMP."""
    folder = tempfile.mkdtemp()
    try:
        source = os.path.join(folder, "probe.c")
        with open(source, "w") as handle:
            handle.write(OPENMP_PROBE)
        objects = compiler.compile([source], output_dir=folder, extra_postargs=compile_args)
        compiler.link_executable(objects, os.path.join(folder, "probe"), extra_postargs=link_args)
        return True
    except Exception:  # any compile or link failure means: not these flags
        return False
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def openmp_flags(compiler):
    """(compile flags, link flags) of OpenMP for `compiler`, or None to build serially."""
    if os.environ.get("MIREG_NO_OPENMP"):
        return None
    if compiler.compiler_type == "msvc":  # every MSVC has /openmp; its probe would need vcvars
        return openmp_candidates("msvc")[0]
    for compile_args, link_args in openmp_candidates(compiler.compiler_type):
        if compiles_with(compiler, compile_args, link_args):
            return compile_args, link_args
    return None


class BuildWithOptionalOpenMP(build_ext):
    """build_ext that adds the OpenMP flags only when the compiler supports them."""

    def build_extensions(self):
        """Add the OpenMP flags when they work, then build."""
        flags = openmp_flags(self.compiler)
        for extension in self.extensions:
            if flags:
                extension.extra_compile_args.extend(flags[0])
                extension.extra_link_args.extend(flags[1])
        used = f"compile {' '.join(flags[0])}, link {' '.join(flags[1]) or '-'}" if flags else "no"
        print(f"napari-mireg: building with OpenMP: {used}", file=sys.stderr)
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
