"""Moved to :mod:`napari_mireg.engine.masks` (this name goes in 0.3)."""

from napari_mireg._moved import alias

alias(__name__, "napari_mireg.engine.masks")
