"""The SyN loop: energy, diffeomorphism, stopping, regularised updates, checks."""

import sys

import numpy as np
import pytest
from conftest import smooth_field
from testdata import blobs

from napari_mireg import (
    AffineRegistration,
    MutualInformation,
    Snapshot,
    SymmetricDiffeomorphicRegistration,
)
from napari_mireg.engine import affine as affine_module
from napari_mireg.engine import fields as fields_module
from napari_mireg.engine import pyramid as pyramid_module
from napari_mireg.engine import syn as syn_module
from napari_mireg.engine.fields import largest_length, resample
from napari_mireg.engine.partial_volume import PartialVolumeMutualInformation

# The SyN's two metrics behind one interface (`metric.SynMetric`): on these shared grids the
# partial-volume one keeps partial volume on the coarser levels and Parzen on the finest.
METRICS = {
    "parzen": lambda: MutualInformation(32),
    "partial-volume": PartialVolumeMutualInformation,
}


@pytest.fixture(scope="module")
def deformed():
    """A smooth image and a copy deformed by a known smooth field (2 voxels peak)."""
    fixed = blobs((28, 30, 26), seed=5).astype(np.float32)
    field = smooth_field(fixed.shape, 2.0, seed=3).astype(np.float32)
    moving = resample(fixed, np.eye(4), fixed.shape, np.eye(4), field=field, clamp=True)
    return fixed, moving


@pytest.mark.parametrize("histogram", METRICS)
def test_snapshots_lower_the_energy_and_the_map_does_not_fold(deformed, histogram):
    fixed, moving = deformed
    registration = SymmetricDiffeomorphicRegistration(METRICS[histogram](), level_iters=(8, 6))
    snapshots = list(registration.iterate(fixed, moving))
    assert all(isinstance(s, Snapshot) and s.phase == "syn" for s in snapshots)
    assert [s.level for s in snapshots] == sorted(s.level for s in snapshots)
    assert len(snapshots) == len(registration.energies) <= 14
    for level in (0, 1):  # each level's MI rises (the two levels' histograms may differ)
        energies = [s.energy for s in snapshots if s.level == level]
        # Partial volume on a coarse level of one lattice: its first MI, at the lattice's
        # points, is the histogram's sharpest (measured -2.138, then -1.955 ... -2.100).
        first = 1 if histogram == "partial-volume" and level == 0 else 0
        assert energies[-1] < energies[first]
    mapping = registration.mapping
    assert mapping.forward.shape == fixed.shape + (3,)
    assert mapping.jacobian_determinant().min() > 0
    mean_error, _ = mapping.inversion_error()
    assert mean_error < 1e-4  # voxels; measured 1.4e-5
    before = np.abs(moving - fixed).mean()
    # measured: the mismatch falls to 0.30 of what it was
    assert np.abs(mapping.transform(moving) - fixed).mean() < 0.4 * before


@pytest.mark.parametrize("histogram", METRICS)
def test_the_syn_sees_its_metric_only_through_the_interface(deformed, histogram):
    """A metric that passes on only `prepare`, `value_and_gradient` and `value`: same map."""
    fixed, moving = deformed
    metric = METRICS[histogram]()
    calls = []

    class Passed:
        threads = None
        fine_coarse_levels = metric.fine_coarse_levels

        def prepare(self, level, moving_mask, prealign, *, symmetric):
            prepared = metric.prepare(level, moving_mask, prealign, symmetric=symmetric)

            class Level:
                def value_and_gradient(self, half_fixed, half_moving):
                    calls.append(type(prepared).__name__)
                    return prepared.value_and_gradient(half_fixed, half_moving)

                def value(self, half_fixed, half_moving):
                    calls.append("value")
                    return prepared.value(half_fixed, half_moving)

            return Level()

    mappings = []
    for given in (METRICS[histogram](), Passed()):
        registration = SymmetricDiffeomorphicRegistration(given, level_iters=(3, 2))
        mappings.append(registration.optimize(fixed, moving))
    np.testing.assert_array_equal(mappings[0].forward, mappings[1].forward)
    np.testing.assert_array_equal(mappings[0].backward, mappings[1].backward)
    # Both images share one grid, so the finest level is the aligned (Parzen) kind, and so
    # is the coarse one unless the metric samples it twice as fine (partial volume); each
    # level is evaluated once more after its iterations (one that lowered the MI is undone).
    coarse = "PartialVolumeLevel" if histogram == "partial-volume" else "ParzenLevel"
    assert calls == [coarse] * 3 + ["value"] + ["ParzenLevel"] * 2 + ["value"]


def test_closing_the_generator_leaves_no_map(deformed):
    fixed, moving = deformed
    registration = SymmetricDiffeomorphicRegistration(MutualInformation(), level_iters=(5, 5))
    steps = registration.iterate(fixed, moving)
    next(steps)
    steps.close()
    assert registration.mapping is None and len(registration.energies) == 1


def test_reused_buffers_change_nothing_and_are_given_back(monkeypatch):
    # Fields of 5.4 MB, above the size whose blocks are kept. A kernel that relied on
    # fresh (zeroed) memory from np.empty would give another map with reused blocks.
    from contextlib import nullcontext

    from napari_mireg.engine.buffers import kept_bytes

    fixed = blobs((80, 80, 70), seed=2).astype(np.float32)
    field = smooth_field(fixed.shape, 2.0, seed=4).astype(np.float32)
    moving = resample(fixed, np.eye(4), fixed.shape, np.eye(4), field=field, clamp=True)

    def run():
        registration = SymmetricDiffeomorphicRegistration(MutualInformation(32), level_iters=(3,))
        kept_during = []
        for _ in registration.iterate(fixed, moving):
            kept_during.append(kept_bytes())
        return registration.mapping.forward, kept_during

    forward, kept_during = run()
    assert max(kept_during) > 5_000_000  # blocks were held between iterations
    assert kept_bytes() == 0  # and given back at the end
    steps = SymmetricDiffeomorphicRegistration(MutualInformation(32), (3,)).iterate(fixed, moving)
    next(steps)
    steps.close()
    assert kept_bytes() == 0  # a cancelled run too
    monkeypatch.setattr(syn_module, "reused_buffers", nullcontext)
    plain, _ = run()
    np.testing.assert_array_equal(forward, plain)


def test_updates_are_zero_on_the_border_and_scaled_to_the_step():
    update = np.random.default_rng(1).normal(size=(10, 12, 9, 3)).astype(np.float32)
    regularised = syn_module._regularised(update, 1.0, step_mm=0.5)
    assert largest_length(regularised) == pytest.approx(0.5, rel=1e-5)
    for axis in range(3):
        assert not np.take(regularised, [0, -1], axis=axis).any()


def test_a_level_stops_when_the_energy_flattens():
    registration = SymmetricDiffeomorphicRegistration(MutualInformation(), convergence_window=5)
    assert not registration._converged([-1.0, -1.1, -1.2, -1.3, -1.4])
    assert registration._converged([-1.0, -1.0, -1.0, -1.0, -1.0])
    assert not registration._converged([-1.0, -1.0])  # fewer than the window


@pytest.mark.parametrize(
    "settings", [{"level_iters": ()}, {"step_length": 0}, {"update_sigma": -1}]
)
def test_bad_settings_are_refused(settings):
    with pytest.raises(ValueError):
        SymmetricDiffeomorphicRegistration(MutualInformation(), **settings)


def test_constant_images_are_refused_before_any_work(deformed):
    fixed, _ = deformed
    steps = SymmetricDiffeomorphicRegistration(MutualInformation()).iterate(
        fixed, np.ones_like(fixed)
    )
    with pytest.raises(ValueError, match="constant"):
        next(steps)


def record_threads(monkeypatch, kernels, callers):
    """Wrap the `fields` kernels named: each call from a module of `callers` adds (name,
    its `threads`) to the returned list.
    """
    told = []
    for name in kernels:
        kernel = getattr(fields_module, name)

        def recording(*args, _kernel=kernel, _name=name, **kwargs):
            if sys._getframe(1).f_globals["__name__"] in callers:
                told.append((_name, kwargs.get("threads")))
            return _kernel(*args, **kwargs)

        monkeypatch.setattr(fields_module, name, recording)
    return told


@pytest.mark.parametrize("histogram", METRICS)
def test_the_threads_option_reaches_every_field_kernel(deformed, monkeypatch, histogram):
    """`threads` limits the SyN's own work and its pyramid, not only its metric: every
    composition, smoothing, resampling, inversion and det J range of the levels, the live
    frames and the end is told.
    """
    fixed, moving = deformed
    kernels = (
        "compose",
        "smooth",
        "resample",
        "invert",
        "jacobian_determinant_range",
        "largest_length",
    )
    told = record_threads(monkeypatch, kernels, {syn_module.__name__, pyramid_module.__name__})
    metric = MutualInformation(32, threads=1)
    if histogram == "partial-volume":
        metric = PartialVolumeMutualInformation(threads=1)
    registration = SymmetricDiffeomorphicRegistration(metric, level_iters=(2, 2))
    for _ in registration.iterate(fixed, moving, with_images=True):
        pass
    assert {name for name, _ in told} == set(kernels)
    assert [call for call in told if call[1] != 1] == []


def test_the_threads_option_reaches_the_prealignments_kernels(deformed, monkeypatch):
    """The affine stage's pyramid, its moving image's gradient and its resampling are told
    `threads` too.
    """
    fixed, moving = deformed
    kernels = ("smooth", "resample", "image_and_gradient")
    told = record_threads(monkeypatch, kernels, {affine_module.__name__, pyramid_module.__name__})
    AffineRegistration(MutualInformation(32, threads=1), level_iters=(2, 2)).optimize(fixed, moving)
    assert {name for name, _ in told} == set(kernels)
    assert [call for call in told if call[1] != 1] == []
