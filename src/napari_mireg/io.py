"""Former name of :mod:`napari_mireg.files`, kept so that scripts written for 0.1 still run.

New code imports :mod:`napari_mireg.files`: a module named ``io`` inside the package reads like
the standard library's.
"""

from napari_mireg.files import *  # noqa: F403 (the same public names)
from napari_mireg.files import __all__  # noqa: F401
