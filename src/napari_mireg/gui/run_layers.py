"""The layers of a run as the panel shows them: made at Run, fed frames, and the result.

`LiveLayers` keeps the layers' buffers and names; this decides which layers a run has,
how they look, and where they sit in the layer list: a run's layers are named "R<n> ..."
and sit together above the inputs, the newest run on top. A new run hides the earlier runs'
layers and drops their views (checkerboard, fixed outlines, update magnitude), which only
serve the run being looked at; "Clear earlier runs" removes the rest of them.
"""

import numpy as np
from matplotlib import colormaps
from napari.utils import Colormap

from napari_mireg.gui.dice_map import dice_colormap
from napari_mireg.gui.inspection import MAP_MODES
from napari_mireg.gui.label_display import count_labels, ranked_dice
from napari_mireg.gui.live_layers import (
    BASE_KEY,
    CHECKERBOARD,
    DICE_MAP,
    DISPLACEMENT,
    FIXED_CONTOURS,
    JACOBIAN,
    RESULT_KEY,
    UPDATE,
    WARPED,
    WARPED_LABELS,
    LiveLayers,
)

# The layers of a run that only serve looking at it: dropped when a new run starts.
VIEWS = (CHECKERBOARD, FIXED_CONTOURS, UPDATE)

# det J: diverging, white at 1 (volume kept), blue where the map shrinks, red where it
# grows; with contrast limits (0, 2) a fold (det J <= 0) is full blue.
JACOBIAN_COLORMAP = Colormap(colormaps["RdBu_r"](np.linspace(0.0, 1.0, 256)), name="det J")


class RunLayers:
    """The current run's layers in a viewer, and the inspection view put on them.

    Parameters
    ----------
    viewer : napari.Viewer
    view : InspectionView
    """

    def __init__(self, viewer, view):
        self.viewer = viewer
        self.view = view
        self.live = None  # LiveLayers of the current run
        self.run_number = 0
        self._affine = None  # the fixed image's display grid
        self._moving_affine = None  # the moving image's
        self._fixed_labels = None  # the run's fixed labels layer (None without one)
        self._shape = None
        self._dice = None  # {label: Dice} of the run's result, for its Dice map
        self._determinant = None  # det J of the run's result
        # The Dice map and det J layers are made the first time they are shown (napari
        # takes 0.1-0.4 s to make a layer at 1 mm): the view asks for them.
        view.make_result_layer = self.result_layer

    def name(self, base):
        """The current run's name of a layer (WARPED, JACOBIAN, ...)."""
        return self.live.name(base)

    def has(self, base):
        """True if the current run has the layer `base`."""
        return self.live is not None and self.live.get(base) is not None

    def begin(self, job, chosen, continued):
        """Make the run's live layers for the first frame, then the inspection view.

        A new run gets its own layers (the previous run's are hidden, kept for
        comparison); a continued run keeps its run's. Every layer the run shows before
        its end is made here, before the first frame (napari takes 0.1-0.4 s to make a
        layer: made later, each held the window during the run), the hidden update
        magnitude layer too.

        Parameters
        ----------
        job : LiveRun
        chosen : InputLayers
            The run's input layers.
        continued : bool
        """
        if not continued or self.live is None:
            self.run_number += 1
            self.live = LiveLayers(self.viewer, self.run_number, chosen.fixed.metadata)
            self._dice = self._determinant = None
            self._drop_earlier_views()
        self._affine = affine = job.fixed.affine
        self._moving_affine = job.moving.affine
        self._fixed_labels = chosen.fixed_labels
        self._shape = shape = job.fixed.data.shape
        limits = chosen.moving.contrast_limits
        # Made first, so under the warped image and the contours: shown, it is looked at
        # with them.
        self.live.prepare(
            UPDATE, shape, np.float32, "image", affine, colormap="inferno", visible=False
        )
        self.live.prepare(WARPED, shape, np.float32, "image", affine, contrast_limits=limits)
        if job.moving_labels is not None:
            self.live.prepare(
                WARPED_LABELS,
                shape,
                job.moving_labels.data.dtype,
                "labels",
                affine,
                colormap=chosen.moving_labels.colormap,
            ).editable = False
        self.live.touch_new_buffers()
        labels = chosen.moving_labels
        self.view.begin(self.live, chosen.fixed, 0 if labels is None else count_labels(labels.data))
        if job.moving_labels is not None and chosen.fixed_labels is not None:
            self.view.show_fixed_contours(chosen.fixed_labels)
        # The fixed image stays the selected layer: the layer controls show what is looked at.
        self.viewer.layers.selection.active = chosen.fixed

    def earlier_layers(self):
        """The layers of the runs before the current one (or before the next one, between
        runs), oldest last as in the layer list.
        """
        return [
            layer
            for layer in self.viewer.layers
            if layer.metadata.get(RESULT_KEY, self.run_number) != self.run_number
        ]

    def clear_earlier(self):
        """Remove the layers of the runs before the current one (never an input's); returns
        how many were removed.
        """
        earlier = self.earlier_layers()
        for layer in earlier:
            self.viewer.layers.remove(layer)
        return len(earlier)

    def _drop_earlier_views(self):
        for layer in self.earlier_layers():
            if layer.metadata.get(BASE_KEY) in VIEWS:
                self.viewer.layers.remove(layer)

    def show_mask(self, side, mask):
        """Show a side's brain mask (made by brain extraction) over its image.

        Parameters
        ----------
        side : {"fixed", "moving"}
        mask : ndarray of bool
            On the side's display grid (the run's `LiveRun.fixed` or `LiveRun.moving`).
        """
        affine = self._affine if side == "fixed" else self._moving_affine
        layer = self.live.show(
            f"{side} brain mask", mask.astype(np.uint8), "labels", affine, opacity=0.3
        )
        layer.editable = False

    def update(self, base, data, kind):
        """Put a frame's array (on the fixed display grid) into the run's layer `base`."""
        self.live.update(base, data, kind, self._affine)

    def result_steps(self, summary):
        """The steps that put a RunSummary into the run's layers, for turns of the event
        loop (`Turns`): the warped image and labels, det J and the displacement (the update
        magnitude layer becomes it), the Dice per label (the outlines), then the view
        brought up to date.

        No layer is made here: making one takes napari 0.1-0.4 s at 1 mm, a cost no turn
        can split. det J and the Dice map are made when first shown (`result_layer`).

        Returns
        -------
        list of callables
        """
        # Copied into the live layers' buffers, as a frame is: napari's data event would
        # rebuild the labels' colour texture and shader. The warped image's copy and its
        # re-slicing take two turns (at 1 mm each is about as long as a repaint).
        steps = [
            lambda: self.live.update(
                WARPED, summary.result.warped, "image", self._affine, refresh=False
            ),
            lambda: self.live.refresh(WARPED),
        ]
        if summary.warped_labels is not None:
            steps.append(lambda: self.update(WARPED_LABELS, summary.warped_labels, "labels"))
        steps.append(lambda: self._set_determinant(summary.determinant))
        steps.append(lambda: self._show_displacement(summary))
        if summary.table is not None and self._fixed_labels is not None:
            rows = summary.table.rows
            steps.append(lambda: self._set_dice(rows))
            steps.append(lambda: self.view.set_dice(ranked_dice(rows)))
        steps.append(self._show_result_view)
        return steps

    def _set_determinant(self, determinant):
        """The run's det J, for its layer: a layer already made (a continued run's) is
        given it.
        """
        self._determinant = determinant
        if self.has(JACOBIAN):
            self.live.show(JACOBIAN, determinant, "image", self._affine)

    def _show_displacement(self, summary):
        # The update magnitude layer (hidden, on the same grid) becomes the displacement's:
        # its buffer takes the displacement length and no layer is made.
        layer = self.live.rename(UPDATE, DISPLACEMENT)
        if layer is None:  # a continued run: its displacement layer is given the new one
            layer = self.live.show(
                DISPLACEMENT, summary.displacement, "image", self._affine, visible=False
            )
        else:
            self.update(DISPLACEMENT, summary.displacement, "image")
        layer.colormap = "viridis"
        # Its range comes with the summary: napari would scan the volume for it.
        if summary.displacement_limits is not None:
            layer.contrast_limits = summary.displacement_limits
        else:
            layer.reset_contrast_limits()
        if summary.export_mapping is not None:
            layer.metadata["displacement"] = summary.export_mapping.transforms()[0]

    def _set_dice(self, rows):
        """The run's Dice per label, for its Dice map: a map already made (a continued
        run's) is recoloured.
        """
        self._dice = {int(row["label"]): row["dice"] for row in rows}
        layer = self.live.get(DICE_MAP)
        if layer is not None:
            layer.colormap = dice_colormap(self._dice)

    def result_layer(self, base):
        """The run's det J (JACOBIAN) or Dice map (DICE_MAP) layer, made hidden on the
        first call; None before the run has its result (or, for the Dice map, without
        both label maps).
        """
        layer = None if self.live is None else self.live.get(base)
        if layer is not None:
            return layer
        if base == JACOBIAN and self._determinant is not None:
            return self.live.show(
                JACOBIAN,
                self._determinant,
                "image",
                self._affine,
                colormap=JACOBIAN_COLORMAP,
                contrast_limits=(0.0, 2.0),
                visible=False,
            )
        if base == DICE_MAP and self._dice is not None and self._fixed_labels is not None:
            # The fixed labels' own array: the map costs a colormap, not a volume.
            layer = self.live.show(
                DICE_MAP,
                self._fixed_labels.data,
                "labels",
                self._affine,
                colormap=dice_colormap(self._dice),
                visible=False,
            )
            layer.editable = False
        return layer

    def _show_result_view(self):
        """The view with the result's images: a chosen map (Dice map, det J) is made and
        shown; the checkerboard or swipe follows the final warped image (the rest is as it
        was).
        """
        if self.view.mode in MAP_MODES:
            self.view.apply()
        else:
            self.view.frame_shown()
        self.viewer.layers.selection.active = self.view.fixed  # not the last layer made

    def stale_thumbnails(self):
        """The live layers whose thumbnails are not up to date (not re-drawn per frame)."""
        return [] if self.live is None else self.live.live_layers()
