"""Shared test data: small images made here, and the MNI template that nilearn ships."""

import numpy as np
import pytest
import testdata
from scipy import ndimage
from testdata import blobs, deformed_pair, write_sample_data  # noqa: F401 (blobs: for tests)


def smooth_field(shape, peak, seed, sigma=4.0):
    """A random smooth vector field whose largest component is `peak`, zero on the border.

    The outermost voxel layer is zero, as in SyN's updates: there the one-sided image
    gradient and resampling with edge clamping differ by design.
    """
    rng = np.random.default_rng(seed)
    field = np.stack(
        [ndimage.gaussian_filter(rng.standard_normal(shape), sigma) for _ in shape], axis=-1
    )
    inner = np.zeros(shape, bool)
    inner[(slice(1, -1),) * len(shape)] = True
    field[~inner] = 0
    return field * (peak / np.abs(field).max())


@pytest.fixture(scope="session")
def blob_pair():
    """Smooth 3D images: moving is a non-monotonic remap of a shifted copy of fixed."""
    fixed = blobs((36, 40, 44), seed=1)
    shifted = ndimage.shift(fixed, (1.5, -1.0, 2.0), order=3, mode="nearest")
    moving = np.sin(3.0 * shifted) + 0.3 * shifted
    return fixed, moving


@pytest.fixture(scope="session")
def brain_pair():
    """2 mm MNI T1 template and a smoothly deformed (6 mm peak), T2-like copy."""
    fixed, moving, affine, _ = deformed_pair(zoom=2, peak=6.0, seed=0)
    return fixed, moving, affine


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The sample pair's files at 4 mm (images and label maps), for whole `mireg` jobs."""
    return write_sample_data(tmp_path_factory.mktemp("pair"), zoom=4)


@pytest.fixture
def viewer_with_pair(make_napari_viewer):
    """A napari viewer (not shown) holding the sample pair."""
    return testdata.add_sample_layers(make_napari_viewer())
