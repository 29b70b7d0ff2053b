"""Test and benchmark data made on the fly, never downloaded (not part of the package).

The brain images come from the MNI ICBM152 2009a template that nilearn ships inside its
package (``nilearn/datasets/data``); nilearn is in the ``test`` extra only.
Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal
Neurological Institute, McGill University; see ``template_licence()``.

The tests import this module as ``testdata`` (pytest puts ``tests/`` on ``sys.path``, see
``pythonpath`` in pyproject.toml); the benchmarks and scripts put ``tests/`` on ``sys.path``
themselves.
"""

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from napari_mireg.gui.sample import SAMPLE_FILES

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
        if "pytest" in sys.modules:  # in the test suite: the test is skipped, with the reason
            import pytest

            pytest.skip("nilearn is not installed (the MNI template comes from it)")
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
        'provided "as is" without express or implied warranty.'
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
    field = np.stack(
        [ndimage.gaussian_filter(rng.standard_normal(shape), sigma) for _ in shape], axis=-1
    )
    # Fade to zero at the border, so nothing is pulled in from outside the image.
    for axis, size in enumerate(shape):
        ramp = np.sin(np.linspace(0.0, np.pi, size)) ** 0.5
        field *= ramp.reshape([-1 if a == axis else 1 for a in range(len(shape))] + [1])
    length = np.sqrt((field**2).sum(axis=-1)).max()
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


def synthseg_tissue_labels(zoom=1):
    """Tissue labels of the template in SynthSeg (FreeSurfer) IDs.

    Cerebral white matter 2/41 and cortex 3/42 come from the probability maps, split into
    left and right at x = 0; dark (CSF-like) voxels of the T1 become lateral ventricle 4/43
    inside a box around the ventricles (MNI mm) and CSF 24 elsewhere. A coarse stand-in for
    a SynthSeg output, made without any model.
    """
    t1, affine = load_template("t1", zoom)
    tissue = tissue_labels(zoom)
    brain = t1 > 0
    x, y, z = np.einsum("ij,j...->i...", affine[:3, :3], np.indices(t1.shape, float))
    x, y, z = x + affine[0, 3], y + affine[1, 3], z + affine[2, 3]
    left = x < 0
    labels = np.zeros(t1.shape, np.int16)
    labels[brain & (tissue == 2)] = np.where(left, 2, 41)[brain & (tissue == 2)]
    labels[brain & (tissue == 1)] = np.where(left, 3, 42)[brain & (tissue == 1)]
    dark = brain & (tissue > 0) & (t1 < 0.4 * float(np.percentile(t1[brain], 99)))
    ventricles = dark & (np.abs(x) <= 28) & (y >= -45) & (y <= 28) & (z >= -2) & (z <= 32)
    labels[dark] = 24
    labels[ventricles] = np.where(left, 4, 43)[ventricles]
    return labels


def sample_pair(zoom=2, peak=6.0, seed=0, rotation_degrees=6.0, shift_mm=(4.0, -3.0, 2.0)):
    """The sample pair: a T1 brain and a deformed, T2-like, repositioned copy, with labels.

    The moving image is the template deformed by a smooth field of `peak` mm, remapped to a
    T2-like contrast, and placed in the world with a rotation about the z axis and a shift
    (its header affine differs from the fixed one), as a scan of another session would be.

    Returns
    -------
    dict
        "fixed", "moving" (float32), "fixed_labels", "moving_labels" (int16), "fixed_affine",
        "moving_affine", "displacement" (voxels, moving(x) = fixed(x + displacement(x))).
    """
    fixed, moving, affine, displacement = deformed_pair(zoom, peak, seed)
    fixed_labels = synthseg_tissue_labels(zoom)
    moving_labels = warp_linear(fixed_labels, displacement, order=0).astype(np.int16)
    angle = np.deg2rad(rotation_degrees)
    placement = np.eye(4)
    placement[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    placement[:3, 3] = shift_mm
    return {
        "fixed": fixed,
        "moving": moving,
        "fixed_labels": fixed_labels,
        "moving_labels": moving_labels,
        "fixed_affine": affine,
        "moving_affine": placement @ affine,
        "displacement": displacement,
    }


def write_sample_data(folder, zoom=2):
    """Write the sample pair (cropped to the head, int16 intensities) and the licence notice.

    Parameters
    ----------
    folder : str or Path
        Created if missing; files are named as in `SAMPLE_FILES`, plus ``LICENSE.txt``.

    Returns
    -------
    dict of Path
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pair = sample_pair(zoom)
    box = ndimage.find_objects((pair["fixed"] > 0).astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 8, 0), s.stop + 8) for s in box)
    corner = np.array([s.start for s in box] + [1.0])
    paths = {}
    for key, name in SAMPLE_FILES.items():
        side = "moving" if key.startswith("moving") else "fixed"
        affine = pair[f"{side}_affine"].copy()
        affine[:3, 3] = (affine @ corner)[:3]
        data = pair[key][box]
        image = nib.Nifti1Image(data, affine)
        image.set_sform(affine, code=1)
        image.set_qform(affine, code=1)
        if data.dtype.kind == "f":
            image.set_data_dtype(np.int16)  # nibabel stores a scale factor: a quarter the size
        paths[key] = folder / name
        nib.save(image, paths[key])
    (folder / "LICENSE.txt").write_text(template_licence() + "\n")
    return paths


def write_cohort(folder, subjects=3, zoom=4, peak=6.0):
    """Subjects for cohort runs: the template deformed by a different field each, with labels.

    Writes ``subject<k>.nii.gz`` and ``subject<k>_synthseg.nii.gz`` and a ``subjects.csv``
    (header ``image,labels``, paths relative to the folder); returns the CSV's path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = synthseg_tissue_labels(zoom)
    lines = ["image,labels"]
    for k in range(subjects):
        _, image, affine, displacement = deformed_pair(zoom, peak, seed=100 + k, contrast="t1")
        subject_labels = warp_linear(labels, displacement, order=0).astype(np.int16)
        for name, data in (
            (f"subject{k}.nii.gz", image),
            (f"subject{k}_synthseg.nii.gz", subject_labels),
        ):
            nib.save(nib.Nifti1Image(data, affine), folder / name)
        lines.append(f"subject{k}.nii.gz,subject{k}_synthseg.nii.gz")
    table = folder / "subjects.csv"
    table.write_text("\n".join(lines) + "\n")
    return table


def blobs(shape, seed, count=12):
    """A smooth image: a sum of Gaussian blobs of random centres, sizes and heights."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    image = np.zeros(shape)
    for _ in range(count):
        centre = rng.uniform(0.2, 0.8, len(shape)) * np.array(shape)
        width = rng.uniform(0.08, 0.2) * min(shape)
        distance = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        image += rng.uniform(0.5, 1.5) * np.exp(-distance / (2 * width**2))
    return image


def blobs_for_check(shape=(24, 28, 26), shift=(1.5, -1.0, 2.0)):
    """A tiny smooth 3D pair (the moving one shifted and remapped non-monotonically): a
    quick self-check that needs no template.
    """
    fixed = blobs(shape, seed=1)
    moved = ndimage.shift(fixed, shift, order=3, mode="nearest")
    return fixed.astype(np.float32), (np.sin(3.0 * moved) + 0.3 * moved).astype(np.float32)


# Approximate centres (MNI mm, left side; the right one mirrors x) and radii of SynthSeg's
# subcortical structures, as (left id, right id, centre, radius): spheres, not anatomy.
_SUBCORTICAL = (
    (10, 49, (-11, -18, 7), 7),  # thalamus
    (11, 50, (-13, 12, 10), 5),  # caudate
    (12, 51, (-25, 2, 0), 6),  # putamen
    (13, 52, (-19, -3, -1), 4),  # pallidum
    (17, 53, (-26, -22, -14), 5),  # hippocampus
    (18, 54, (-23, -4, -20), 4),  # amygdala
    (26, 58, (-9, 11, -8), 3),  # accumbens
    (28, 60, (-11, -16, -10), 4),  # ventral DC
    (7, 46, (-15, -55, -30), 6),  # cerebellum white matter
    (8, 47, (-28, -68, -38), 9),  # cerebellum cortex
)
_MIDLINE_STRUCTURES = ((16, (0, -28, -30), 7), (14, (0, -10, 5), 2), (15, (0, -45, -30), 3))


def synthseg_parcellation(zoom=1):
    """A SynthSeg-with-parcels-like label map of the template: 90+ SynthSeg ids.

    The tissue labels of `synthseg_tissue_labels`, with the cortex (3/42) of each hemisphere
    split into the 34 Desikan-Killiany parcel ids (1001-1035 / 2001-2035) by the direction
    of each voxel from the brain's centre (7 bins of azimuth, each split into 5 of
    elevation, by quantiles, so that every parcel has voxels), and spheres of brain voxels
    labelled as the subcortical structures near their MNI positions. Its ids and sizes are
    those of a real parcellation; its boundaries are not anatomy.
    """
    from napari_mireg.labels import SYNTHSEG_PARC_LABELS

    t1, affine = load_template("t1", zoom)
    labels = synthseg_tissue_labels(zoom)
    x, y, z = np.einsum("ij,j...->i...", affine[:3, :3], np.indices(t1.shape, float))
    x, y, z = x + affine[0, 3], y + affine[1, 3], z + affine[2, 3] - 10.0
    parcels = sorted({label % 1000 for label in SYNTHSEG_PARC_LABELS if label > 1000})
    azimuth = np.arctan2(y, np.abs(x))
    elevation = np.arctan2(z, np.hypot(x, y))
    for cortex, base in ((3, 1000), (42, 2000)):
        inside = labels == cortex
        bins = np.zeros(int(inside.sum()), int)
        az = azimuth[inside]
        az_edges = np.quantile(az, np.linspace(0, 1, 8)[1:-1])
        az_bin = np.searchsorted(az_edges, az)
        el = elevation[inside]
        for k in range(7):
            chosen = az_bin == k
            el_edges = np.quantile(el[chosen], np.linspace(0, 1, 6)[1:-1])
            bins[chosen] = 5 * k + np.searchsorted(el_edges, el[chosen])
        bins = np.minimum(bins, len(parcels) - 1)  # 35 bins onto 34 parcels
        labels[inside] = base + np.asarray(parcels)[bins]
    brain = t1 > 0
    z = z + 10.0
    for left, right, (cx, cy, cz), radius in _SUBCORTICAL:
        for label, sx in ((left, cx), (right, -cx)):
            sphere = (x - sx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius**2
            labels[sphere & brain] = label
    for label, (cx, cy, cz), radius in _MIDLINE_STRUCTURES:
        sphere = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius**2
        labels[sphere & brain] = label
    return labels


def parcellated_pair(zoom=2, peak=6.0, seed=0):
    """The template and a deformed T2-like copy, each with a 90+ label parcellation.

    Returns
    -------
    dict
        "fixed", "moving" (float32), "fixed_labels", "moving_labels" (int16), "affine"
        (shared), "displacement" (voxels).
    """
    fixed, moving, affine, displacement = deformed_pair(zoom, peak, seed)
    fixed_labels = synthseg_parcellation(zoom)
    moving_labels = warp_linear(fixed_labels, displacement, order=0).astype(np.int16)
    return {
        "fixed": fixed,
        "moving": moving,
        "fixed_labels": fixed_labels,
        "moving_labels": moving_labels,
        "affine": affine,
        "displacement": displacement,
    }


def register_arguments(pair, out, labels=True, *, options=()):
    """`mireg register` arguments for a pair of `write_sample_data`, into `out`.

    Parameters
    ----------
    pair : dict
        The paths `write_sample_data` returns.
    out : path
        The output folder.
    labels : bool
        Give both label maps too.
    options : sequence of str
        Further options (iterations, threads, ...).
    """
    arguments = ["register", str(pair["fixed"]), str(pair["moving"]), *options, "--out", str(out)]
    if labels:
        arguments += ["--fixed-labels", str(pair["fixed_labels"])]
        arguments += ["--moving-labels", str(pair["moving_labels"])]
    return arguments


def thresholded_brain_mask(volume, dilation_mm=0.0):
    """A quick stand-in for ROBEX (run in its child process): voxels above a tenth of the
    99th percentile.
    """
    data = np.asarray(volume.data)
    return data > 0.1 * float(np.percentile(data, 99))


def brain_mask_never_made(volume, dilation_mm=0.0):
    """A stand-in for a ROBEX that is still working: starts a program (as ROBEX's script
    does) and waits for it, which never ends by itself.
    """
    import subprocess
    import sys

    program = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    program.wait()


def brain_mask_failing(volume, dilation_mm=0.0):
    """A stand-in for a ROBEX that fails."""
    raise RuntimeError("ROBEX found no head in the image")


def add_sample_layers(viewer):
    """Add the bundled sample pair (images and SynthSeg maps) to a napari viewer."""
    from napari_mireg.gui.sample import sample_pair

    for data, kwargs, kind in sample_pair():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    return viewer


def docked_widget(viewer, iterations="3", prealign="none"):
    """The registration widget docked in `viewer`, its SyN iterations and prealignment set
    (by default a quick run: 3 iterations on one level, no prealignment).
    """
    from napari_mireg.gui.widget import RegistrationWidget

    widget = RegistrationWidget(viewer)
    widget.options_form.control("level_iters").setText(iterations)
    widget.options_form.control("prealign").setCurrentText(prealign)
    viewer.window.add_dock_widget(widget)
    return widget
