"""The one evaluation of a registration: det J, folds, warped labels, overlap before/after.

The pinned figures are those the widget's summary and `mireg register`'s report gave for
this map before both used :func:`evaluate`.
"""

import numpy as np
import pytest
from scipy import ndimage

from napari_mireg.engine.quality import evaluate
from napari_mireg.engine.registration import Result
from napari_mireg.engine.transforms import AffineMap, DiffeomorphicMap, as_volume
from napari_mireg.overlap import overlap_scores


@pytest.fixture(scope="module")
def folded():
    """A map on a 2 mm grid whose bump (9 mm peak) folds a few voxels, a translation after
    it, label maps on the fixed grid and on a moving grid of another shape and voxel size.
    """
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-10.0, -12.0, 8.0)
    shape = (16, 18, 14)
    fixed_grid = as_volume(np.zeros(shape, np.float32), affine)
    i, j, k = np.indices(shape, dtype=np.float64)
    bump = 9.0 * np.exp(-((i - 8) ** 2 + (j - 9) ** 2 + (k - 7) ** 2) / 8.0)
    forward = np.zeros(shape + (3,), np.float32)
    forward[..., 0] = bump
    forward[..., 1] = 0.3 * bump
    moving_affine = np.diag([1.8, 1.8, 1.8, 1.0])
    moving_affine[:3, 3] = (-9.0, -11.0, 9.0)
    mi, mj, mk = np.indices((20, 20, 16))
    moving_labels = np.where(mi < 10, 2, 7).astype(np.int16)
    moving_labels[mj >= 13] = 5
    moving_labels[(mk < 2) | (mk > 13)] = 0
    moving_labels = as_volume(moving_labels, moving_affine, dtype=None)
    prealign = np.eye(4)
    prealign[:3, 3] = (1.5, -2.0, 0.5)
    mapping = DiffeomorphicMap(fixed_grid, moving_labels, prealign, forward, -forward)
    fixed_labels = np.where(i < 8, 2, 7).astype(np.int16)
    fixed_labels[j >= 12] = 5
    fixed_labels[(k < 1) | (k > 12)] = 0
    return mapping, fixed_labels, moving_labels


def test_the_figures_are_those_of_the_former_report_and_summary(folded):
    mapping, fixed_labels, moving_labels = folded
    quality = evaluate(mapping, fixed_labels, moving_labels, inverse_consistency=True)
    assert quality.folds == 9
    assert quality.jacobian_range[0] == -0.2687555979626115  # the report's min_jacobian
    assert quality.jacobian_range[1] == pytest.approx(2.2687554359436035, rel=1e-7)
    shown = quality.jacobian_determinant  # the summary's layer, in single precision
    assert shown.dtype == np.float32 and shown.shape == mapping.fixed_grid.shape
    assert (float(shown.min()), float(shown.max())) == (-0.26875558495521545, 2.2687554359436035)
    assert quality.inverse_consistency == (0.06492902291820393, 4.36717414855957)
    labels, counts = np.unique(quality.warped_labels, return_counts=True)
    assert labels.tolist() == [0, 2, 5, 7] and counts.tolist() == [1216, 995, 880, 941]
    assert quality.overlap.summary() == {
        "whole_dice": 0.8979591836734694,
        "whole_jaccard": 0.8148148148148148,
        "mean_dice": 0.8160658241522332,
        "mean_jaccard": 0.6908286517177067,
    }
    assert quality.overlap_before.summary() == {
        "whole_dice": 0.8960229995208433,
        "whole_jaccard": 0.8116319444444444,
        "mean_dice": 0.8178150754137845,
        "mean_jaccard": 0.6990624501833254,
    }
    assert quality.overlap.to_csv_text() == (
        "label,name,dice,jaccard,fixed_voxels,warped_voxels\n"
        "2,Left-Cerebral-White-Matter,0.791803,0.655359,1152,995\n"
        "5,Left-Inf-Lat-Vent,0.866142,0.763889,1152,880\n"
        "7,Left-Cerebellum-White-Matter,0.790253,0.653239,1152,941\n"
    )


def test_a_result_is_scored_like_its_map_and_labels_are_optional(folded):
    mapping, fixed_labels, moving_labels = folded
    result = Result(AffineMap(mapping.prealign), mapping, np.zeros(mapping.fixed_grid.shape), 0, 0)
    quality = evaluate(result)
    assert quality.folds == 9 and quality.jacobian_range[0] < 0
    assert quality.inverse_consistency is None  # only when asked: a composition of two fields
    assert quality.warped_labels is None and quality.overlap is None
    only_moving = evaluate(result, moving_labels=moving_labels)
    np.testing.assert_array_equal(
        only_moving.warped_labels, mapping.transform(moving_labels, interpolation="nearest")
    )
    assert only_moving.overlap is None and only_moving.overlap_before is None


def test_the_identity_keeps_volumes_and_the_overlap(folded):
    mapping, fixed_labels, moving_labels = folded
    zero = np.zeros_like(mapping.forward)
    identity = DiffeomorphicMap(mapping.fixed_grid, moving_labels, np.eye(4), zero, zero)
    quality = evaluate(identity, fixed_labels, moving_labels, inverse_consistency=True)
    assert quality.jacobian_range == (1.0, 1.0) and quality.folds == 0
    assert quality.inverse_consistency == (0.0, 0.0)
    assert quality.overlap == quality.overlap_before


def test_fixed_labels_off_the_fixed_grid_are_refused(folded):
    mapping, fixed_labels, moving_labels = folded
    with pytest.raises(ValueError, match="one shape"):
        evaluate(mapping, fixed_labels[:-1], moving_labels)


def test_the_overlap_after_the_prealignment_is_that_of_the_labels_moved_by_it_alone(folded):
    """Each label's Dice after the affine stage: the moving labels resampled by the
    prealignment alone (nearest neighbour, here by scipy), the SyN's fields left out.
    """
    mapping, fixed_labels, moving_labels = folded
    angle = np.radians(4.0)
    prealign = np.eye(4)
    prealign[:2, :2] = ((np.cos(angle), -np.sin(angle)), (np.sin(angle), np.cos(angle)))
    prealign[:3, 3] = (1.3, -2.2, 0.7)
    rotated = DiffeomorphicMap(
        mapping.fixed_grid, moving_labels, prealign, mapping.forward, mapping.backward
    )
    quality = evaluate(rotated, fixed_labels, moving_labels)
    # Fixed voxel -> fixed world -> moving world -> moving voxel.
    voxels = np.linalg.inv(moving_labels.affine) @ prealign @ mapping.fixed_grid.affine
    moved = ndimage.affine_transform(
        moving_labels.data, voxels, output_shape=fixed_labels.shape, order=0, mode="grid-constant"
    )
    independent = overlap_scores(fixed_labels, moved)
    assert quality.overlap_affine == independent
    assert not np.array_equal(moved, quality.warped_labels)  # not the whole map's labels
    # Each label is scored after the affine stage and after SyN, in the same order.
    assert [row["label"] for row in quality.overlap_affine.rows] == [2, 5, 7]
    assert [row["label"] for row in quality.overlap.rows] == [2, 5, 7]
    assert quality.overlap_affine.mean_dice != quality.overlap.mean_dice
