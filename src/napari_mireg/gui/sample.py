"""napari sample data: the bundled brain pair with SynthSeg-ID tissue labels.

Derived from the MNI ICBM152 2009a template (see sample_data/LICENSE.txt): the T1 template
at 2 mm, and a smoothly deformed, T2-like, repositioned copy, with their labels. The files
are made by ``scripts/make_sample_data.py``; this module only finds and reads them.
"""

from pathlib import Path

from napari_mireg.gui.reader import read_volume

SAMPLE_FILES = {
    "fixed": "fixed_t1.nii.gz",
    "moving": "moving_t2.nii.gz",
    "fixed_labels": "fixed_synthseg.nii.gz",
    "moving_labels": "moving_synthseg.nii.gz",
}


def sample_data_path(key: str = "fixed") -> Path:
    """Path of a bundled sample file (see `SAMPLE_FILES`), shipped inside the package."""
    return Path(__file__).resolve().parents[1] / "sample_data" / SAMPLE_FILES[key]


def sample_pair():
    """Fixed T1, moving T2-like, and both label maps (hidden: filled label maps over the
    images hide them) as napari layer data.
    """
    layers = [read_volume(sample_data_path(key)) for key in SAMPLE_FILES]
    for _, kwargs, kind in layers:
        if kind == "labels":
            kwargs["visible"] = False
    return layers
