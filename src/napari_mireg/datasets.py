"""Test and demonstration data made on the fly, never downloaded.

The brain images come from the MNI ICBM152 2009a template that nilearn ships inside its
package (``nilearn/datasets/data``); nilearn is an optional dependency, needed only here.
Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal
Neurological Institute, McGill University; see ``template_licence()``.
"""

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def template_path(kind="t1"):
    """Path of one of the MNI ICBM152 2009a files that nilearn ships.

    Parameters
    ----------
    kind : {"t1", "gm", "wm"}
        The T1 template or the grey/white-matter probability map.

    Raises
    ------
    ImportError
        If nilearn is not installed.
    """
    try:
        import nilearn
    except ImportError as error:
        raise ImportError("the MNI template comes from nilearn: pip install nilearn") from error
    path = Path(nilearn.__file__).parent / "datasets" / "data" / TEMPLATE_FILES[kind]
    if not path.exists():
        raise FileNotFoundError(f"{path}: this nilearn version does not ship the MNI template")
    return path


def template_licence():
    """The copyright and licence notice of the MNI ICBM152 2009a template."""
    return (
        "MNI ICBM152 non-linear symmetric 2009a template. Copyright (C) 1993-2009 Louis "
        "Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill "
        "University. Permission to use, copy, modify, and distribute this software and its "
        "documentation for any purpose and without fee is hereby granted, provided that the "
        "above copyright notice appear in all copies. The authors and McGill University make "
        "no representations about the suitability of this software for any purpose. It is "
        "provided \"as is\" without express or implied warranty."
    )


def load_template(kind="t1", zoom=1):
    """The MNI template as a C-ordered float32 array and its affine.

    Parameters
    ----------
    kind : {"t1", "gm", "wm"}
    zoom : int
        Keep every `zoom`-th voxel after a matching box average (2 gives the 2 mm grid).

    Returns
    -------
    data : ndarray of float32
    affine : ndarray, shape (4, 4)
    """
    image = nib.load(template_path(kind))
    data = np.asarray(image.dataobj, dtype=np.float32)
    affine = image.affine.copy()
    if zoom > 1:
        data = ndimage.uniform_filter(data, zoom)[::zoom, ::zoom, ::zoom]
        affine[:3, :3] = affine[:3, :3] * zoom
    return np.ascontiguousarray(data), affine


def tissue_labels(zoom=1):
    """Tissue labels from the template's probability maps: 1 grey matter, 2 white matter."""
    grey, _ = load_template("gm", zoom)
    white, _ = load_template("wm", zoom)
    labels = np.zeros(grey.shape, np.uint8)
    labels[(grey > 0.5) & (grey >= white)] = 1
    labels[(white > 0.5) & (white > grey)] = 2
    return labels


def smooth_displacement(shape, peak, seed=0, smoothness=None):
    """A random smooth displacement field in voxels, with the largest length `peak`.

    Parameters
    ----------
    shape : tuple of int
        Grid shape; the field has shape ``shape + (len(shape),)``.
    peak : float
        Largest displacement length, in voxels.
    seed : int
        Seed of the random generator.
    smoothness : float, optional
        Gaussian sigma in voxels (default: a tenth of the smallest side).

    Returns
    -------
    ndarray of float64
    """
    rng = np.random.default_rng(seed)
    sigma = smoothness if smoothness is not None else max(2.0, min(shape) / 10.0)
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
                      for _ in shape], axis=-1)
    # Fade to zero at the border, so nothing is pulled in from outside the image.
    for axis, size in enumerate(shape):
        ramp = np.sin(np.linspace(0.0, np.pi, size)) ** 0.5
        field *= ramp.reshape([-1 if a == axis else 1 for a in range(len(shape))] + [1])
    length = np.sqrt((field ** 2).sum(axis=-1)).max()
    return field * (peak / length)


def warp_linear(image, displacement, order=1):
    """Sample `image` at x + displacement(x) (voxel units), trilinear by default."""
    grid = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in image.shape], indexing="ij")
    coordinates = [g + displacement[..., axis] for axis, g in enumerate(grid)]
    return ndimage.map_coordinates(image, coordinates, order=order, mode="nearest")


def t2_like(t1, seed=0):
    """Remap T1 intensities non-monotonically, so that WM is dark and CSF and GM bright."""
    scaled = t1 / max(float(np.percentile(t1, 99.5)), 1e-6)
    remapped = np.sin(np.pi * np.clip(scaled, 0.0, 1.2) * 0.9) + 0.5 * scaled
    noise = np.random.default_rng(seed).normal(0.0, 0.01, t1.shape)
    return (100.0 * (remapped + noise * (t1 > 0))).astype(np.float32)


def deformed_pair(zoom=2, peak=6.0, seed=0, contrast="t2"):
    """The MNI T1 template and a smoothly deformed, contrast-changed copy.

    Parameters
    ----------
    zoom : int
        1 for the 1 mm grid, 2 for 2 mm, ...
    peak : float
        Largest displacement in millimetres.
    seed : int
    contrast : {"t2", "t1"}
        "t2" remaps the moving intensities non-monotonically.

    Returns
    -------
    fixed, moving : ndarray of float32
    affine : ndarray (4, 4), shared by both
    displacement : ndarray
        The field, in voxels, such that moving(x) = fixed_contrast(x + displacement(x)).
    """
    fixed, affine = load_template("t1", zoom)
    displacement = smooth_displacement(fixed.shape, peak / zoom, seed=seed)
    moved = warp_linear(fixed, displacement)
    moving = t2_like(moved, seed) if contrast == "t2" else moved.astype(np.float32)
    return fixed, np.ascontiguousarray(moving), affine, displacement
