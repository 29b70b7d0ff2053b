"""Files: volumes in and out, and ITK/ANTs transforms checked through independent readers."""

import nibabel as nib
import numpy as np
import pytest
from conftest import smooth_field
from testdata import blobs

from napari_mireg import files
from napari_mireg.engine.fields import invert
from napari_mireg.engine.transforms import AffineMap, DiffeomorphicMap, apply_transforms, as_volume

# Grids that are neither RAS nor isotropic: the axes permuted and flipped, voxels of
# 1 x 2.5 x 1.2 mm and 1.1 x 1 x 2 mm.
FIXED_AFFINE = np.array([[-1.0, 0, 0, 20], [0, 0, 2.5, -30], [0, -1.2, 0, 25], [0, 0, 0, 1]])
MOVING_AFFINE = np.array([[0, 1.1, 0, -22], [1.0, 0, 0, -25], [0, 0, 2.0, -18], [0, 0, 0, 1]])


# Measured against SimpleITK and ANTsPy: correlations 1 - 1e-14 (float32 rounding), every
# label voxel the same. The bounds leave room for rounding and for a few nearest-neighbour
# ties (1e-4 of the voxels: 4 of the 38400 here).
AGREE = 1 - 1e-9
LABELS_AGREE = 1 - 1e-4


def correlation(a, b, where):
    return float(np.corrcoef(a[where], b[where])[0, 1])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A DiffeomorphicMap between the two grids, exported; the moving image and labels."""
    folder = tmp_path_factory.mktemp("exported")
    fixed_shape, moving_shape = (40, 30, 32), (44, 40, 20)
    forward = (smooth_field(fixed_shape, 3.0, seed=4) * 1.5).astype(np.float32)
    backward, _ = invert(forward, FIXED_AFFINE, max_iterations=50)
    rng = np.random.default_rng(0)
    prealign = np.eye(4)
    prealign[:3, :3] += 0.04 * rng.standard_normal((3, 3))
    prealign[:3, 3] = [2.0, -1.0, 3.0]
    mapping = DiffeomorphicMap(
        as_volume(np.zeros(fixed_shape), FIXED_AFFINE),
        as_volume(np.zeros(moving_shape), MOVING_AFFINE),
        prealign,
        forward,
        backward,
    )
    image = (100 * blobs(moving_shape, seed=5)).astype(np.float32)
    labels = (np.digitize(image, np.percentile(image, [30, 50, 70, 85])) * 10).astype(np.int16)
    paths = {
        name: folder / f"{name}.nii.gz"
        for name in ("fixed", "moving", "labels", "warp", "inverse_warp")
    }
    paths["affine"] = folder / "affine.txt"
    paths["affine_mat"] = folder / "affine.mat"
    files.save_volume(paths["fixed"], np.zeros(fixed_shape), FIXED_AFFINE)
    files.save_volume(paths["moving"], image, MOVING_AFFINE)
    files.save_volume(paths["labels"], labels, MOVING_AFFINE, labels=True)
    files.save_displacement(mapping, paths["warp"], "forward")
    files.save_displacement(mapping, paths["inverse_warp"], "inverse")
    files.save_affine(AffineMap(prealign), paths["affine"])
    files.save_affine(AffineMap(prealign), paths["affine_mat"])
    ours = mapping.transform(image, moving_affine=MOVING_AFFINE)
    our_labels = mapping.transform(labels, "nearest", moving_affine=MOVING_AFFINE)
    return mapping, paths, ours, our_labels


def test_warp_file_follows_the_itk_convention(exported):
    mapping, paths, *_ = exported
    image = nib.load(paths["warp"])
    assert image.shape == (40, 30, 32, 1, 3) and image.get_data_dtype() == np.float32
    assert int(image.header["intent_code"]) == 1007
    np.testing.assert_allclose(image.affine, FIXED_AFFINE, atol=1e-5)
    lps = np.asarray(image.dataobj)[:, :, :, 0, :]
    np.testing.assert_allclose(lps[..., 0], -mapping.forward[..., 0])  # LPS: x, y flip
    np.testing.assert_allclose(lps[..., 1], -mapping.forward[..., 1])
    np.testing.assert_allclose(lps[..., 2], mapping.forward[..., 2])


def test_simpleitk_reproduces_the_warped_image_and_labels(exported):
    sitk = pytest.importorskip("SimpleITK")
    mapping, paths, ours, our_labels = exported
    chain = sitk.CompositeTransform(3)
    chain.AddTransform(sitk.ReadTransform(str(paths["affine"])))  # applied last to points
    field = sitk.ReadImage(str(paths["warp"]), sitk.sitkVectorFloat64)
    chain.AddTransform(sitk.DisplacementFieldTransform(field))  # applied first
    reference = sitk.ReadImage(str(paths["fixed"]))

    def warp(path, interpolator):
        result = sitk.Resample(sitk.ReadImage(str(path)), reference, chain, interpolator, 0)
        return sitk.GetArrayFromImage(result).transpose(2, 1, 0)

    theirs = warp(paths["moving"], sitk.sitkLinear)
    their_labels = warp(paths["labels"], sitk.sitkNearestNeighbor)
    assert correlation(theirs, ours, ours != 0) >= AGREE
    assert np.mean(their_labels == our_labels) >= LABELS_AGREE


def test_antspy_reproduces_forward_and_inverse(exported):
    ants = pytest.importorskip("ants")
    mapping, paths, ours, our_labels = exported
    fixed, moving = ants.image_read(str(paths["fixed"])), ants.image_read(str(paths["moving"]))
    chain = [str(paths["warp"]), str(paths["affine"])]
    theirs = ants.apply_transforms(fixed, moving, chain).numpy()
    their_labels = ants.apply_transforms(
        fixed, ants.image_read(str(paths["labels"])), chain, interpolator="nearestNeighbor"
    ).numpy()
    assert correlation(theirs, ours, ours != 0) >= AGREE
    assert np.mean(their_labels == our_labels) >= LABELS_AGREE
    # The inverse pair brings a fixed-space image to the moving grid (ANTsPy inverts .mat only).
    fixed_image = ants.from_numpy(
        ours.astype(np.float32),
        origin=fixed.origin,
        spacing=fixed.spacing,
        direction=fixed.direction,
    )
    back = ants.apply_transforms(
        moving,
        fixed_image,
        [str(paths["affine_mat"]), str(paths["inverse_warp"])],
        whichtoinvert=[True, False],
    ).numpy()
    our_back = mapping.transform_inverse(ours, fixed_affine=FIXED_AFFINE)
    assert correlation(back, our_back, our_back != 0) >= AGREE


def test_antspy_registration_outputs_load_and_apply_alike(tmp_path):
    ants = pytest.importorskip("ants")
    fixed_data = (100 * blobs((36, 30, 28), seed=7)).astype(np.float32)
    moving_data = np.roll(fixed_data, 2, axis=0) ** 1.1
    for name, data, affine in (
        ("fixed", fixed_data, FIXED_AFFINE),
        ("moving", moving_data, MOVING_AFFINE @ np.diag([1, 0.8, 1.4, 1])),
    ):
        files.save_volume(tmp_path / f"{name}.nii.gz", data, affine)
    fixed, moving = (ants.image_read(str(tmp_path / f"{n}.nii.gz")) for n in ("fixed", "moving"))
    registration = ants.registration(
        fixed,
        moving,
        type_of_transform="SyN",
        reg_iterations=(20, 10),
        outprefix=str(tmp_path / "ants_"),
    )
    chain = registration["fwdtransforms"]
    assert chain[0].endswith(".nii.gz") and chain[1].endswith(".mat")
    theirs = ants.apply_transforms(fixed, moving, chain).numpy()
    ours = apply_transforms(
        files.load_volume(tmp_path / "moving.nii.gz"),
        files.load_volume(tmp_path / "fixed.nii.gz"),
        [files.load_transform(path) for path in chain],
    )
    assert correlation(theirs, ours, ours != 0) >= AGREE
    labels = np.digitize(moving_data, np.percentile(moving_data, [40, 60, 80])) * 7
    files.save_volume(
        tmp_path / "labels.nii.gz",
        labels.astype(np.int16),
        nib.load(tmp_path / "moving.nii.gz").affine,
        labels=True,
    )
    their_labels = ants.apply_transforms(
        fixed,
        ants.image_read(str(tmp_path / "labels.nii.gz")),
        chain,
        interpolator="nearestNeighbor",
    ).numpy()
    our_labels = apply_transforms(
        files.load_volume(tmp_path / "labels.nii.gz", labels=True),
        files.load_volume(tmp_path / "fixed.nii.gz"),
        [files.load_transform(path) for path in chain],
        "nearest",
    )
    assert np.mean(their_labels == our_labels) >= LABELS_AGREE
    inverse_chain = registration["invtransforms"]  # [affine.mat, InverseWarp], affine inverted
    theirs_back = ants.apply_transforms(
        moving, fixed, inverse_chain, whichtoinvert=[True, False]
    ).numpy()
    ours_back = apply_transforms(
        files.load_volume(tmp_path / "fixed.nii.gz"),
        files.load_volume(tmp_path / "moving.nii.gz"),
        [
            files.load_transform(inverse_chain[0], invert=True),
            files.load_transform(inverse_chain[1]),
        ],
    )
    assert correlation(theirs_back, ours_back, ours_back != 0) >= AGREE


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mgz"])
def test_volumes_round_trip_with_their_affine(tmp_path, suffix):
    data = blobs((12, 10, 8), seed=1).astype(np.float32)
    path = tmp_path / f"image{suffix}"
    files.save_volume(path, data, FIXED_AFFINE)
    volume = files.load_volume(path)
    np.testing.assert_allclose(volume.data, data, rtol=1e-6)
    np.testing.assert_allclose(volume.affine, FIXED_AFFINE, atol=1e-5)
    labels = (data > data.mean()).astype(np.int32) * 17
    files.save_volume(path, labels, FIXED_AFFINE, labels=True)
    assert np.array_equal(files.load_volume(path, labels=True).data, labels)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


def test_bad_files_are_named_with_their_problem(tmp_path):
    with pytest.raises(files.InputError, match="missing.nii.gz: no such file"):
        files.load_volume(tmp_path / "missing.nii.gz")
    good = tmp_path / "good.nii.gz"
    files.save_volume(good, blobs((20, 20, 20), seed=2), np.eye(4))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(files.InputError, match="truncated.nii.gz: cannot be read"):
        files.load_volume(truncated)
    several = tmp_path / "several.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 3), np.float32), np.eye(4)), several)
    with pytest.raises(files.InputError, match="several.nii.gz: .*3 volumes, expected one"):
        files.load_volume(several)
    one = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 1), np.float32), np.eye(4)), one)
    assert files.load_volume(one).shape == (4, 4, 4)
    floats = tmp_path / "float_labels.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 2.5, np.float32), np.eye(4)), floats)
    with pytest.raises(files.InputError, match="float_labels.nii.gz: .*non-integer"):
        files.load_volume(floats, labels=True)
    nans = tmp_path / "nan.nii"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), np.nan, np.float32), np.eye(4)), nans)
    with pytest.raises(files.InputError, match="nan.nii: .*NaN"):
        files.load_volume(nans)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(files.InputError, match="notes.txt: unsupported transform type"):
        files.load_transform(text)
    with pytest.raises(files.InputError, match="unsupported format .txt"):
        files.load_volume(text)


@pytest.mark.parametrize("name", ["affine.txt", "affine.mat"])
def test_affine_round_trip_and_inverse(tmp_path, name):
    matrix = np.array([[0.9, 0.1, 0, 3], [-0.1, 1.1, 0.05, -2], [0, 0.02, 1, 5], [0, 0, 0, 1]])
    files.save_affine(AffineMap(matrix), tmp_path / name)
    np.testing.assert_allclose(files.load_transform(tmp_path / name).matrix, matrix, atol=1e-12)
    np.testing.assert_allclose(
        files.load_transform(tmp_path / name, invert=True).matrix, np.linalg.inv(matrix), atol=1e-12
    )


@pytest.mark.parametrize("name", ["affine.txt", "affine.mat"])
def test_2d_affine_is_itks_2d_transform_of_the_slice(tmp_path, name):
    # A 2D registration's matrix: the in-plane map in the lower-right block (world axes of
    # an axial slice: x and y); ITK's 2D transform holds it in LPS (both axes flipped).
    matrix = np.eye(4)
    matrix[1:3, 1:3] = [[0.9, 0.1], [-0.2, 1.1]]
    matrix[1:3, 3] = [3.0, -4.0]
    files.save_affine(AffineMap(matrix), tmp_path / name, ndim=2)
    read = files.load_transform(tmp_path / name)
    assert read.ndim == 2
    np.testing.assert_allclose(read.matrix, matrix, atol=1e-12)
    kind, parameters = files.itk_affine_parameters(matrix, 2)
    assert kind == "AffineTransform_double_2_2"
    np.testing.assert_allclose(parameters, [0.9, 0.1, -0.2, 1.1, -3.0, 4.0])
    with pytest.raises(ValueError, match="out of the plane"):
        files.itk_affine_parameters(np.diag([2.0, 1, 1, 1]), 2)


def test_a_plain_matrix_is_written_as_a_3d_affine(tmp_path):
    files.save_affine(np.eye(4), tmp_path / "identity.txt")
    assert "AffineTransform_double_3_3" in (tmp_path / "identity.txt").read_text()
    assert files.load_transform(tmp_path / "identity.txt").ndim == 3
