"""The engine, the CLI and the batch runner work with Qt and napari absent."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6",
                                  "superqt", "vispy", "magicgui"):
            raise ImportError(f"blocked: {name}")

sys.meta_path.insert(0, Block())
import numpy as np
import napari_mireg
from napari_mireg.engine import affine, fields, metric, registration, syn, transforms
from napari_mireg.cli import batch, jobs
from napari_mireg import cli, files, labels, overlap
from napari_mireg.gui import display as _display, frames as _frames
from testdata import blobs_for_check
fixed, moving = blobs_for_check()
result = napari_mireg.register(fixed, moving, prealign="rigid", level_iters=(3, 2))
assert result.mi_after > result.mi_before
print("ok", sorted(m for m in sys.modules if m.startswith(("napari.", "qtpy"))))
"""


def test_engine_cli_and_batch_import_and_run_without_qt_or_napari():
    # testdata lives next to this file, outside the package
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=environment
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok []"
