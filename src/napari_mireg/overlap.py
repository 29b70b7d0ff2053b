"""Dice and Jaccard overlap of two label maps, per label, over the whole brain and on average.

Conventions
-----------
- Label 0 is background: it is never scored; "whole brain" compares ``labels > 0``.
- By default the scored labels are those present (non-zero) in either map. A label present
  on one side only scores Dice = Jaccard = 0 and counts in the mean. A label the caller
  asks for that is absent from both maps scores NaN and is left out of the mean.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from napari_mireg.labels import label_name, label_values

COLUMNS = ("label", "name", "dice", "jaccard", "fixed_voxels", "warped_voxels")


@dataclass
class OverlapTable:
    """Overlap scores of a registration.

    Attributes
    ----------
    rows : list of dict
        One per label, keys `COLUMNS`.
    whole_dice, whole_jaccard : float
        Scores of the brain masks (all non-zero labels).
    mean_dice, mean_jaccard : float
        Means over the rows (NaN rows left out).
    """

    rows: list = field(default_factory=list)
    whole_dice: float = float("nan")
    whole_jaccard: float = float("nan")
    mean_dice: float = float("nan")
    mean_jaccard: float = float("nan")

    def summary(self) -> dict[str, float]:
        """The four summary figures as a dict."""
        return {
            "whole_dice": self.whole_dice,
            "whole_jaccard": self.whole_jaccard,
            "mean_dice": self.mean_dice,
            "mean_jaccard": self.mean_jaccard,
        }

    def to_csv_text(self) -> str:
        """The table as CSV text (header `COLUMNS`), scores with 6 decimals."""
        lines = [",".join(COLUMNS)]
        for row in self.rows:
            lines.append(
                f"{row['label']},{row['name']},{row['dice']:.6f},{row['jaccard']:.6f},"
                f"{row['fixed_voxels']},{row['warped_voxels']}"
            )
        return "\n".join(lines) + "\n"


def _dice_jaccard(intersection, first, second):
    """Dice and Jaccard from counts (arrays or scalars); NaN where both sets are empty."""
    intersection = np.asarray(intersection, dtype=np.float64)
    total = np.asarray(first, dtype=np.float64) + np.asarray(second, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(total > 0, 2.0 * intersection / total, np.nan)
        jaccard = np.where(total > 0, intersection / (total - intersection), np.nan)
    return dice, jaccard


def _compact(fixed, warped, wanted):
    """Label indices for bincount, and the label value of each index.

    Label values serve as indices directly when they are small (no sorting, one pass);
    very large values are mapped to compact indices through the sorted label set.
    """
    largest = max(
        int(fixed.max(initial=0)),
        int(warped.max(initial=0)),
        int(wanted.max(initial=0)) if wanted is not None else 0,
    )
    if largest < 1 << 20:
        return fixed, warped, np.arange(largest + 1)
    universe = np.union1d(
        np.union1d(np.unique(fixed), np.unique(warped)), [] if wanted is None else wanted
    ).astype(np.int64)
    return np.searchsorted(universe, fixed), np.searchsorted(universe, warped), universe


def overlap_scores(
    fixed_labels: npt.ArrayLike,
    warped_labels: npt.ArrayLike,
    labels: Iterable[int] | None = None,
) -> OverlapTable:
    """Dice and Jaccard per label between two label maps on one grid.

    One pass over the voxels: per-label counts come from ``np.bincount`` over the label
    values (or over compact indices when the label values are very large).

    Parameters
    ----------
    fixed_labels, warped_labels : ndarray of int, same shape
        The fixed image's labels and the moving labels warped into fixed space.
    labels : sequence of int, optional
        Labels to score (default: every non-zero label present in either map).

    Returns
    -------
    OverlapTable
    """
    if np.shape(fixed_labels) != np.shape(warped_labels):
        raise ValueError(
            f"label maps must have one shape, got {np.shape(fixed_labels)} and "
            f"{np.shape(warped_labels)}"
        )
    fixed = label_values(fixed_labels, "fixed labels").ravel()
    warped = label_values(warped_labels, "warped labels").ravel()
    wanted = None if labels is None else np.unique(np.asarray(labels, dtype=np.int64))
    fixed_index, warped_index, universe = _compact(fixed, warped, wanted)
    size = universe.size
    fixed_counts = np.bincount(fixed_index, minlength=size)
    warped_counts = np.bincount(warped_index, minlength=size)
    intersections = np.bincount(fixed_index[fixed_index == warped_index], minlength=size)
    if wanted is None:
        wanted = universe[(fixed_counts + warped_counts) > 0]
    wanted = wanted[wanted != 0]
    position = np.searchsorted(universe, wanted)
    dice, jaccard = _dice_jaccard(
        intersections[position], fixed_counts[position], warped_counts[position]
    )
    rows = [
        {
            "label": int(label),
            "name": label_name(label),
            "dice": float(d),
            "jaccard": float(j),
            "fixed_voxels": int(fixed_counts[p]),
            "warped_voxels": int(warped_counts[p]),
        }
        for label, p, d, j in zip(wanted, position, dice, jaccard, strict=True)
    ]
    # Labels are >= 0, so index 0 is the background whenever the background occurs.
    has_background = universe[0] == 0
    fixed_background = fixed_counts[0] if has_background else 0
    warped_background = warped_counts[0] if has_background else 0
    both_background = intersections[0] if has_background else 0
    fixed_brain, warped_brain = fixed.size - fixed_background, warped.size - warped_background
    shared = fixed.size - fixed_background - warped_background + both_background
    whole_dice, whole_jaccard = _dice_jaccard(shared, fixed_brain, warped_brain)
    scored = ~np.isnan(dice)
    return OverlapTable(
        rows,
        float(whole_dice),
        float(whole_jaccard),
        float(dice[scored].mean()) if scored.any() else float("nan"),
        float(jaccard[scored].mean()) if scored.any() else float("nan"),
    )
