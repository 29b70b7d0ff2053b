"""How much memory the SyN holds at once, counted in displacement fields of its box.

numpy reports its arrays to tracemalloc (the blocks kept for reuse count as freed), so the
traced peak of a small registration is its live set: a field more alive at once at 1 mm
is 70-100 MB.
"""

import tracemalloc

import numpy as np
import pytest
import testdata

from napari_mireg.engine import fields
from napari_mireg.engine.partial_volume import PartialVolumeMutualInformation
from napari_mireg.engine.pyramid import registration_box
from napari_mireg.engine.syn import SymmetricDiffeomorphicRegistration
from napari_mireg.engine.transforms import as_volume


def _traced_peak(call):
    """Bytes traced at the peak of `call()` above what was traced before it, and its result."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        return tracemalloc.get_traced_memory()[1] - before, result
    finally:
        tracemalloc.stop()


def test_smoothing_that_may_overwrite_its_input_makes_one_array_and_the_same_values():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(40, 36, 32, 3)).astype(np.float32)
    expected = fields.smooth(volume, 1.2)
    scratch = volume.copy()
    peak, smoothed = _traced_peak(lambda: fields.smooth(scratch, 1.2, overwrite_input=True))
    np.testing.assert_array_equal(smoothed, expected)
    assert peak < 1.1 * volume.nbytes  # two buffers without overwrite_input


@pytest.mark.parametrize(("symmetric", "fields_at_once"), [(True, 8.5), (False, 6.5)])
def test_the_syn_holds_few_fields_at_once(symmetric, fields_at_once):
    # Grids rotated by 6 degrees: the partial-volume histogram at every level, as on real
    # pairs. Symmetric, the step holds both half-maps, both updates, a new half-map and the
    # two buffers of its smoothing: 7 fields, and the levels' images about one more.
    pair = testdata.sample_pair(zoom=3)
    fixed = as_volume(pair["fixed"], pair["fixed_affine"])
    moving = as_volume(pair["moving"], pair["moving_affine"])
    box = registration_box(fixed, moving, np.eye(4))
    field_bytes = 12 * np.prod([piece.stop - piece.start for piece in box])
    registration = SymmetricDiffeomorphicRegistration(
        PartialVolumeMutualInformation(threads=1),
        level_iters=(3, 3, 3),
        field_sigma=0.707,
        symmetric=symmetric,
    )
    peak, mapping = _traced_peak(lambda: registration.optimize(fixed, moving))
    assert mapping.forward.shape == fixed.shape + (3,)
    assert peak / field_bytes < fields_at_once
