"""napari writer: Image and Labels layers as NIfTI on the grid of the file they came from.

Layers show volumes reoriented to RAS axes (see `display`); a layer that carries its
file's affine and shape in its metadata (every layer of this plugin: the inputs, and the
results, which carry the fixed file's) is written back on that grid, so that det J or the
warped image overlays the fixed file in any other tool. Other layers are written on their
display grid. The "displacement" result layer is the exception: it holds the forward field
(``metadata["displacement"]``), and saving it writes that warp as ITK/ANTs read it.
"""

import numpy as np

from napari_mireg import files
from napari_mireg.gui.display import display_affine, on_grid, original_grid


class _LayerView:
    """What `display` reads from a layer, built from a writer's (data, meta)."""

    def __init__(self, data, meta):
        self.data = data
        self.metadata = meta.get("metadata", {}) or {}
        self.name = meta.get("name", "layer")
        ndim = np.ndim(data)
        self.scale = meta.get("scale", (1.0,) * ndim)
        self.translate = meta.get("translate", (0.0,) * ndim)


def write_volume(path, data, meta, labels=None):
    """npe2 single-layer writer; returns the written paths.

    Parameters
    ----------
    path : str
        .nii or .nii.gz (".nii.gz" is added to any other name).
    data : ndarray, 3D
    meta : dict
        The layer's attributes, as napari passes them.
    labels : bool, optional
        Write integer labels with nearest-neighbour resampling (default: integer data).
    """
    if files.suffix_of(path) not in (".nii", ".nii.gz"):
        path = f"{path}.nii.gz"
    layer = _LayerView(data, meta)
    field = layer.metadata.get("displacement")
    if field is not None:
        files.save_field(field, path)
        return [str(path)]
    if np.ndim(data) != 3:
        raise ValueError(f"napari-mireg writes 3D volumes; {layer.name} is {np.ndim(data)}D")
    labels = np.asarray(data).dtype.kind in "iub" if labels is None else labels
    grid = original_grid(layer)
    volume = on_grid(
        np.asarray(data), display_affine(layer), grid, "nearest" if labels else "linear"
    )
    files.save_volume(path, volume, grid.affine, labels=labels)
    return [str(path)]


def write_labels(path, data, meta):
    """npe2 writer for Labels layers (nearest-neighbour, integer output)."""
    return write_volume(path, data, meta, labels=True)


def write_image(path, data, meta):
    """npe2 writer for Image layers (float32 output)."""
    return write_volume(path, data, meta, labels=False)
