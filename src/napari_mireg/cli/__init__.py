"""The ``mireg`` command line (:mod:`.commands`), one job from files (:mod:`.jobs`) and cohort
runs on Dask (:mod:`.batch`).
"""

from napari_mireg.cli.commands import main

__all__ = ["main"]
