"""napari reader for NIfTI (.nii, .nii.gz) and FreeSurfer MGH (.mgz, .mgh) volumes."""

from pathlib import Path

import numpy as np

from napari_mireg import files
from napari_mireg._display import labels_colormap, layer_kwargs, to_display
from napari_mireg.labels import label_values
from napari_mireg.transforms import Volume

LABEL_NAME_HINTS = ("synthseg", "aseg", "aparc", "seg", "label", "dseg", "parc", "mask")
MAX_LABELS = 512


def looks_like_labels(path, data):
    """Labels: integer values with few distinct ones, or a SynthSeg-like file name."""
    name = Path(path).name.lower()
    if data.dtype.kind == "f" and not np.array_equal(data, np.round(data)):
        return False
    if any(hint in name for hint in LABEL_NAME_HINTS):
        return True
    return data.dtype.kind in "iub" and np.unique(data).size <= MAX_LABELS and data.min() >= 0


def read_volume(path):
    """A napari layer data tuple for one file (Labels or Image)."""
    volume = files.load_volume(path, dtype=None)  # one read; the stored type decides
    labels = looks_like_labels(path, volume.data)
    data = (
        label_values(volume.data, str(path))
        if labels
        else np.ascontiguousarray(volume.data, dtype=np.float32)
    )
    volume = Volume(data, volume.affine, volume.ndim)
    if volume.ndim != 3:
        raise files.InputError(path, "napari-mireg reads 3D volumes")
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
    kwargs.update(colormap="gray", blending="additive")
    return display, kwargs, "image"


def get_reader(path):
    """npe2 reader contribution: a reader function for our suffixes, else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or any(files.suffix_of(p) not in files.VOLUME_SUFFIXES for p in paths):
        return None

    def reader(requested):
        requested = [requested] if isinstance(requested, (str, Path)) else list(requested)
        return [read_volume(p) for p in requested]

    return reader
