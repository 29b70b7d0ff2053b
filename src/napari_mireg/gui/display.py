"""How volumes are laid out as napari layers, and how layers turn back into Volumes.

Layers hold the volume reoriented to the closest canonical (RAS) axes and transposed to
(S, A, R) order, so that napari's default 2D view shows axial slices; `scale` and `translate`
place them in world millimetres so that fixed, moving and labels overlay (a residual
oblique rotation is not drawn: napari cannot slice obliquely). The exact voxel-to-world
matrix of the displayed array ("display affine") and the file's own affine and shape are
kept in ``layer.metadata``: the engine works with the former, exports use the latter.
No Qt here.
"""

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from napari_mireg.engine import fields
from napari_mireg.engine.transforms import Volume, as_volume
from napari_mireg.labels import label_colour

# Display index (a, b, c) is canonical index (c, b, a).
_REVERSE_AXES = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)


def to_display(data, affine):
    """The array napari shows and its exact voxel-to-world matrix.

    Parameters
    ----------
    data : ndarray, 3D
    affine : ndarray (4, 4)
        The file's voxel-to-world (RAS) matrix.

    Returns
    -------
    display : ndarray, 3D, axes (S, A, R)
    display_affine : ndarray (4, 4)
    """
    orientation = io_orientation(affine)
    canonical = apply_orientation(np.asarray(data), orientation)
    canonical_affine = np.asarray(affine, float) @ inv_ornt_aff(orientation, np.shape(data))
    display = np.ascontiguousarray(np.transpose(canonical, (2, 1, 0)))
    return display, canonical_affine @ _REVERSE_AXES


def scale_translate(display_affine):
    """Napari `scale` and `translate` of a display grid (world axes S, A, R, in mm)."""
    display_affine = np.asarray(display_affine, float)
    scale = fields.voxel_sizes(display_affine)
    return tuple(float(s) for s in scale), tuple(float(t) for t in display_affine[[2, 1, 0], 3])


def layer_metadata(display_affine, affine=None, shape=None, path=None):
    """The metadata every layer of this plugin carries."""
    metadata = {"display_affine": np.asarray(display_affine, float)}
    if affine is not None:
        metadata.update(affine=np.asarray(affine, float), shape=tuple(shape))
    if path is not None:
        metadata["path"] = str(path)
    return metadata


def layer_kwargs(display_affine, name, **metadata):
    """Keyword arguments of a layer on a display grid."""
    scale, translate = scale_translate(display_affine)
    return {
        "name": name,
        "scale": scale,
        "translate": translate,
        "metadata": layer_metadata(display_affine, **metadata),
    }


def labels_colormap(values):
    """{label: RGBA} in the FreeSurfer/SynthSeg colours for napari's Labels colormap."""
    colours = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for value in values:
        if value != 0:
            colours[int(value)] = tuple(c / 255.0 for c in label_colour(value)) + (1.0,)
    return colours


def display_affine(layer):
    """Voxel-to-world matrix of the array a layer shows.

    Layers made elsewhere (no display affine in their metadata) read their world axes as
    (S, A, R) from `scale` and `translate`, as this plugin's layers do.
    """
    affine = layer.metadata.get("display_affine")
    if affine is not None:
        return affine
    ndim = np.ndim(layer.data)
    scale = np.asarray(layer.scale, float)[-ndim:]
    translate = np.asarray(layer.translate, float)[-ndim:]
    order = slice(None, None, -1) if ndim == 3 else slice(None)  # (S, A, R) -> (x, y, z)
    affine = np.eye(ndim + 1)
    affine[:ndim, :ndim] = np.diag(scale)[order]
    affine[:ndim, ndim] = translate[order]
    return affine


def layer_volume(layer, labels=False):
    """The Volume a layer shows: its data with its display affine."""
    return as_volume(
        np.asarray(layer.data),
        display_affine(layer),
        layer.name,
        dtype=None if labels else np.float32,
    )


def original_grid(layer):
    """The grid of the file a layer was read from (its display grid if it has no file).

    Only the grid is wanted: the data is a zero array (not the layer's voxels).
    """
    metadata = layer.metadata
    if "affine" in metadata:
        return Volume(np.zeros(metadata["shape"][:3], np.float32), metadata["affine"], 3)
    return as_volume(np.zeros(np.shape(layer.data), np.float32), display_affine(layer), layer.name)


def on_grid(array, affine, grid, interpolation="linear"):
    """Resample a 3D array (optionally with channels) of a grid onto another grid.

    Exact for a grid that only reorients the other (voxel centres coincide); the array is
    returned as it is when the grids are the same.
    """
    array = np.asarray(array)
    if array.shape[:3] == grid.shape and np.allclose(affine, grid.affine):
        return array
    if interpolation == "linear":
        array = array.astype(np.float32, copy=False)
    return fields.resample(array, affine, grid.shape, grid.affine, interpolation=interpolation)
