"""How good a registration is: the map's regularity and, with label maps, their overlap.

One evaluation for every front end: the widget's end-of-run summary, the report of
`mireg register` and, through it, the cohort runner's tables all come from
:func:`evaluate`.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from napari_mireg._typing import Image
from napari_mireg.engine.registration import Result
from napari_mireg.engine.transforms import AffineMap, DiffeomorphicMap, Volume
from napari_mireg.overlap import OverlapTable, overlap_scores


@dataclass
class Quality:
    """The figures that judge a registration.

    Attributes
    ----------
    jacobian_determinant : ndarray of float32
        det J of the map on the fixed grid, the prealignment aside (1: volume kept; <= 0:
        a fold). Single precision, as shown; the figures below come from double.
    jacobian_range : tuple of float
        Smallest and largest det J.
    folds : int
        Voxels with det J <= 0.
    inverse_consistency : tuple of float or None
        Mean and largest ``|phi(phi^-1(x)) - x|`` over the fixed grid, in voxels (None
        unless asked for).
    warped_labels : ndarray or None
        The moving labels on the fixed grid (nearest neighbour).
    overlap : OverlapTable or None
        Per-label Dice and Jaccard of the fixed labels against the warped labels.
    overlap_affine : OverlapTable or None
        The same against the moving labels moved by the prealignment alone (nearest
        neighbour), the score before SyN, over the labels of `overlap` so that each label's
        gain and the means compare the same labels.
    overlap_before : OverlapTable or None
        The same against the moving labels as they lie (same world coordinates, no
        transform), the score before registration.
    """

    jacobian_determinant: npt.NDArray[np.float32]
    jacobian_range: tuple[float, float]
    folds: int
    inverse_consistency: tuple[float, float] | None = None
    warped_labels: np.ndarray | None = None
    overlap: OverlapTable | None = None
    overlap_affine: OverlapTable | None = None
    overlap_before: OverlapTable | None = None


def evaluate(
    result: Result | DiffeomorphicMap,
    fixed_labels: npt.ArrayLike | None = None,
    moving_labels: "Image | Volume | None" = None,
    *,
    inverse_consistency: bool = False,
) -> Quality:
    """Score a registration: det J and folds, and with labels the overlap before it, after
    the prealignment alone and after the whole map.

    Parameters
    ----------
    result : Result or DiffeomorphicMap
        The registration (its full fixed-to-moving map).
    fixed_labels : ndarray, optional
        Labels on the fixed grid, in the shape of the fixed image as given (the warped
        image's shape). The overlap needs both sides.
    moving_labels : Volume or nibabel image, optional
        Labels of the moving space on any grid; warped into fixed space by nearest
        neighbour.
    inverse_consistency : bool
        Also measure how well the inverse map undoes the forward one (one composition of
        two fields on the fixed grid).

    Returns
    -------
    Quality

    Raises
    ------
    ValueError
        `fixed_labels` is not in the shape of the fixed grid, or a label map holds
        non-integer values.
    """
    mapping = result.mapping if isinstance(result, Result) else result
    determinant = mapping.jacobian_determinant()
    quality = Quality(
        determinant.astype(np.float32),
        (float(determinant.min()), float(determinant.max())),
        int(np.count_nonzero(determinant <= 0)),
    )
    del determinant  # a float64 copy of the grid, not kept
    if inverse_consistency:
        quality.inverse_consistency = mapping.inversion_error()
    if moving_labels is None:
        return quality
    quality.warped_labels = mapping.transform(moving_labels, interpolation="nearest")
    if fixed_labels is not None:
        quality.overlap = overlap_scores(fixed_labels, quality.warped_labels)
        scored = [row["label"] for row in quality.overlap.rows]
        prealigned = AffineMap(mapping.prealign).transform(
            moving_labels, mapping.fixed_grid, interpolation="nearest"
        )
        quality.overlap_affine = overlap_scores(fixed_labels, prealigned, scored)
        as_they_lie = AffineMap(np.eye(4)).transform(
            moving_labels, mapping.fixed_grid, interpolation="nearest"
        )
        quality.overlap_before = overlap_scores(fixed_labels, as_they_lie)
    return quality
