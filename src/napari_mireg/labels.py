"""SynthSeg label maps: the FreeSurfer label table, and cleanup of holes and islands.

SynthSeg 2.0 writes FreeSurfer label IDs (SynthSeg 1.0 the same without 24, CSF); with
``--parc`` the cortex labels 3/42 give way to the Desikan-Killiany parcels 1001-1035 and
2001-2035 (no 1004/2004). Names and colours are those of FreeSurferColorLUT.txt.
"""

from dataclasses import dataclass
from typing import SupportsInt

import numpy as np
import numpy.typing as npt
from scipy import ndimage

_BILATERAL = [
    # (left id, right id, name without the side, colour)
    (2, 41, "Cerebral-White-Matter", (245, 245, 245)),
    (3, 42, "Cerebral-Cortex", (205, 62, 78)),
    (4, 43, "Lateral-Ventricle", (120, 18, 134)),
    (5, 44, "Inf-Lat-Vent", (196, 58, 250)),
    (7, 46, "Cerebellum-White-Matter", (220, 248, 164)),
    (8, 47, "Cerebellum-Cortex", (230, 148, 34)),
    (10, 49, "Thalamus", (0, 118, 14)),
    (11, 50, "Caudate", (122, 186, 220)),
    (12, 51, "Putamen", (236, 13, 176)),
    (13, 52, "Pallidum", (12, 48, 255)),
    (17, 53, "Hippocampus", (220, 216, 20)),
    (18, 54, "Amygdala", (103, 255, 255)),
    (26, 58, "Accumbens-area", (255, 165, 0)),
    (28, 60, "VentralDC", (165, 42, 42)),
]
_MIDLINE = [
    (14, "3rd-Ventricle", (204, 182, 142)),
    (15, "4th-Ventricle", (42, 204, 164)),
    (16, "Brain-Stem", (119, 159, 176)),
    (24, "CSF", (60, 60, 60)),
]
_PARCELS = [
    # Desikan-Killiany parcel number, name, colour (both hemispheres share the colour)
    (1, "bankssts", (25, 100, 40)),
    (2, "caudalanteriorcingulate", (125, 100, 160)),
    (3, "caudalmiddlefrontal", (100, 25, 0)),
    (5, "cuneus", (220, 20, 100)),
    (6, "entorhinal", (220, 20, 10)),
    (7, "fusiform", (180, 220, 140)),
    (8, "inferiorparietal", (220, 60, 220)),
    (9, "inferiortemporal", (180, 40, 120)),
    (10, "isthmuscingulate", (140, 20, 140)),
    (11, "lateraloccipital", (20, 30, 140)),
    (12, "lateralorbitofrontal", (35, 75, 50)),
    (13, "lingual", (225, 140, 140)),
    (14, "medialorbitofrontal", (200, 35, 75)),
    (15, "middletemporal", (160, 100, 50)),
    (16, "parahippocampal", (20, 220, 60)),
    (17, "paracentral", (60, 220, 60)),
    (18, "parsopercularis", (220, 180, 140)),
    (19, "parsorbitalis", (20, 100, 50)),
    (20, "parstriangularis", (220, 60, 20)),
    (21, "pericalcarine", (120, 100, 60)),
    (22, "postcentral", (220, 20, 20)),
    (23, "posteriorcingulate", (220, 180, 220)),
    (24, "precentral", (60, 20, 220)),
    (25, "precuneus", (160, 140, 180)),
    (26, "rostralanteriorcingulate", (80, 20, 140)),
    (27, "rostralmiddlefrontal", (75, 50, 125)),
    (28, "superiorfrontal", (20, 220, 160)),
    (29, "superiorparietal", (20, 180, 140)),
    (30, "superiortemporal", (140, 220, 220)),
    (31, "supramarginal", (80, 160, 20)),
    (32, "frontalpole", (100, 0, 100)),
    (33, "temporalpole", (70, 70, 70)),
    (34, "transversetemporal", (150, 150, 200)),
    (35, "insula", (255, 192, 32)),
]


def _table():
    names = {0: "Unknown"}
    colours = {0: (0, 0, 0)}
    for left, right, name, colour in _BILATERAL:
        names[left], names[right] = f"Left-{name}", f"Right-{name}"
        colours[left] = colours[right] = colour
    colours[52] = (13, 48, 255)  # the LUT gives the right pallidum a slightly different blue
    for label, name, colour in _MIDLINE:
        names[label], colours[label] = name, colour
    for number, name, colour in _PARCELS:
        for base, side in ((1000, "lh"), (2000, "rh")):
            names[base + number] = f"ctx-{side}-{name}"
            colours[base + number] = colour
    return names, colours


LABEL_NAMES, LABEL_COLOURS = _table()
"""FreeSurfer names and RGB colours of every label SynthSeg can write (and 0, Unknown)."""

SYNTHSEG_2_LABELS = tuple(
    sorted([label for pair in _BILATERAL for label in pair[:2]] + [m[0] for m in _MIDLINE])
)
"""Labels of SynthSeg 2.0 (without --parc)."""

SYNTHSEG_1_LABELS = tuple(label for label in SYNTHSEG_2_LABELS if label != 24)
"""Labels of SynthSeg 1.0: as 2.0, without CSF (24)."""

SYNTHSEG_PARC_LABELS = tuple(
    sorted(
        [label for label in SYNTHSEG_2_LABELS if label not in (3, 42)]
        + [base + p[0] for p in _PARCELS for base in (1000, 2000)]
    )
)
"""Labels of SynthSeg 2.0 with --parc: cortex 3/42 replaced by the Desikan-Killiany parcels."""


def label_name(label: SupportsInt) -> str:
    """FreeSurfer name of a label id, or ``"label <id>"`` for ids outside the table."""
    return LABEL_NAMES.get(int(label), f"label {int(label)}")


def label_colour(label: SupportsInt) -> tuple[int, ...]:
    """RGB colour (0-255) of a label id; ids outside the table get a stable pseudo-random one."""
    label = int(label)
    if label in LABEL_COLOURS:
        return LABEL_COLOURS[label]
    rng = np.random.default_rng(label)
    return tuple(int(c) for c in rng.integers(40, 256, 3))


def label_values(labels: npt.ArrayLike, name: str = "labels") -> np.ndarray:
    """Check a label map and return it as an integer array.

    Float maps are accepted when every value is a whole number (many tools write labels as
    float); anything else raises.

    Raises
    ------
    ValueError
        Non-numeric data, non-integer values, NaN, or negative labels.
    """
    array = np.asarray(labels)
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name}: label map has NaN or infinite values")
        if not np.array_equal(array, np.round(array)):
            raise ValueError(
                f"{name}: label map holds non-integer values "
                f"(e.g. {array[array != np.round(array)].flat[0]:g}); "
                f"is this an intensity image?"
            )
        if array.size and array.min() < 0:
            raise ValueError(f"{name}: label map has negative labels (smallest {array.min():g})")
        if array.size and array.max() > 2.0**53:  # beyond, a float no longer holds every integer
            raise ValueError(
                f"{name}: label map holds values up to {array.max():g}, too large for labels"
            )
        fits = not array.size or array.max() <= np.iinfo(np.int32).max
        array = array.astype(np.int32 if fits else np.int64)
    elif array.dtype.kind not in "iu":
        raise ValueError(f"{name}: label map must be integer, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise ValueError(f"{name}: label map has negative labels (smallest {array.min()})")
    return array


@dataclass
class CleanupChange:
    """What `clean_labels` did to one label.

    Attributes
    ----------
    label : int
    name : str
    voxels_before, voxels_after : int
    islands_removed : int
        Disconnected components given to their neighbours.
    island_voxels : int
        Voxels in those components.
    holes_filled : int
        Background voxels enclosed by the label that it took.
    """

    label: int
    name: str
    voxels_before: int
    voxels_after: int
    islands_removed: int
    island_voxels: int
    holes_filled: int


def clean_labels(
    labels: npt.ArrayLike,
    *,
    min_island: int | None = None,
    fill_holes: bool = True,
    connectivity: int = 3,
) -> tuple[np.ndarray, list["CleanupChange"]]:
    """Remove disconnected islands and fill enclosed holes, label by label.

    Islands are the connected components of a label other than its largest one (or, with
    `min_island`, the components smaller than that many voxels); their voxels go to the
    nearest voxel that is kept, i.e. to the surrounding labels or to the background. Holes
    are background (0) voxels that a label encloses; they join that label. The largest
    component of every label is always kept, so no label disappears and none is created.

    Parameters
    ----------
    labels : ndarray of int, 2D or 3D
    min_island : int, optional
        Keep components of at least this many voxels (default: only the largest).
    fill_holes : bool
    connectivity : {1, 2, 3}
        Neighbourhood of a connected component (3 for 26-connectivity in 3D).

    Returns
    -------
    cleaned : ndarray, same shape and dtype
    changes : list of CleanupChange
        One per label of the input, 0 excluded, in increasing label order.
    """
    labels = label_values(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be 2D or 3D, got shape {labels.shape}")
    cleaned = labels.copy()
    values, inverse = np.unique(labels, return_inverse=True)
    present = [int(v) for v in values if v != 0]
    structure = ndimage.generate_binary_structure(labels.ndim, connectivity)
    # Bounding boxes of consecutive ids (find_objects makes one slot per id up to the
    # largest, which for ids near 2**31 is more memory than any machine has).
    consecutive = inverse.reshape(labels.shape) + int(values[0] != 0)
    found = ndimage.find_objects(consecutive) if present else []
    boxes = dict(zip(present, found[-len(present) :] if present else [], strict=True))
    removed = {}
    vacated = np.zeros(labels.shape, dtype=bool)
    for label in present:
        box = boxes[label]
        components, count = ndimage.label(labels[box] == label, structure)
        sizes = np.bincount(components.ravel())[1:]
        keep = np.zeros(count + 1, dtype=bool)
        keep[1 + int(np.argmax(sizes))] = True
        if min_island is not None:
            keep[1:] |= sizes >= min_island
        drop = ~keep[components] & (components > 0)
        vacated[box] |= drop
        removed[label] = (int(count - keep[1:].sum()), int(drop.sum()))
    if vacated.any():
        _, nearest = ndimage.distance_transform_edt(vacated, return_indices=True)
        cleaned[vacated] = cleaned[tuple(index[vacated] for index in nearest)]
    filled = {}
    if fill_holes:
        for label in present:
            box = _grown_box(boxes[label], labels.shape)
            mask = cleaned[box] == label
            holes = ndimage.binary_fill_holes(mask) & ~mask & (cleaned[box] == 0)
            cleaned[box][holes] = label
            filled[label] = int(holes.sum())
    before = dict(zip(*np.unique(labels, return_counts=True), strict=True))
    after = dict(zip(*np.unique(cleaned, return_counts=True), strict=True))
    changes = [
        CleanupChange(
            label,
            label_name(label),
            int(before[label]),
            int(after.get(label, 0)),
            removed[label][0],
            removed[label][1],
            filled.get(label, 0),
        )
        for label in present
    ]
    lost = [c.label for c in changes if c.voxels_after == 0]
    if lost:  # cannot happen (largest components are kept); never let it pass silently
        raise RuntimeError(f"clean_labels would remove labels {lost}")
    return cleaned, changes


def _grown_box(box, shape):
    """A bounding box grown by one voxel, so that a label touching it still encloses holes."""
    return tuple(
        slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, shape, strict=True)
    )
