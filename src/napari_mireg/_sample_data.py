"""napari sample data: the bundled brain pair with SynthSeg-ID tissue labels.

Derived from the MNI ICBM152 2009a template (see sample_data/LICENSE.txt): the T1 template
at 2 mm, and a smoothly deformed, T2-like, repositioned copy, with their labels.
"""

from napari_mireg._reader import read_volume
from napari_mireg.datasets import SAMPLE_FILES, sample_data_path


def sample_pair():
    """Fixed T1, moving T2-like, and both label maps (hidden: filled label maps over the
    images hide them) as napari layer data.
    """
    layers = [read_volume(sample_data_path(key)) for key in SAMPLE_FILES]
    for _, kwargs, kind in layers:
        if kind == "labels":
            kwargs["visible"] = False
    return layers
