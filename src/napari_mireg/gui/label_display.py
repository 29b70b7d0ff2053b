"""Which label outlines the canvas shows, and in which colours.

With a real parcellation (SynthSeg with cortical parcels: 90+ labels) every outline at once
is a mosaic that hides the anatomy, so the outlines shown are chosen: none ("off"), the
label picked in the results table ("selected"), the labels of lowest Dice ("worst"; during
a run, before there is a Dice, the lateral ventricles and the hippocampi), or all of them
("all", the default only for a few labels). The fixed labels are outlined in pure
green and the warped moving labels in pure magenta, whatever the label: no FreeSurfer or
SynthSeg LUT colour is within 100 (RGB, summed) of either, so an outline never reads as a
label's own colour. No Qt here.
"""

import numpy as np

LABEL_DISPLAYS = ("off", "selected", "worst", "all")
# Above this many labels the default display is the worst labels, not all of them.
MANY_LABELS = 20
WORST_COUNT = 5  # default number of worst labels shown
# Until a run has its Dice, "worst" outlines the lateral ventricles and the hippocampi
# (FreeSurfer/SynthSeg ids): edges a registration is judged by at a glance, which stay
# readable when cortical parcels surround the white matter (its outline is then a mosaic).
LIVE_LABELS = (4, 43, 17, 53)
# Labels smaller than this (fixed voxels) are not ranked as the worst: the Dice of a few
# voxels is noise (a 2-voxel third ventricle at 2 mm).
MIN_RANKED_VOXELS = 30
FIXED_OUTLINE = (0, 255, 0)  # pure green
WARPED_OUTLINE = (255, 0, 255)  # pure magenta
_CLEAR = (0.0, 0.0, 0.0, 0.0)


def default_display(label_count):
    """The label display for a map of `label_count` labels (background not counted)."""
    return "all" if label_count <= MANY_LABELS else "worst"


def count_labels(data, sample=4):
    """Number of labels (non-zero values) of a label map, from every `sample`-th voxel
    along each axis (a label too small to be sampled is not worth the time at Run).
    """
    data = np.asarray(data)
    values = np.unique(data[tuple(slice(None, None, sample) for _ in data.shape)])
    return int(np.count_nonzero(values))


def worst_labels(dice, count):
    """The `count` labels of lowest Dice, worst first.

    Parameters
    ----------
    dice : dict of int to float
        The labels to rank (see `ranked_dice`) and their Dice.
    count : int
    """
    return [label for label, _ in sorted(dice.items(), key=lambda item: item[1])[:count]]


def ranked_dice(rows):
    """{label: Dice} of the rows of an OverlapTable whose label has at least
    `MIN_RANKED_VOXELS` fixed voxels: the labels "worst" ranks.
    """
    return {
        int(row["label"]): row["dice"] for row in rows if row["fixed_voxels"] >= MIN_RANKED_VOXELS
    }


def outline_colormap(colour, shown=None):
    """A napari Labels colormap drawing `shown` labels (every label if None) in `colour`
    (RGB 0-255) and the others clear.
    """
    rgba = tuple(c / 255.0 for c in colour) + (1.0,)
    colours = {None: rgba if shown is None else _CLEAR, 0: _CLEAR}
    for label in shown or ():
        colours[int(label)] = rgba
    return colours


def shown_labels(display, selected=None, dice=None, count=WORST_COUNT):
    """The labels a display shows: None for every label, else a list (maybe empty).

    Parameters
    ----------
    display : {"off", "selected", "worst", "all"}
    selected : int, optional
        The label picked in the results table.
    dice : dict of int to float, optional
        Dice per label of the last run; without it "worst" shows `LIVE_LABELS`.
    count : int
        How many worst labels.
    """
    if display not in LABEL_DISPLAYS:
        raise ValueError(f"label display must be one of {LABEL_DISPLAYS}, got {display!r}")
    if display == "all":
        return None
    if display == "selected":
        return [] if selected is None else [int(selected)]
    if display == "worst":
        return list(LIVE_LABELS) if not dice else worst_labels(dice, count)
    return []
