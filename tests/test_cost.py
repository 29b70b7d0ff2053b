"""The cost model of a run: relative work of each stage and the expected seconds."""

import pytest

from napari_mireg.engine import cost
from napari_mireg.options import RegistrationOptions

MNI_1MM = (197, 233, 189)  # the MNI template's 1 mm grid
MNI_2MM = (99, 117, 95)


def _syn(stages):
    return [stage for stage in stages if stage.phase == "syn"]


def test_the_finest_level_of_a_1mm_run_dominates():
    stages = cost.run_costs(RegistrationOptions(), MNI_1MM)
    finest = _syn(stages)[-1]
    total = sum(stage.units for stage in stages)
    before_finest = sum(stage.units for stage in stages[: stages.index(finest)])
    assert finest.level == 2 and finest.iterations == 10
    # Most of the SyN's work, and more than all the stages before it together.
    assert finest.units > 0.75 * sum(stage.units for stage in _syn(stages))
    assert finest.units > before_finest
    assert before_finest / total < 0.5
    assert [stage.phase for stage in stages] == [
        "prealignment",
        "syn",
        "syn",
        "syn",
        "inversion",
        "scoring",
    ]


def test_halving_the_voxels_halves_a_levels_units():
    whole = cost.syn_level_units(1_000_000, 10)
    assert cost.syn_level_units(500_000, 10) == pytest.approx(whole / 2)
    # The level grid of a grid twice as long on one axis has twice the voxels.
    assert cost.syn_level_voxels((64, 64, 128), 1, 3) == 2 * cost.syn_level_voxels(
        (64, 64, 64), 1, 3
    )
    assert cost.syn_level_voxels((64, 64, 64), 1, 3) == 32**3
    assert cost.syn_level_voxels((64, 64, 64), 0, 3) == 16**3


def test_zero_iterations_cost_nothing():
    assert cost.syn_level_units(1_000_000, 0) == 0.0
    stages = cost.run_costs(RegistrationOptions(level_iters=(0, 20, 0)), MNI_2MM)
    assert [stage.units > 0 for stage in _syn(stages)] == [False, True, False]
    affine_only = cost.run_costs(
        RegistrationOptions(level_iters=(0, 0)), MNI_2MM, continued=True, scoring=False
    )
    assert sum(stage.units for stage in affine_only if stage.phase != "inversion") == 0.0


def test_a_level_costs_in_proportion_to_its_iterations_and_the_mode():
    symmetric = cost.syn_level_units(1e6, 19)
    assert cost.syn_level_units(1e6, 39) == pytest.approx(2 * symmetric)
    one_map = cost.syn_level_units(1e6, 19, symmetric=False)
    assert one_map == pytest.approx(0.4 * symmetric)
    assert cost.syn_level_units(1e6, 19, histogram="parzen") == pytest.approx(0.95 * symmetric)


def test_brain_extraction_and_prealignment_stages_follow_the_options():
    plain = cost.run_costs(RegistrationOptions(), MNI_2MM)
    both = cost.run_costs(RegistrationOptions(brain_extraction="both"), MNI_2MM)
    extractions = [stage for stage in both if stage.phase == "brain extraction"]
    assert [stage.side for stage in extractions] == ["fixed", "moving"]
    # A minute a side, whatever the grid.
    assert cost.expected_seconds(extractions) == pytest.approx(120.0)
    assert cost.expected_seconds(both) == pytest.approx(cost.expected_seconds(plain) + 120.0)
    # A side given labels is left out by the caller.
    options = RegistrationOptions(brain_extraction="both")
    one = cost.run_costs(options, MNI_2MM, extracted=["moving"])
    assert [stage.side for stage in one if stage.phase == "brain extraction"] == ["moving"]
    # Rigid is cheaper than affine; none and a continued run have no prealignment.
    units = {
        prealign: cost.run_costs(RegistrationOptions(prealign=prealign), MNI_2MM)[0].units
        for prealign in ("affine", "rigid", "none")
    }
    assert units["affine"] > units["rigid"] > units["none"] == 0.0
    assert cost.run_costs(RegistrationOptions(), MNI_2MM, continued=True)[0].units == 0.0


def test_a_known_syn_grid_replaces_the_typical_box():
    options = RegistrationOptions()
    typical = _syn(cost.run_costs(options, MNI_2MM))[-1].units
    whole = _syn(cost.run_costs(options, MNI_2MM, syn_shape=MNI_2MM))[-1].units
    assert typical == pytest.approx(cost.TYPICAL_BOX_SHARE * whole)


def test_expected_seconds_of_the_default_runs():
    two = cost.expected_seconds(cost.run_costs(RegistrationOptions(), MNI_2MM))
    one = cost.expected_seconds(cost.run_costs(RegistrationOptions(), MNI_1MM))
    # The 1 mm grid has 8 times the voxels: the same work per voxel, 8 times the time.
    assert one == pytest.approx(8 * two, rel=0.05)
    # Measured on 2 busy cores: 2 mm runs took 3-6 s, 1 mm runs 35-60 s with the scores.
    assert 3.0 < two < 10.0 and 30.0 < one < 80.0
    assert cost.expected_seconds(1e6) == pytest.approx(1e6 * cost.SECONDS_PER_UNIT)
