"""The reader's image-or-labels decision, without Qt: file names, folders, values, types."""

import nibabel as nib
import numpy as np
import pytest

from napari_mireg.gui.reader import FEW_VALUES, looks_like_labels, read_volume

RNG = np.random.default_rng(0)
# A uint8 head as FreeSurfer's T1.mgz or a scanner export holds it: every value 0..255.
UINT8_HEAD = RNG.integers(0, 256, (20, 22, 24)).astype(np.uint8)
FLOAT_T1 = RNG.normal(100, 20, (20, 22, 24)).astype(np.float32)
# 40 integer classes that are no FreeSurfer ids (100..139): a label map only by its name.
MANY_CLASSES = RNG.integers(100, 140, (20, 22, 24)).astype(np.int16)
# FreeSurfer/SynthSeg ids (more than FEW_VALUES of them): a label map by its values.
ASEG_IDS = np.array([0, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 26, 28, 41])
ASEG = RNG.choice(ASEG_IDS, (20, 22, 24)).astype(np.int32)


def classes(count):
    """An integer volume with exactly `count` distinct values, none a FreeSurfer id."""
    values = 100 + np.arange(count)
    return np.resize(values, (10, 12, 14)).astype(np.int16)


@pytest.mark.parametrize(
    "path, data, expected",
    [
        # folder names do not decide: only the file's own name
        ("/data/labels/sub-01_T1w.nii.gz", FLOAT_T1, False),
        ("/data/labels/sub-01_T1w.nii.gz", UINT8_HEAD, False),
        ("/study/aseg_runs/brain.mgz", UINT8_HEAD, False),
        ("/derivatives/synthseg/sub-01/anat/T1.mgz", UINT8_HEAD, False),
        ("/data/seg/head.nii", UINT8_HEAD, False),
        # the file's name decides for integer data
        ("/data/images/sub-01_dseg.nii.gz", MANY_CLASSES, True),
        ("/data/images/sub-01_desc-aseg_dseg.nii.gz", MANY_CLASSES, True),
        ("sub-01_seg.nii.gz", MANY_CLASSES, True),
        ("aparc+aseg.mgz", MANY_CLASSES, True),
        ("wmparc.mgz", MANY_CLASSES, True),
        ("my_label_map.nii", MANY_CLASSES, True),
        ("tissue.synthseg.nii.gz", MANY_CLASSES, True),
        ("sub-01_T1w.nii.gz", MANY_CLASSES, False),
        # a label name on non-integer or negative data does not make labels
        ("sub-01_dseg.nii.gz", FLOAT_T1, False),
        ("sub-01_dseg.nii.gz", MANY_CLASSES - 120, False),
        # FreeSurfer ids decide without a name; float label maps count as integers
        ("volume.nii.gz", ASEG, True),
        ("volume.nii.gz", ASEG.astype(np.float32), True),
        ("volume.nii.gz", np.where(ASEG == 41, 1, ASEG), False),  # 1 is no FreeSurfer id
        # a uint8 head is an image, named or not
        ("T1.mgz", UINT8_HEAD, False),
        ("brain.mgz", UINT8_HEAD, False),
    ],
)
def test_labels_or_image(path, data, expected):
    assert looks_like_labels(path, data) is expected


def test_the_distinct_value_boundary():
    # At most FEW_VALUES distinct integers: a label map (masks, tissue classes) by any name.
    assert FEW_VALUES == 16
    assert looks_like_labels("volume.nii", classes(FEW_VALUES)) is True
    assert looks_like_labels("volume.nii", classes(FEW_VALUES + 1)) is False
    assert looks_like_labels("volume.nii", classes(2).astype(np.uint8)) is True
    assert looks_like_labels("volume.nii", classes(FEW_VALUES).astype(np.float64)) is True
    almost = classes(FEW_VALUES).astype(np.float32)
    almost.flat[5] += 0.5  # one non-integer value: intensities
    assert looks_like_labels("volume.nii", almost) is False


def test_a_t1_inside_a_labels_folder_reads_as_an_image(tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    path = folder / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(UINT8_HEAD, np.diag([2.0, 2.0, 2.0, 1.0])), path)
    data, kwargs, kind = read_volume(path)
    assert kind == "image" and kwargs["colormap"] == "gray"
    assert data.dtype == np.float32 and kwargs["name"] == "sub-01_T1w"
    dseg = folder / "sub-01_dseg.nii.gz"
    nib.save(nib.Nifti1Image(MANY_CLASSES, np.diag([2.0, 2.0, 2.0, 1.0])), dseg)
    assert read_volume(dseg)[2] == "labels"
    assert read_volume(dseg, kind="image")[2] == "image"
    assert read_volume(path, kind="labels")[2] == "labels"
