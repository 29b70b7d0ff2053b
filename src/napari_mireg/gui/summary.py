"""The end of a widget run, computed in the worker thread (no Qt, no napari here).

Everything the widget shows or exports once the registration has ended: the engine's
evaluation (det J, folds, warped labels, overlap scores after the affine stage and after
SyN: :func:`evaluate`), the displacement length, the map on the fixed file's grid and each
label's centre. Computed where the registration ran, so that the window only has to put the
arrays into layers (this took the viewer's thread 1.0-1.6 s at 2 mm). `LabelScore` pairs
each label's two scores as the results panel lists them.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from napari_mireg.engine.quality import Quality, evaluate
from napari_mireg.engine.transforms import DiffeomorphicMap
from napari_mireg.gui.display import on_grid


@dataclass(frozen=True)
class LabelScore:
    """One label's overlap after the affine stage and after SyN.

    Attributes
    ----------
    label : int
    name : str
        FreeSurfer name.
    affine, syn : float
        Dice after the prealignment alone and after the whole map (NaN: the label is in
        neither map at that stage).
    jaccard : float
        Jaccard index after the whole map.
    fixed_voxels, warped_voxels : int
        Voxels of the label in the fixed labels and in the warped moving labels.
    """

    label: int
    name: str
    affine: float
    syn: float
    jaccard: float
    fixed_voxels: int
    warped_voxels: int

    @property
    def gain(self):
        """Float: Dice after SyN minus Dice after the affine stage."""
        return self.syn - self.affine


def worst_first(scores):
    """LabelScores sorted by Dice after SyN, lowest first (labels with none last)."""
    return sorted(scores, key=lambda s: (math.isnan(s.syn), s.syn, s.label))


@dataclass
class RunSummary:
    """What a finished run shows.

    Attributes
    ----------
    result : Result
        The engine's result (warped image on the fixed display grid).
    quality : Quality
        The engine's evaluation on the fixed display grid.
    displacement : ndarray, float32
        Length of the displacement (mm) on the fixed display grid.
    export_mapping : DiffeomorphicMap or None
        The map with its fields on the fixed file's own grid (None without that grid).
    centres : dict
        {label: (i, j, k)} centre of each label on the fixed display grid (fixed labels
        when given, else the warped labels).
    displacement_limits : tuple of float or None
        (0, longest displacement): the displacement layer's contrast limits, which napari
        would otherwise find by scanning the volume in the window's thread.
    """

    result: object
    quality: Quality
    displacement: np.ndarray
    export_mapping: object = None
    centres: dict | None = None
    displacement_limits: tuple | None = None

    @property
    def determinant(self):
        """Ndarray of float32: det J of the map on the fixed display grid (<= 0: a fold)."""
        return self.quality.jacobian_determinant

    @property
    def folds(self):
        """Int: voxels with det J <= 0."""
        return self.quality.folds

    @property
    def warped_labels(self):
        """Ndarray or None: the moving labels on the fixed display grid (nearest neighbour)."""
        return self.quality.warped_labels

    @property
    def table(self):
        """OverlapTable or None: per-label Dice/Jaccard of the fixed against the warped labels."""
        return self.quality.overlap

    @property
    def scores(self):
        """List of LabelScore (in label order) or None without both label maps."""
        overlap, affine = self.quality.overlap, self.quality.overlap_affine
        if overlap is None or affine is None:
            return None
        before_syn = {row["label"]: row["dice"] for row in affine.rows}
        return [
            LabelScore(
                row["label"],
                row["name"],
                before_syn.get(row["label"], float("nan")),
                row["dice"],
                row["jaccard"],
                row["fixed_voxels"],
                row["warped_voxels"],
            )
            for row in overlap.rows
        ]


def summarise(run, result):
    """The RunSummary of a LiveRun's Result."""
    mapping = result.mapping
    fixed_labels = None
    if run.fixed_labels is not None and run.moving_labels is not None:
        fixed_labels = on_grid(run.fixed_labels.data, run.fixed_labels.affine, run.fixed, "nearest")
    displacement = np.sqrt((mapping.displacement() ** 2).sum(axis=-1)).astype(np.float32)
    summary = RunSummary(
        result,
        evaluate(result, fixed_labels, run.moving_labels),
        displacement,
        displacement_limits=(0.0, max(float(displacement.max()), 1e-3)),
    )
    if run.export_grid is not None:
        grid, affine = run.export_grid, mapping.fixed_grid.affine
        summary.export_mapping = DiffeomorphicMap(
            grid,
            mapping.moving_grid,
            mapping.prealign,
            on_grid(mapping.forward, affine, grid),
            on_grid(mapping.backward, affine, grid),
        )
    if run.moving_labels is not None:
        summary.centres = label_centres(
            summary.warped_labels if fixed_labels is None else fixed_labels
        )
    return summary


def label_centres(labels):
    """{label: centre (voxel indices, floats)} of every non-zero label."""
    labels = np.asarray(labels)
    values = [int(v) for v in np.unique(labels) if v != 0]
    if not values:
        return {}
    centres = ndimage.center_of_mass(np.ones(labels.shape, np.uint8), labels, values)
    return {
        value: tuple(float(c) for c in centre)
        for value, centre in zip(values, centres, strict=True)
    }
