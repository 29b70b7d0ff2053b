"""What a run will cost, stage by stage, before it starts: for honest progress and times.

Each stage's work is counted in units: one unit is the work of one voxel of the level grid
in one iteration of the symmetric SyN with the partial-volume histogram. Other stages are
weighted by their own cost per voxel against that one (the constants below, measured on
this project's 2-core machine with the MNI pair of ``tests/testdata.py`` at 2 mm and 1 mm:
the smallest time over several iterations of each kind, as the cores were shared with
other work). :func:`expected_seconds` turns units into seconds.

The plan is a prediction: a level that converges early stops before its iterations are
used up, and the SyN's grid is the box around the anatomy (:data:`TYPICAL_BOX_SHARE` of
the fixed grid unless the caller knows it).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from napari_mireg.engine.masks import extraction_sides
from napari_mireg.engine.pyramid import level_grid
from napari_mireg.options import RegistrationOptions

# Seconds per unit on the measuring machine: the smallest time of a symmetric
# partial-volume SyN iteration per voxel was 0.36-0.39 us (2 mm and 1 mm, every core busy
# with other work too); rounded up so that the times said are rarely beaten by the run.
SECONDS_PER_UNIT = 450e-9
# Units per voxel of a SyN iteration, by (symmetric, histogram): the non-symmetric mode
# computes one gradient and moves one map (0.10-0.19 us a voxel at the finer levels); the
# Parzen histogram costs about as much as partial volume.
SYN_UNITS_PER_VOXEL = {
    (True, "partial-volume"): 1.0,
    (True, "parzen"): 0.95,
    (False, "partial-volume"): 0.4,
    (False, "parzen"): 0.4,
}
# A level's start (smoothing and resampling both images onto its grid, the metric's
# tables) costs about one of its iterations (1 mm finest level: 4.3 s first, 2.1 s next).
LEVEL_SETUP_ITERATIONS = 1.0
# The SyN's fields live on the box of the fixed grid around both anatomies: 0.63 (2 mm)
# and 0.66 (1 mm) of the MNI template's grid.
TYPICAL_BOX_SHARE = 0.65
# Units per sampled voxel of a prealignment iteration (0.06-0.14 us a voxel of its level
# grid), and the iterations its levels take on real pairs (up to 100 and 50 are allowed;
# the MNI pairs stopped after 20-29 at shrink 4 and 12-16 at shrink 2), as
# (shrink, iterations) for each method. A level's start counts as two iterations.
PREALIGNMENT_UNITS_PER_VOXEL = 0.35
PREALIGNMENT_LEVELS = {
    "affine": ((4, 30), (2, 15)),  # rigid then affine at shrink 4, affine at shrink 2
    "rigid": ((4, 20), (2, 15)),
    "none": (),
}
PREALIGNMENT_SETUP_ITERATIONS = 2.0
# After the last iteration, per voxel of the fixed grid: the inverse maps and the warped
# image (0.75-0.97 us symmetric, two inversions; 0.35 us non-symmetric, one), then the
# scores of a widget or command-line run (det J, displacement, overlap: 1.0-1.6 us).
INVERSION_UNITS_PER_VOXEL = {True: 2.2, False: 1.0}
SCORING_UNITS_PER_VOXEL = 3.0
# ROBEX works in its own 1 mm atlas space: about a minute a side whatever the voxel size
# (50 s at 2 mm, 60-66 s at 1 mm on 2 cores).
BRAIN_EXTRACTION_SECONDS = 60.0


@dataclass(frozen=True)
class StageCost:
    """One stage of a run and the work it is expected to take.

    Attributes
    ----------
    phase : {"brain extraction", "prealignment", "syn", "inversion", "scoring"}
        As the engine's steps name their phase ("inversion": the end of the SyN, after
        its last iteration; "scoring": det J and the overlap scores of a finished run).
    units : float
        Expected work (see the module's description); 0 for a stage that does nothing.
    level : int
        The SyN level (0 coarsest), -1 for the other stages.
    iterations : int
        The SyN level's planned iterations (0 for the other stages).
    side : str
        "fixed" or "moving" for a brain extraction, else "".
    """

    phase: str
    units: float
    level: int = -1
    iterations: int = 0
    side: str = ""


def syn_level_voxels(shape: Sequence[int], level: int, levels: int) -> int:
    """Voxels of the SyN's level grid `level` of `levels` (0 coarsest) over a grid `shape`.

    Parameters
    ----------
    shape : sequence of int
        The SyN's grid (the box around the anatomy), 3D (2D images have a singleton axis).
    level, levels : int

    Returns
    -------
    int
    """
    shrink = 2 ** (levels - 1 - level)
    coarse, _ = level_grid(tuple(shape), np.eye(4), shrink)
    return int(np.prod(coarse))


def syn_level_units(
    voxels: float, iterations: int, symmetric: bool = True, histogram: str = "partial-volume"
) -> float:
    """Units of one SyN level: its iterations and its start, on `voxels` voxels.

    Parameters
    ----------
    voxels : float
        Voxels of the level grid.
    iterations : int
        Planned iterations (0: the level is skipped and costs nothing).
    symmetric : bool
    histogram : {"partial-volume", "parzen"}

    Returns
    -------
    float
    """
    if iterations <= 0:
        return 0.0
    per_voxel = SYN_UNITS_PER_VOXEL[(bool(symmetric), histogram)]
    return float(voxels) * (iterations + LEVEL_SETUP_ITERATIONS) * per_voxel


def prealignment_units(shape: Sequence[int], prealign: str = "affine") -> float:
    """Units of an MI prealignment on a fixed grid of `shape` (0 for "none").

    Parameters
    ----------
    shape : sequence of int
        The fixed grid.
    prealign : {"affine", "rigid", "none"}

    Returns
    -------
    float
    """
    units = 0.0
    for shrink, iterations in PREALIGNMENT_LEVELS[prealign]:
        coarse, _ = level_grid(tuple(shape), np.eye(4), shrink)
        voxels = float(np.prod(coarse))
        units += voxels * (iterations + PREALIGNMENT_SETUP_ITERATIONS)
    return units * PREALIGNMENT_UNITS_PER_VOXEL


def run_costs(
    options: RegistrationOptions,
    fixed_shape: Sequence[int],
    *,
    syn_shape: Sequence[int] | None = None,
    extracted: Iterable[str] | None = None,
    continued: bool = False,
    scoring: bool = True,
) -> list[StageCost]:
    """The stages of a run, in the order they run, with their expected work.

    Parameters
    ----------
    options : RegistrationOptions
    fixed_shape : sequence of int
        The fixed image's grid (3D; 2D images have a singleton axis).
    syn_shape : sequence of int, optional
        The SyN's grid, when known; else :data:`TYPICAL_BOX_SHARE` of the fixed grid.
    extracted : iterable of str, optional
        The sides ROBEX will mask ("fixed", "moving"); by default those that
        ``options.brain_extraction`` names (a side with a mask or labels is not extracted:
        leave it out).
    continued : bool
        The run continues an earlier map: it has no prealignment.
    scoring : bool
        Count the scores made after the run (det J, overlap), as the widget and
        ``mireg register`` make them.

    Returns
    -------
    list of StageCost
        Brain extractions, the prealignment, each SyN level (coarsest first), the
        inversion and the scoring; a stage that does nothing is there with 0 units.
    """
    options = RegistrationOptions.build(options)
    fixed_voxels = float(np.prod(fixed_shape))
    if extracted is None:
        fixed_side, moving_side = extraction_sides(options.brain_extraction)
        extracted = [side for side, on in (("fixed", fixed_side), ("moving", moving_side)) if on]
    robex_units = BRAIN_EXTRACTION_SECONDS / SECONDS_PER_UNIT
    stages = [StageCost("brain extraction", robex_units, side=side) for side in extracted]
    prealign = "none" if continued else options.prealign
    stages.append(StageCost("prealignment", prealignment_units(fixed_shape, prealign)))
    share = 1.0 if syn_shape is not None else TYPICAL_BOX_SHARE
    grid = fixed_shape if syn_shape is None else syn_shape
    levels = len(options.level_iters)
    for level, iterations in enumerate(options.level_iters):
        voxels = syn_level_voxels(grid, level, levels) * share
        units = syn_level_units(voxels, iterations, options.symmetric, options.histogram)
        stages.append(StageCost("syn", units, level=level, iterations=iterations))
    inversion = INVERSION_UNITS_PER_VOXEL[bool(options.symmetric)]
    stages.append(StageCost("inversion", fixed_voxels * inversion))
    stages.append(StageCost("scoring", fixed_voxels * SCORING_UNITS_PER_VOXEL if scoring else 0))
    return stages


def expected_seconds(stages: "Iterable[StageCost] | float") -> float:
    """Seconds the stages (or a number of units) are expected to take on 2 busy cores.

    Parameters
    ----------
    stages : iterable of StageCost, or float
        A run's stages (:func:`run_costs`), or units.

    Returns
    -------
    float
    """
    if isinstance(stages, int | float):
        return float(stages) * SECONDS_PER_UNIT
    return sum(stage.units for stage in stages) * SECONDS_PER_UNIT
