"""The inspection view of a run: what the canvas shows while registering and after.

On Run every other layer is hidden: the fixed image is drawn in gray, the warped moving
image over it in a contrasting colour (overlay), or in alternate tiles (checkerboard), or
in turns (flicker), or the Dice map over the fixed image (see `dice_map`). Label outlines
(see `label_display`: which labels, in which colours) are drawn over the overlay only: in
checkerboard and flicker they would hide the edges being compared, and the Dice map fills
the labels itself.
"""

import numpy as np
from napari.components.overlays import TextOverlay
from qtpy.QtCore import QTimer

from napari_mireg.gui.dice_map import DICE_LEGEND
from napari_mireg.gui.display import display_affine
from napari_mireg.gui.label_display import (
    FIXED_OUTLINE,
    WARPED_OUTLINE,
    WORST_COUNT,
    default_display,
    outline_colormap,
    shown_labels,
)
from napari_mireg.gui.live_layers import (
    CHECKERBOARD,
    DICE_MAP,
    FIXED_CONTOURS,
    WARPED,
    WARPED_LABELS,
)

MODES = ("overlay", "checkerboard", "flicker", "dice map")
DICE_MAP_OPACITY = 0.6  # the anatomy under the map stays readable
LEGEND_OVERLAY = "mireg_dice_legend"  # the canvas overlay naming the Dice map's colours
# The warped image over the gray fixed one: a hue that gray has none of, half transparent.
OVERLAY_COLORMAP, OVERLAY_OPACITY = "magenta", 0.4
CHECKER_MM = 16.0  # side of a checkerboard tile
FLICKER_MS = 700  # time each image is shown in flicker mode
CONTOUR_PIXELS = 1


def _normalised(data, limits):
    """`data` scaled so that its contrast limits become 0 and 1 (float32)."""
    low, high = (float(limit) for limit in limits)
    scale = 1.0 / (high - low) if high > low else 1.0
    out = np.subtract(data, low, dtype=np.float32)
    out *= scale
    return np.clip(out, 0.0, 1.0, out=out)


class InspectionView:
    """Layer visibility, colours and comparison mode of the run on show.

    Parameters
    ----------
    viewer : napari.Viewer
    """

    def __init__(self, viewer):
        self.viewer = viewer
        self.mode = "overlay"
        self.live = None  # the LiveLayers shown
        self.fixed = None  # the fixed image layer
        self._tiles = None  # (shape, scale, mask) of the checkerboard
        self.label_display = "all"  # see label_display.LABEL_DISPLAYS
        self.worst_count = WORST_COUNT
        self.selected_label = None  # the label picked in the results table
        self.dice = None  # {label: Dice} of the run's result
        self._display_before_selection = None
        self._outlines = {}  # layer name -> the labels its colormap shows (None: all)
        overlays = viewer.canvas.overlays
        if LEGEND_OVERLAY not in overlays:
            overlays[LEGEND_OVERLAY] = TextOverlay(
                text=DICE_LEGEND, position="bottom_left", font_size=10, visible=False
            )
        self._timer = QTimer()
        self._timer.setInterval(FLICKER_MS)
        self._timer.timeout.connect(self._flick)

    def begin(self, live, fixed, label_count=0):
        """Show a run: hide every layer but the fixed image and the run's own.

        Parameters
        ----------
        live : LiveLayers
        fixed : napari Image layer
        label_count : int
            Number of labels of the run's label maps: sets the default label display.
        """
        self.live, self.fixed = live, fixed
        self.label_display = default_display(label_count)
        self.selected_label, self.dice, self._display_before_selection = None, None, None
        self._outlines = {}
        for layer in self.viewer.layers:
            if layer is not fixed and layer not in live.layers():
                layer.visible = False
        fixed.visible = True
        fixed.colormap = "gray"
        fixed.blending = "translucent"
        fixed.opacity = 1.0
        labels = live.get(WARPED_LABELS)
        if labels is not None:
            labels.contour = CONTOUR_PIXELS
            labels.opacity = 1.0
            labels.visible = True
        self.apply()

    def show_fixed_contours(self, fixed_labels):
        """Draw the fixed labels as outlines, under the warped labels' (the layer shares the
        fixed labels' data).
        """
        layer = self.live.get(FIXED_CONTOURS)
        if layer is None or layer.data is not fixed_labels.data:
            layer = self.live.show(
                FIXED_CONTOURS,
                fixed_labels.data,
                "labels",
                display_affine(fixed_labels),
                colormap=outline_colormap(FIXED_OUTLINE),
            )
            self._outlines.pop(layer.name, None)
        layer.contour = CONTOUR_PIXELS
        layer.opacity = 1.0  # the outline colour as it is, not blended with the image
        layer.editable = False
        self._show_outlines()
        self._keep_labels_on_top()

    def set_label_display(self, display, count=None):
        """Show the outlines of no label ("off"), of the selected one ("selected"), of the
        `count` of lowest Dice ("worst") or of every label ("all").
        """
        shown_labels(display)  # checks the name
        self.label_display = display
        if count is not None:
            self.worst_count = int(count)
        self._display_before_selection = None
        self._show_outlines()

    def set_dice(self, dice):
        """The Dice per label of the run's result ({label: Dice}, None without a table)."""
        self.dice = None if dice is None else dict(dice)
        self._show_outlines()

    def outline_layers(self):
        """The run's outline layers and their colours: [(layer, RGB)]."""
        if self.live is None:
            return []
        pairs = ((FIXED_CONTOURS, FIXED_OUTLINE), (WARPED_LABELS, WARPED_OUTLINE))
        return [
            (self.live.get(base), colour)
            for base, colour in pairs
            if self.live.get(base) is not None
        ]

    def _show_outlines(self):
        """Colour and show the outline layers as the label display and the mode say."""
        shown = shown_labels(self.label_display, self.selected_label, self.dice, self.worst_count)
        visible = self.mode == "overlay" and (shown is None or len(shown) > 0)
        for layer, colour in self.outline_layers():
            key = None if shown is None else tuple(shown)
            if self._outlines.get(layer.name, "unset") != key:
                # A new colormap rebuilds the layer's colour texture: only when it changes.
                layer.colormap = outline_colormap(colour, shown)
                self._outlines[layer.name] = key
            selected = self.label_display == "selected" and self.selected_label is not None
            if selected:
                layer.selected_label = int(self.selected_label)
            layer.show_selected_label = selected
            layer.visible = visible

    @property
    def legend(self):
        """The canvas text naming the Dice map's colours (shown with the map)."""
        return self.viewer.canvas.overlays[LEGEND_OVERLAY]

    def set_mode(self, mode):
        """Switch between "overlay", "checkerboard", "flicker" and "dice map"."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.apply()

    def apply(self):
        """Put the warped image (or the checkerboard) on show as the mode says."""
        self._timer.stop()
        if self.live is None:
            return
        warped, checker = self.live.get(WARPED), self.live.get(CHECKERBOARD)
        if warped is None:
            return
        self._show_outlines()
        dice_map = self.live.get(DICE_MAP)
        if dice_map is not None:
            dice_map.visible = self.mode == "dice map"
            dice_map.opacity = DICE_MAP_OPACITY
        self.legend.visible = self.mode == "dice map" and dice_map is not None
        if self.mode == "dice map" and dice_map is not None:
            warped.visible = False
            if checker is not None:
                checker.visible = False
            return
        if self.mode == "checkerboard":
            warped.visible = False
            self.frame_shown()
            return
        if checker is not None:
            checker.visible = False
        warped.visible = True
        warped.blending = "translucent"
        if self.mode in ("overlay", "dice map"):  # the Dice map before there is one: overlay
            warped.colormap, warped.opacity = OVERLAY_COLORMAP, OVERLAY_OPACITY
        else:
            warped.colormap, warped.opacity = "gray", 1.0
            self._timer.start()
        self._keep_labels_on_top()

    def frame_shown(self):
        """A new warped image is in its layer: bring the checkerboard up to date."""
        if self.mode != "checkerboard" or self.live is None:
            return
        warped = self.live.get(WARPED)
        if warped is None or warped.data.shape != self.fixed.data.shape:
            return
        mask = self._mask(warped.data.shape, tuple(warped.scale))
        tiles = np.where(
            mask,
            _normalised(self.fixed.data, self.fixed.contrast_limits),
            _normalised(warped.data, warped.contrast_limits),
        )
        affine = warped.metadata["display_affine"]
        layer = self.live.prepare(
            CHECKERBOARD, tiles.shape, np.float32, "image", affine, colormap="gray"
        )
        self.live.update(CHECKERBOARD, tiles, "image", affine)
        layer.contrast_limits = (0.0, 1.0)
        layer.visible = True
        self._keep_labels_on_top()

    def _mask(self, shape, scale):
        if self._tiles is None or self._tiles[:2] != (shape, scale):
            sides = [max(1, int(round(CHECKER_MM / s))) for s in scale]
            index = np.indices(shape, sparse=True)
            parity = sum(axis // side for axis, side in zip(index, sides, strict=True)) % 2
            self._tiles = (shape, scale, parity.astype(bool))
        return self._tiles[2]

    def _keep_labels_on_top(self):
        """Contours above the images (a checkerboard layer is made after the labels)."""
        layers = self.viewer.layers
        for base in (FIXED_CONTOURS, WARPED_LABELS):
            layer = self.live.get(base)
            if layer is not None and layers.index(layer) != len(layers) - 1:
                layers.move(layers.index(layer), len(layers))

    def _flick(self):
        warped = None if self.live is None else self.live.get(WARPED)
        if warped is None or self.mode != "flicker":
            self._timer.stop()
            return
        warped.visible = not warped.visible

    @property
    def flickering(self):
        """True while flicker mode alternates the images."""
        return self._timer.isActive()

    def stop(self):
        """Stop flickering (the widget is closing or the run's layers are gone)."""
        self._timer.stop()

    def select_label(self, label, centre=None):
        """Show only the outlines of `label` and centre the view on it.

        Parameters
        ----------
        label : int or None
            None goes back to the label display used before a label was selected.
        centre : sequence of float, optional
            Voxel indices of the label's centre on the fixed display grid.
        """
        if self.live is None:
            return
        if label is None:
            self.selected_label = None
            if self._display_before_selection is not None:
                self.label_display = self._display_before_selection
                self._display_before_selection = None
            self._show_outlines()
            return
        if self._display_before_selection is None:
            self._display_before_selection = self.label_display
        self.selected_label, self.label_display = int(label), "selected"
        self._show_outlines()
        if centre is None:
            return
        reference = self.live.get(WARPED_LABELS)
        reference = self.fixed if reference is None else reference
        world = np.asarray(reference.translate) + np.asarray(reference.scale) * np.asarray(centre)
        for axis, value in enumerate(world):
            self.viewer.dims.set_point(axis, float(value))
        displayed = list(self.viewer.dims.displayed)
        self.viewer.scene.camera.center = tuple(float(world[axis]) for axis in displayed)
