"""The MI-SyN engine end to end: known deformation, physical space, cancellation, bad input."""

import threading

import nibabel as nib
import numpy as np
import pytest
from testdata import deformed_pair, tissue_labels, warp_linear

from napari_mireg import (
    MutualInformation,
    SymmetricDiffeomorphicRegistration,
    register,
    register_steps,
)
from napari_mireg.engine import fields


def mean_dice(reference, warped):
    scores = [
        2
        * np.sum((reference == k) & (warped == k))
        / ((reference == k).sum() + (warped == k).sum())
        for k in (1, 2)
    ]
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def known_deformation():
    """2 mm MNI T1, a T2-like copy deformed by a known field (6 mm peak), their labels."""
    fixed, moving, affine, displacement = deformed_pair(zoom=2, peak=6.0, seed=0)
    labels = tissue_labels(2)
    moving_labels = warp_linear(labels, displacement, order=0).astype(np.uint8)
    truth, _ = fields.invert((displacement * 2.0).astype(np.float32), affine)
    return fixed, moving, affine, labels, moving_labels, truth


@pytest.fixture(scope="module")
def registered(known_deformation):
    fixed, moving, affine, *_ = known_deformation
    return register(fixed, moving, fixed_affine=affine, moving_affine=affine, prealign="affine")


def test_known_deformation_is_recovered(known_deformation, registered):
    fixed, moving, affine, labels, moving_labels, truth = known_deformation
    brain = labels > 0
    before = np.sqrt((truth**2).sum(-1))[brain].mean()
    after = np.sqrt(((registered.mapping.displacement() - truth) ** 2).sum(-1))[brain].mean()
    print(f"mean displacement error in the brain: {before:.2f} mm -> {after:.2f} mm")
    assert after < 0.755 < before  # measured 2.67 -> 0.73 mm
    assert registered.mi_after > registered.mi_before


def test_labels_overlap_beats_affine_only(known_deformation, registered):
    fixed, moving, affine, labels, moving_labels, _ = known_deformation
    syn_labels = registered.mapping.transform(moving_labels, interpolation="nearest")
    affine_labels = registered.affine.transform(
        moving_labels, registered.mapping.fixed_grid, interpolation="nearest", moving_affine=affine
    )
    syn_dice, affine_dice = mean_dice(labels, syn_labels), mean_dice(labels, affine_labels)
    print(f"GM/WM Dice: affine {affine_dice:.3f}, SyN {syn_dice:.3f}")
    assert syn_labels.dtype == np.uint8
    assert syn_dice > affine_dice + 0.05


def test_map_has_no_folds_and_inverts(registered):
    determinant = registered.mapping.jacobian_determinant()
    mean_error, _ = registered.mapping.inversion_error()
    print(f"det J min {determinant.min():.3f}, inverse consistency {mean_error:.1e} voxel")
    assert determinant.min() > 0
    assert mean_error < 1e-4  # measured 3.0e-5 voxel (det J down to 0.49)


def test_the_non_symmetric_mode_recovers_the_deformation_with_its_inverse(known_deformation):
    # Only the moving image moves; the map and its inverse must still be right.
    fixed, moving, affine, labels, _, truth = known_deformation
    result = register(
        fixed, moving, fixed_affine=affine, moving_affine=affine, prealign="none", symmetric=False
    )
    brain = labels > 0
    before = np.sqrt((truth**2).sum(-1))[brain].mean()
    error = np.sqrt(((result.mapping.displacement() - truth) ** 2).sum(-1))[brain].mean()
    _, largest = result.mapping.inversion_error()
    print(f"non-symmetric: error {before:.2f} -> {error:.2f} mm, inverse {largest:.3f} voxel")
    # Measured: 2.67 -> 0.99 mm (both images share a grid: the finest level is Parzen, the
    # coarse ones partial volume on a moving grid twice as fine; docs/engine.md, Known
    # answers); the inverse is solved to 0.05 voxel, and reaches 0.050.
    assert error < 0.5 * before
    assert result.mapping.jacobian_determinant().min() > 0
    assert largest < 0.06


def test_the_non_symmetric_map_may_squeeze_as_far_as_the_symmetric_pair():
    # A bright disk of radius 12 in the fixed image is one of radius 4.5 in the moving one
    # (a ventricle of another subject): the map must shrink its area about 7-fold (det J
    # 0.14). The one map of the non-symmetric mode carries what both half-maps carry
    # (each bounded at det J 0.2), so its own bound is 0.04, not 0.2.
    y, x = np.mgrid[:64, :64] - 31.5
    radius = np.sqrt(x**2 + y**2)
    square = (np.abs(x) < 26) & (np.abs(y) < 26)

    def image(disk):
        return np.where(radius < disk, 3.0, np.where(square, 1.0, 0.0)).astype(np.float32)

    fixed, moving = image(12.0), image(4.5)
    # Parzen: this three-valued toy is no image for partial volume (Dice 0.82 with it).
    result = register(
        fixed, moving, prealign="none", symmetric=False, histogram="parzen", threads=2
    )
    warped = result.mapping.transform(moving, interpolation="linear")
    disk, found = fixed > 2, warped > 1.5
    dice = 2 * (disk & found).sum() / (disk.sum() + found.sum())
    determinant = result.mapping.jacobian_determinant()
    _, largest = result.mapping.inversion_error()
    print(f"disk Dice {dice:.3f}, det J {determinant.min():.3f}, inverse {largest:.3f} voxel")
    # Measured: Dice 0.978, det J down to 0.048, inverse 0.049 voxel (solved to 0.05).
    assert dice > 0.95
    assert 0 < determinant.min() < 0.2
    assert largest < 0.06


def test_winsorizing_keeps_a_few_hot_voxels_from_blinding_the_metric(known_deformation):
    # Forty voxels at 50 times the brightest tissue (vessels, fat, a coil's hot spot): the
    # histogram's range grows 50-fold, the tissues crowd into its first bins and MI sees
    # little of them. Clipped at the 99.5 % quantile for the metric, they do not.
    fixed, moving, affine, labels, _, truth = known_deformation
    hot = moving.copy()
    spots = np.random.default_rng(4).integers(0, hot.size, 40)
    hot.flat[spots] = 50 * hot.max()
    settings = {"prealign": "none", "level_iters": (20, 10), "fixed_affine": affine}
    brain = labels > 0

    def error(result):
        return np.sqrt(((result.mapping.displacement() - truth) ** 2).sum(-1))[brain].mean()

    plain = register(fixed, hot, moving_affine=affine, **settings)
    clipped = register(fixed, hot, moving_affine=affine, winsorize=(0.005, 0.995), **settings)
    print(f"displacement error: {error(plain):.2f} mm as is, {error(clipped):.2f} winsorized")
    assert error(clipped) < 0.8 * error(plain)
    assert clipped.warped.max() > 10 * moving.max()  # the output keeps the hot voxels


def test_fields_live_on_the_box_around_the_anatomy(known_deformation):
    # The MNI grid padded with 30 voxels of background on every side: the fields are
    # computed on the box around the brains (zero displacement outside it), and the map
    # inside matches the one of the unpadded grid.
    fixed, moving, affine, labels, _, _ = known_deformation
    pad = 30
    padded_affine = affine.copy()
    padded_affine[:3, 3] -= affine[:3, :3] @ np.full(3, pad)
    padded = [np.pad(image, pad) for image in (fixed, moving)]
    # The Parzen histogram: partial volume depends on where the level grids' voxels fall,
    # and the box moves the coarse grids (docs/maths.md, section 7).
    settings = {"prealign": "none", "level_iters": (20, 10), "histogram": "parzen"}
    plain = register(fixed, moving, fixed_affine=affine, moving_affine=affine, **settings)
    boxed = register(*padded, fixed_affine=padded_affine, moving_affine=padded_affine, **settings)
    displacement = boxed.mapping.displacement()
    far = pad // 2  # beyond the box: the brain's extent, the margin (4 voxels), and some
    for axis in range(3):
        outside = np.moveaxis(displacement, axis, 0)
        assert not outside[:far].any() and not outside[-far:].any()
    inside = displacement[pad:-pad, pad:-pad, pad:-pad]
    brain = labels > 0
    difference = np.sqrt(((inside - plain.mapping.displacement()) ** 2).sum(-1))[brain]
    moved = np.sqrt((plain.mapping.displacement() ** 2).sum(-1))[brain]
    # The coarse levels' grids start at the box's corner, so the padding shifts them by part
    # of a coarse voxel, and the map follows its samples: about 0.28 mm (a seventh of a
    # 2 mm voxel) against displacements of 2.3 mm with the defaults of docs/engine.md.
    assert moved.mean() > 1.5
    assert difference.mean() < 0.15 * moved.mean()


def test_transform_inverse_brings_fixed_images_to_moving_space(known_deformation, registered):
    fixed, moving, affine, labels, moving_labels, _ = known_deformation
    back = registered.mapping.transform_inverse(labels, interpolation="nearest")
    assert back.shape == moving_labels.shape
    assert mean_dice(moving_labels, back) > mean_dice(moving_labels, labels) + 0.05


# --- physical space: other voxel sizes, orientations and shapes --------------------------


def reoriented(data, affine, codes):
    """The same image in another voxel order (e.g. LIA): identical world content."""
    start = nib.orientations.io_orientation(affine)
    change = nib.orientations.ornt_transform(start, nib.orientations.axcodes2ornt(codes))
    new_data = nib.orientations.apply_orientation(data, change)
    return np.ascontiguousarray(new_data), affine @ nib.orientations.inv_ornt_aff(
        change, data.shape
    )


def regridded(data, affine, zooms, pad=0, interpolation="linear"):
    """The same image on a grid of other voxel sizes (and `pad` extra voxels per side)."""
    scale = np.diag(list(zooms) + [1.0])
    new_affine = affine @ scale
    new_affine[:3, 3] -= new_affine[:3, :3] @ np.full(3, float(pad))
    shape = tuple(int(np.ceil(n / z)) + 2 * pad for n, z in zip(data.shape, zooms, strict=True))
    return fields.resample(data, affine, shape, new_affine, interpolation=interpolation), new_affine


@pytest.fixture(scope="module")
def registered_parzen(known_deformation):
    fixed, moving, affine, *_ = known_deformation
    return register(fixed, moving, fixed_affine=affine, moving_affine=affine, histogram="parzen")


@pytest.mark.parametrize("variant", ["anisotropic", "LIA", "other shape"])
def test_other_grids_register_like_the_plain_case(known_deformation, registered_parzen, variant):
    # The Parzen histogram on both sides: partial volume depends on how the two grids'
    # voxels meet (docs/maths.md, section 7), which is what this test varies on purpose.
    fixed, moving, affine, labels, moving_labels, _ = known_deformation
    plain = mean_dice(
        labels, registered_parzen.mapping.transform(moving_labels, interpolation="nearest")
    )
    if variant == "anisotropic":
        image, image_affine = regridded(moving, affine, (1.0, 1.0, 2.5))
    elif variant == "LIA":
        image, image_affine = reoriented(moving, affine, ("L", "I", "A"))
    else:
        image, image_affine = regridded(moving, affine, (1.0, 1.0, 1.0), pad=7)
    result = register(
        fixed,
        image,
        fixed_affine=affine,
        moving_affine=image_affine,
        prealign="affine",
        histogram="parzen",
    )
    # The map is in world coordinates: it carries the moving labels from any grid; using the
    # original one judges the registration, not the labels' loss on a coarser grid.
    warped = result.mapping.transform(moving_labels, interpolation="nearest", moving_affine=affine)
    reoriented_labels, labels_affine = reoriented(moving_labels, affine, ("L", "I", "A"))
    np.testing.assert_array_equal(
        result.mapping.transform(
            reoriented_labels, interpolation="nearest", moving_affine=labels_affine
        ),
        warped,
    )
    assert warped.shape == fixed.shape
    score = mean_dice(labels, warped)
    print(f"{variant}: Dice {score:.3f} vs plain {plain:.3f}")
    assert abs(score - plain) < 0.02  # measured 0.017 (anisotropic), 0.001, 0.002


def test_nibabel_images_are_accepted(known_deformation):
    fixed, moving, affine, *_ = known_deformation
    syn = SymmetricDiffeomorphicRegistration(MutualInformation(32), level_iters=(3, 2))
    mapping = syn.optimize(nib.Nifti1Image(fixed, affine), nib.Nifti1Image(moving, affine))
    np.testing.assert_allclose(mapping.fixed_grid.affine, affine)
    assert mapping.forward.shape == fixed.shape + (3,)


def test_2d_registration_reduces_the_mismatch(known_deformation):
    fixed, moving, affine, labels, moving_labels, _ = known_deformation
    middle = fixed.shape[2] // 2
    spacing2d = np.diag([2.0, 2.0, 1.0])
    result = register(
        fixed[:, :, middle],
        moving[:, :, middle],
        fixed_affine=spacing2d,
        moving_affine=spacing2d,
        prealign="none",
        level_iters=(30, 20),
    )
    warped = result.mapping.transform(moving_labels[:, :, middle], interpolation="nearest")
    assert warped.shape == fixed.shape[:2]
    assert result.mapping.forward[..., 0].max() == 0  # no motion along the singleton axis
    assert mean_dice(labels[:, :, middle], warped) > mean_dice(
        labels[:, :, middle], moving_labels[:, :, middle]
    )


# --- cancellation and continuation -------------------------------------------------------


def test_closing_the_generator_stops_within_an_iteration(known_deformation):
    fixed, moving, affine, *_ = known_deformation
    threads_before = threading.active_count()
    steps = register_steps(
        fixed,
        moving,
        fixed_affine=affine,
        moving_affine=affine,
        prealign="none",
        level_iters=(40, 20, 10),
    )
    assert next(steps).phase == "prealigned"  # "none": no prealignment iteration
    # Into the second level (the first may stop early once its energy flattens).
    seen = [next(steps)]
    while seen[-1].level < 1:
        seen.append(next(steps))
    assert len(seen) >= 11 and np.isfinite(seen[-1].energy)
    steps.close()
    assert threading.active_count() == threads_before
    with pytest.raises(StopIteration):
        next(steps)


def test_the_steps_say_their_phase_prealignment_first(known_deformation):
    fixed, moving, affine, *_ = known_deformation
    options = {"fixed_affine": affine, "moving_affine": affine, "prealign": "rigid"}
    options["level_iters"] = (3, 2)
    steps = register_steps(fixed, moving, **options)
    seen = []
    while True:
        try:
            seen.append(next(steps))
        except StopIteration as finished:
            result = finished.value
            break
    phases = [step.phase for step in seen]
    count = phases.count("prealignment")
    assert count > 5 and phases == ["prealignment"] * count + ["prealigned"] + ["syn"] * (
        len(seen) - count - 1
    )
    assert [step.stage for step in seen[:count]] == ["rigid"] * count
    assert [step.energy for step in seen[count + 1 :]] == result.energies
    np.testing.assert_array_equal(seen[count].prealignment.matrix, result.prealignment.matrix)
    # The same work as register(): the same map, to the bit.
    again = register(fixed, moving, **options)
    np.testing.assert_array_equal(again.mapping.forward, result.mapping.forward)
    np.testing.assert_array_equal(again.prealignment.matrix, result.prealignment.matrix)
    # A continued map keeps its prealignment: SyN steps only.
    more = register_steps(fixed, moving, initial=result, **dict(options, level_iters=(1,)))
    assert [step.phase for step in more] == ["syn"]


def test_closing_the_generator_during_the_prealignment_stops_it(known_deformation):
    fixed, moving, affine, *_ = known_deformation
    steps = register_steps(fixed, moving, fixed_affine=affine, moving_affine=affine)
    first = next(steps)
    assert (first.phase, first.level, first.stage, first.iteration) == (
        "prealignment",
        0,
        "rigid",
        0,
    )
    steps.close()
    with pytest.raises(StopIteration):
        next(steps)


def test_snapshots_carry_live_views(known_deformation):
    fixed, moving, affine, *_ = known_deformation
    steps = register_steps(
        fixed,
        moving,
        fixed_affine=affine,
        moving_affine=affine,
        prealign="none",
        level_iters=(2, 1),
        with_images=True,
        bins=24,
        histogram="parzen",
    )
    next(steps)  # the (given) prealignment
    snapshot = next(steps)
    steps.close()
    assert snapshot.joint_histogram.shape == (24, 24)
    assert snapshot.update.shape[-1] == 3 and np.abs(snapshot.update).max() > 0
    assert snapshot.warped_moving.shape == snapshot.update.shape[:3]


def test_continue_refines_an_existing_map(known_deformation, registered):
    fixed, moving, affine, labels, moving_labels, truth = known_deformation
    more = register(
        fixed,
        moving,
        fixed_affine=affine,
        moving_affine=affine,
        initial=registered,
        level_iters=(5,),
    )
    assert len(more.energies) == 5
    np.testing.assert_allclose(more.affine.matrix, registered.affine.matrix)
    assert more.mi_after >= registered.mi_after - 0.01


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fixed_input, moving_input, options, message",
    [
        (np.full((10, 12, 14), np.nan), None, {}, "fixed has NaN or infinite"),
        (None, np.full((10, 12, 14), np.inf), {}, "moving has NaN or infinite"),
        (np.ones((10, 12, 14)), None, {}, "fixed image is constant"),
        (None, np.zeros((10, 12, 0)), {}, "moving is empty"),
        (np.zeros((10, 12, 14, 2)), None, {}, "2D or 3D"),
        (None, np.zeros((10, 12)), {"prealign": "none"}, "fixed is 3D but moving is 2D"),
        (None, None, {"fixed_mask": np.zeros((10, 12, 14), bool)}, "select"),
        (None, None, {"prealign": "warp"}, "prealign: must be one of"),
    ],
)
def test_bad_input_is_a_value_error_before_any_work(fixed_input, moving_input, options, message):
    rng = np.random.default_rng(0)
    fixed = rng.random((10, 12, 14)) if fixed_input is None else fixed_input
    moving = rng.random((10, 12, 14)) if moving_input is None else moving_input
    steps = register_steps(fixed, moving, level_iters=(2,), **options)
    with pytest.raises(ValueError, match=message):
        next(steps)
