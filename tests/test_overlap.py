"""Dice/Jaccard tables: exact agreement with a direct per-label computation."""

import numpy as np
import pytest

from napari_mireg.overlap import overlap_scores


def direct(fixed, warped, label):
    a, b = fixed == label, warped == label
    inter, total = np.sum(a & b), a.sum() + b.sum()
    return 2 * inter / total, inter / (total - inter)


def random_maps(shape, labels, seed):
    rng = np.random.default_rng(seed)
    fixed = rng.choice(labels, size=shape)
    warped = fixed.copy()
    flip = rng.random(shape) < 0.2
    warped[flip] = rng.choice(labels, size=int(flip.sum()))
    return fixed, warped


def test_scores_equal_a_direct_computation():
    fixed, warped = random_maps((20, 22, 24), [0, 2, 3, 41, 42, 1035], seed=3)
    table = overlap_scores(fixed, warped)
    assert [row["label"] for row in table.rows] == [2, 3, 41, 42, 1035]
    for row in table.rows:
        dice, jaccard = direct(fixed, warped, row["label"])
        assert row["dice"] == dice and row["jaccard"] == jaccard
        assert row["fixed_voxels"] == np.sum(fixed == row["label"])
        assert row["warped_voxels"] == np.sum(warped == row["label"])
    assert table.rows[4]["name"] == "ctx-lh-insula"
    whole, whole_j = direct(fixed > 0, warped > 0, True)
    assert table.whole_dice == whole and table.whole_jaccard == whole_j
    assert table.mean_dice == pytest.approx(np.mean([r["dice"] for r in table.rows]), abs=0)


def test_missing_labels_follow_the_documented_conventions():
    fixed = np.array([[0, 2, 2], [3, 3, 0]])
    warped = np.array([[0, 2, 0], [41, 41, 0]])
    table = overlap_scores(fixed, warped, labels=[2, 3, 41, 17])
    rows = {row["label"]: row for row in table.rows}
    assert rows[3]["dice"] == 0 and rows[41]["dice"] == 0  # one side only: 0, counted
    assert np.isnan(rows[17]["dice"])  # absent from both: NaN
    assert table.mean_dice == pytest.approx((2 / 3 + 0 + 0) / 3)
    assert "17,Left-Hippocampus,nan" in table.to_csv_text()


def test_shapes_must_match():
    with pytest.raises(ValueError, match="one shape"):
        overlap_scores(np.zeros((3, 3), int), np.zeros((3, 4), int))


def test_hundred_labels_on_a_1mm_brain_in_16_bits_agree_with_the_direct_computation():
    # The size and type of a SynthSeg map: the counting must not overflow or drop a label.
    labels = np.arange(101)
    fixed, warped = random_maps((182, 218, 182), labels, seed=0)
    fixed, warped = fixed.astype(np.int16), warped.astype(np.int16)
    table = overlap_scores(fixed, warped)
    assert [row["label"] for row in table.rows] == list(range(1, 101))
    for label in (1, 50, 100):
        dice, jaccard = direct(fixed, warped, label)
        row = table.rows[label - 1]
        assert row["dice"] == dice and row["jaccard"] == jaccard
        assert row["fixed_voxels"] == np.sum(fixed == label)
