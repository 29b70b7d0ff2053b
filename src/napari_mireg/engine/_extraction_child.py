"""The child process of a :class:`napari_mireg.engine.masks.BrainExtraction`.

Run as ``python -m napari_mireg.engine._extraction_child FOLDER EXTRACTOR DILATION_MM``: reads
the volume from ``FOLDER`` (``data.npy``, ``affine.npy``), calls ``EXTRACTOR`` (a
``module:function`` name) and writes the mask to ``FOLDER/mask.npy``, or a one-line message
to ``FOLDER/error.txt`` when the extractor fails. Each file appears whole (written aside,
then renamed), so the parent never reads half of one.

A module of its own, started by name, so that the user's script is never imported again in
the child (as a spawned multiprocessing child would).
"""

import importlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from napari_mireg.engine.masks import _AFFINE, _DATA, _ERROR, _MASK
from napari_mireg.engine.transforms import Volume


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a file beside `path`, then rename it to `path`."""
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as file:
        write(file)
    os.replace(part, path)


def extractor_named(name: str) -> Callable[..., Any]:
    """The function ``module:function`` names (imported)."""
    module, _, function = name.partition(":")
    target: Any = importlib.import_module(module)
    for attribute in function.split("."):
        target = getattr(target, attribute)
    return target


def main(folder: str, extractor: str, dilation_mm: str) -> int:
    """Make the mask of the volume in `folder`; 0 when written, 1 after an error."""
    place = Path(folder)
    # ROBEX's temporary files go into the folder the parent removes.
    tempfile.tempdir = os.environ["TMPDIR"] = str(place)
    try:
        data = np.load(place / _DATA, allow_pickle=False)
        affine = np.load(place / _AFFINE, allow_pickle=False)
        volume = Volume(data, affine, data.ndim)
        mask = np.asarray(extractor_named(extractor)(volume, float(dilation_mm)), dtype=bool)
        write_atomically(place / _MASK, lambda file: np.save(file, mask, allow_pickle=False))
    except Exception as error:  # handed to the parent, which raises it as a ValueError
        message = " ".join((str(error) or type(error).__name__).split())
        write_atomically(place / _ERROR, lambda file: file.write(message.encode()))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
