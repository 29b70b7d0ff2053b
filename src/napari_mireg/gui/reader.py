"""napari readers for NIfTI (.nii, .nii.gz) and FreeSurfer MGH (.mgz, .mgh) volumes.

The reader decides between an Image and a Labels layer; `read_volume` with a `kind` does as
it is told (the widget's "Open files..." as image / as labels), for the files the decision
gets wrong. The file's data type cannot decide: FreeSurfer's ``brain.mgz``, ``T1.mgz`` and
many scanner exports are uint8 intensity images, and many tools write label maps as float.
"""

import re
from pathlib import Path

import numpy as np

from napari_mireg import files
from napari_mireg.engine.transforms import Volume
from napari_mireg.gui.display import labels_colormap, layer_kwargs, to_display
from napari_mireg.labels import LABEL_NAMES, label_values

# File names of label maps: SynthSeg, FreeSurfer's aseg/aparc+aseg/wmparc, BIDS "_dseg"
# and "_seg" derivatives, and anything called a label map.
LABEL_NAME_PATTERN = re.compile(r"synthseg|aseg|aparc|wmparc|dseg|[_.-]seg|label", re.IGNORECASE)
# An integer volume with at most this many distinct values is a label map whatever its
# values (masks, tissue classes); more, and only FreeSurfer/SynthSeg ids make it one.
FEW_VALUES = 16
# Volumes are sampled for the decision (every n-th voxel) so that a 1 mm file is decided
# in milliseconds; a label map's values show up in any large sample.
DECISION_SAMPLE = 1_000_000
KNOWN_LABELS = np.array(sorted(LABEL_NAMES))


def looks_like_labels(path, data):
    """True when a volume is a label map.

    Integer-valued data (any dtype) is a label map when its file name says so (see
    `LABEL_NAME_PATTERN`), when it has few distinct values (`FEW_VALUES`), or when every
    value is a FreeSurfer/SynthSeg label id and more than one label is present. Anything
    else, a uint8 T1 included, is an intensity image.
    """
    data = np.asarray(data)
    if data.dtype.kind not in "biuf":
        return False
    step = max(1, data.size // DECISION_SAMPLE)
    sample = data.reshape(-1)[::step]
    if data.dtype.kind == "f" and not (
        np.all(np.isfinite(sample)) and np.array_equal(sample, np.round(sample))
    ):
        return False
    if sample.size and sample.min() < 0:
        return False
    if LABEL_NAME_PATTERN.search(Path(path).name):
        return True
    values = np.unique(sample)
    if values.size <= FEW_VALUES:
        return True
    return bool(np.all(np.isin(values, KNOWN_LABELS)))


def read_volume(path, kind=None):
    """A napari layer data tuple for one file.

    Parameters
    ----------
    path : str or Path
    kind : {None, "image", "labels"}
        None decides with :func:`looks_like_labels`.
    """
    volume = files.load_volume(path, dtype=None)  # one read; the values decide
    if volume.ndim != 3:
        raise files.InputError(path, "napari-mireg reads 3D volumes")
    labels = looks_like_labels(path, volume.data) if kind is None else kind == "labels"
    if labels:
        try:
            data = label_values(volume.data, str(path))
        except ValueError as error:
            raise files.InputError(path, str(error)) from None
    else:
        data = np.ascontiguousarray(volume.data, dtype=np.float32)
    volume = Volume(data, volume.affine, volume.ndim)
    display, display_affine = to_display(volume.data, volume.affine)
    kwargs = layer_kwargs(
        display_affine,
        Path(path).name.split(".")[0],
        affine=volume.affine,
        shape=volume.shape,
        path=path,
    )
    if labels:
        kwargs["colormap"] = labels_colormap(np.unique(display))
        return display, kwargs, "labels"
    kwargs["colormap"] = "gray"
    return display, kwargs, "image"


def get_reader(path):
    """npe2 reader: Image or Labels as the file looks (None for other suffixes)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or any(files.suffix_of(p) not in files.VOLUME_SUFFIXES for p in paths):
        return None

    def reader(requested):
        requested = [requested] if isinstance(requested, (str, Path)) else list(requested)
        return [read_volume(p) for p in requested]

    return reader
