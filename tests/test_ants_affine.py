"""The prealignment as ANTs reads it: `affine.mat` (MATLAB v4) beside `affine.txt`, 3D and 2D.

Checked through ANTsPy, an independent reader: the parameters, the image it resamples
(against `mireg apply`) and the inverse it computes (against numpy's).
"""

import nibabel as nib
import numpy as np
import pytest
from testdata import register_arguments, sample_pair

from napari_mireg import files
from napari_mireg.cli import main
from napari_mireg.cli.jobs import OUTPUT_FILES, read_report

ants = pytest.importorskip("ants")

# Measured: correlations of ANTsPy's resampling with `mireg apply`'s 1 - 8e-14 (3D) and
# 1 - 1e-16 (2D): both interpolate linearly at the same points; the bound leaves room for
# rounding (as in test_files).
AGREE = 1 - 1e-9
LPS_2D = np.diag([-1.0, -1.0, 1.0])


def correlation(a, b):
    where = (a != 0) & (b != 0)
    return float(np.corrcoef(a[where], b[where])[0, 1])


def matrix_of(parameters, ndim):
    """The (ndim + 1) square matrix of an ITK affine's parameters (centre 0)."""
    parameters = np.asarray(parameters, dtype=np.float64)
    matrix = np.eye(ndim + 1)
    matrix[:ndim, :ndim] = parameters[: ndim * ndim].reshape(ndim, ndim)
    matrix[:ndim, ndim] = parameters[ndim * ndim :]
    return matrix


def mireg_apply(tmp_path, transform, image, reference, name):
    out = tmp_path / name
    assert main(["apply", transform, "--to", str(image), "--reference", str(reference),
                 "--out", str(out)]) == 0  # fmt: skip
    return np.asarray(nib.load(out).dataobj, dtype=np.float64)


def check_ants_reads(out, ndim):
    """ANTsPy reads affine.mat and affine.txt alike, as the 2D or 3D transform they are."""
    mat = ants.read_transform(str(out / "affine.mat"), precision="double")
    text = ants.read_transform(str(out / "affine.txt"), precision="double")
    assert mat.dimension == text.dimension == ndim
    assert mat.type == text.type == "AffineTransform"
    assert len(mat.parameters) == ndim * (ndim + 1)
    np.testing.assert_array_equal(mat.parameters, text.parameters)
    np.testing.assert_array_equal(mat.fixed_parameters, np.zeros(ndim))
    return mat


@pytest.fixture(scope="module")
def registered(pair, tmp_path_factory):
    """`mireg register` (prealignment and two short SyN levels) on the 4 mm sample pair."""
    out = tmp_path_factory.mktemp("ants") / "out"
    options = ["--iterations", "4x2", "--threads", "2"]
    assert main(register_arguments(pair, out, labels=False, options=options)) == 0
    return out


def test_register_writes_the_prealignment_as_ants_mat(registered):
    out = registered
    assert "affine.mat" in OUTPUT_FILES.values()
    assert "affine.mat" in read_report(out)["outputs"]
    mat = check_ants_reads(out, 3)
    # The same matrix as affine.txt, in ITK's LPS: our reader agrees with ANTsPy's.
    ours = files.load_transform(out / "affine.txt").matrix
    np.testing.assert_allclose(
        files.RAS_TO_LPS @ ours @ files.RAS_TO_LPS, matrix_of(mat.parameters, 3)
    )
    assert not np.allclose(ours, np.eye(4), atol=1e-3)  # a real prealignment, not the identity


def test_antspy_applies_and_inverts_the_mat_like_mireg(registered, pair, tmp_path):
    out = registered
    fixed, moving = ants.image_read(str(pair["fixed"])), ants.image_read(str(pair["moving"]))
    theirs = ants.apply_transforms(fixed, moving, [str(out / "affine.mat")]).numpy()
    ours = mireg_apply(tmp_path, str(out / "affine.txt"), pair["moving"], pair["fixed"], "f.nii.gz")
    assert correlation(theirs, ours) >= AGREE
    # ANTsPy inverts the .mat: the inverse matrix is numpy's (to float32 rounding: ANTsPy's
    # inverse comes back in single precision, 1.6e-7 measured), and resamples as
    # [affine.txt,1].
    mat = ants.read_transform(str(out / "affine.mat"), precision="double")
    np.testing.assert_allclose(
        matrix_of(mat.invert().parameters, 3),
        np.linalg.inv(matrix_of(mat.parameters, 3)),
        rtol=1e-6,
        atol=1e-6,
    )
    back = ants.apply_transforms(
        moving, fixed, [str(out / "affine.mat")], whichtoinvert=[True]
    ).numpy()
    our_back = mireg_apply(
        tmp_path, f"[{out / 'affine.txt'},1]", pair["fixed"], pair["moving"], "b.nii.gz"
    )
    assert correlation(back, our_back) >= AGREE


# A 2D pair: axial slices (world axes x and y) of 2 mm voxels, the moving
# slice rotated by 8 degrees and shifted in its plane, both lying at a height z of their own.
FIXED_2D = np.array([[2.0, 0, 0, -90], [0, 2.0, 0, -126], [0, 0, 2.0, 12], [0, 0, 0, 1]])


def moving_2d_affine():
    angle = np.deg2rad(8.0)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    rotation[:3, 3] = [6.0, -4.0, 3.0]
    return rotation @ FIXED_2D


def write_2d(path, data, affine):
    image = nib.Nifti1Image(np.asarray(data, np.float32), affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nib.save(image, path)
    return path


def ants_2d(path):
    """The 2D NIfTI as ANTsPy's image: from_numpy with the file's LPS geometry."""
    affine = nib.load(path).affine
    lps = LPS_2D @ affine[np.ix_([0, 1, 3], [0, 1, 3])]
    spacing = np.linalg.norm(lps[:2, :2], axis=0)
    image = ants.from_numpy(
        np.asarray(nib.load(path).dataobj, dtype=np.float32),
        origin=tuple(lps[:2, 2]),
        spacing=tuple(spacing),
        direction=lps[:2, :2] / spacing,
    )
    read = ants.image_read(str(path))  # ITK's reader sees the same geometry
    np.testing.assert_allclose(read.origin, image.origin, atol=1e-4)
    np.testing.assert_allclose(read.spacing, image.spacing, atol=1e-5)
    np.testing.assert_allclose(read.direction, image.direction, atol=1e-6)
    return image


@pytest.fixture(scope="module")
def registered_2d(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair2d")
    pair = sample_pair(zoom=2, peak=0.0)
    middle = pair["fixed"].shape[2] // 2
    fixed = write_2d(folder / "fixed.nii.gz", pair["fixed"][:, :, middle], FIXED_2D)
    moving = write_2d(folder / "moving.nii.gz", pair["moving"][:, :, middle], moving_2d_affine())
    out = folder / "out"
    arguments = ["register", str(fixed), str(moving), "--iterations", "0", "--out", str(out)]
    assert main(arguments) == 0
    return fixed, moving, out


def test_2d_run_writes_a_2d_ants_affine_that_ants_applies_to_the_slice(registered_2d, tmp_path):
    fixed, moving, out = registered_2d
    assert "Transform: AffineTransform_double_2_2" in (out / "affine.txt").read_text()
    mat = check_ants_reads(out, 2)
    # The rotation found is the 8 degrees the moving slice was given (fixed-to-moving).
    linear = matrix_of(mat.parameters, 2)[:2, :2]
    assert abs(np.degrees(np.arctan2(linear[1, 0], linear[0, 0])) - 8.0) < 1.0
    theirs = ants.apply_transforms(ants_2d(fixed), ants_2d(moving), [str(out / "affine.mat")])
    ours = mireg_apply(tmp_path, str(out / "affine.txt"), moving, fixed, "w2d.nii.gz")
    warped = np.asarray(nib.load(out / "warped.nii.gz").dataobj, dtype=np.float64)
    assert correlation(theirs.numpy(), ours) >= AGREE
    assert correlation(ours, warped) >= AGREE  # the prealignment alone made warped.nii.gz
    # The inverse through ANTsPy brings the fixed slice onto the moving one like ours.
    back = ants.apply_transforms(
        ants_2d(moving), ants_2d(fixed), [str(out / "affine.mat")], whichtoinvert=[True]
    ).numpy()
    our_back = mireg_apply(tmp_path, f"[{out / 'affine.mat'},1]", fixed, moving, "b2d.nii.gz")
    assert correlation(back, our_back) >= AGREE


def test_a_2d_affine_is_refused_on_a_3d_image_and_a_3d_one_on_a_slice(
    registered_2d, registered, pair, tmp_path, capsys
):
    fixed_2d, _, out_2d = registered_2d
    for transform, image in (
        (out_2d / "affine.txt", pair["moving"]),
        (registered / "affine.mat", fixed_2d),
    ):
        code = main(["apply", str(transform), "--to", str(image), "--reference", str(image),
                     "--out", str(tmp_path / "x.nii.gz")])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and f"{transform}: is a " in err and "D affine" in err
    assert not (tmp_path / "x.nii.gz").exists()
