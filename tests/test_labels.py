"""SynthSeg label table and label-map cleanup."""

import numpy as np
import pytest
from testdata import synthseg_tissue_labels

from napari_mireg.labels import (
    LABEL_COLOURS,
    SYNTHSEG_1_LABELS,
    SYNTHSEG_2_LABELS,
    SYNTHSEG_PARC_LABELS,
    clean_labels,
    label_colour,
    label_name,
    label_values,
)


def test_table_matches_synthseg_and_freesurfer():
    assert len(SYNTHSEG_2_LABELS) == 32 and 24 in SYNTHSEG_2_LABELS
    assert set(SYNTHSEG_2_LABELS) - set(SYNTHSEG_1_LABELS) == {24}
    parcels = [label for label in SYNTHSEG_PARC_LABELS if label >= 1000]
    assert len(parcels) == 68 and 1004 not in parcels and 2004 not in parcels
    assert 3 not in SYNTHSEG_PARC_LABELS and 42 not in SYNTHSEG_PARC_LABELS
    assert label_name(17) == "Left-Hippocampus" and label_name(53) == "Right-Hippocampus"
    assert label_name(2035) == "ctx-rh-insula" and label_name(999) == "label 999"
    assert LABEL_COLOURS[3] == (205, 62, 78) and LABEL_COLOURS[13] == (12, 48, 255)
    assert LABEL_COLOURS[52] == (13, 48, 255) and LABEL_COLOURS[24] == (60, 60, 60)
    assert label_colour(999) == label_colour(999) and label_colour(999) != (0, 0, 0)


def test_label_values_accepts_whole_floats_and_refuses_intensities():
    assert label_values(np.array([[0.0, 2.0], [41.0, 3.0]])).dtype.kind == "i"
    with pytest.raises(ValueError, match="non-integer"):
        label_values(np.array([0.0, 2.5]))
    with pytest.raises(ValueError, match="negative"):
        label_values(np.array([0, -1]))


def planted_map():
    """Three labelled boxes; label 2 with a hole, label 3 with two islands."""
    labels = np.zeros((30, 30, 30), np.int16)
    labels[2:12, 2:28, 2:28] = 2
    labels[12:22, 2:28, 2:28] = 3
    labels[22:28, 2:28, 2:28] = 41
    clean = labels.copy()
    labels[5:8, 10:13, 10:13] = 0  # a 27-voxel hole inside label 2
    labels[24:26, 5:7, 5:7] = 3  # an 8-voxel island of 3 inside 41
    labels[14, 20, 20] = 41  # a 1-voxel island of 41 inside 3
    labels[0, 0, 0] = 3  # an island of 3 in the background
    return labels, clean


def test_cleanup_fixes_planted_holes_and_islands():
    labels, clean = planted_map()
    cleaned, changes = clean_labels(labels)
    expected = clean.copy()
    np.testing.assert_array_equal(cleaned, expected)
    by_label = {change.label: change for change in changes}
    assert by_label[2].holes_filled == 27 and by_label[2].islands_removed == 0
    assert by_label[3].islands_removed == 2 and by_label[3].island_voxels == 9
    assert by_label[41].islands_removed == 1 and by_label[41].island_voxels == 1
    assert by_label[3].voxels_after == np.count_nonzero(expected == 3)


def test_cleanup_min_island_keeps_large_components():
    labels, _ = planted_map()
    cleaned, changes = clean_labels(labels, min_island=5, fill_holes=False)
    assert np.count_nonzero(cleaned[24:26, 5:7, 5:7] == 3) == 8  # 8 voxels >= 5: kept
    assert cleaned[0, 0, 0] == 0 and cleaned[14, 20, 20] == 3  # 1-voxel islands: gone
    assert np.count_nonzero(cleaned[5:8, 10:13, 10:13]) == 0  # holes left alone


def test_cleanup_leaves_a_clean_map_bit_for_bit_and_keeps_every_label():
    _, clean = planted_map()
    cleaned, changes = clean_labels(clean)
    assert cleaned.dtype == clean.dtype and np.array_equal(cleaned, clean)
    assert all(c.island_voxels == 0 and c.holes_filled == 0 for c in changes)
    tiny = clean.copy()
    tiny[25, 25, 25] = 17  # a one-voxel label is its own largest component
    cleaned, _ = clean_labels(tiny)
    assert set(np.unique(cleaned)) == set(np.unique(tiny))


def test_cleanup_of_the_sample_labels_keeps_the_label_set():
    labels = synthseg_tissue_labels(zoom=4)
    cleaned, changes = clean_labels(labels)
    assert set(np.unique(cleaned)) == set(np.unique(labels))
    assert sum(c.voxels_after for c in changes) + np.count_nonzero(cleaned == 0) == labels.size
