"""The inspection view of a run: what the canvas shows while registering and after.

On Run every other layer is hidden and the fixed image is drawn in gray. The comparison
modes:

- "overlay": the warped moving image in gray over the fixed one, at the warped opacity
  (0: the fixed image, 1: the warped one), with the label outlines (see `label_display`:
  which labels; fixed in green, warped in magenta);
- "composite": the fixed image in green and the warped one in magenta, added, each scaled
  by its own robust range (percentiles) so that where the two agree the sum is gray;
- "checkerboard": alternate tiles (of a chosen side in mm) of the two;
- "flicker": the two in turns (at a chosen interval);
- "swipe": the warped image left of a boundary that a slider moves across the canvas, the
  fixed image right of it (the warped layer's data seen through a numpy view: no copy);
- "dice map": the fixed labels filled by their Dice over the fixed image (see `dice_map`);
- "det J": the map's det J (`run_layers.JACOBIAN_COLORMAP`), with the label outlines.

The Dice map and det J layers are made the first time their mode is chosen after a run
(napari takes 0.1-0.4 s to make a layer at 1 mm: made at the end of each run, they held
the window). Outlines are drawn in overlay and det J, and in composite only for the label
selected in the results table: in checkerboard, flicker and swipe they would hide the
edges being compared, the green and magenta outlines of many labels on a green and magenta
composite cannot be told from the images, and the Dice map fills the labels itself.
"""

import numpy as np
from qtpy.QtCore import QTimer

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
    JACOBIAN,
    WARPED,
    WARPED_LABELS,
)

MODES = ("overlay", "composite", "checkerboard", "flicker", "swipe", "dice map", "det J")
# The modes that show a result layer of their own, made when the mode is first chosen.
MAP_MODES = {"dice map": DICE_MAP, "det J": JACOBIAN}
SWIPE = "swipe"  # base name of the layer showing the warped image left of the boundary
DICE_MAP_OPACITY = 0.6  # the anatomy under the map stays readable
# The warped image in gray over the gray fixed one, opaque by default: blending a T2w over
# a T1w (the usual pair) cancels their contrasts into a flat gray, so the warped anatomy is
# shown whole with the fixed (green) and warped (magenta) outlines on it; the opacity
# slider fades to the fixed image.
OVERLAY_OPACITY = 1.0
COMPOSITE_COLOURS = ("green", "magenta")  # fixed, warped: green + magenta = gray
# The robust range of an image in the composite: these percentiles of its voxels, the high
# one over the voxels above the low one (the background does not count).
ROBUST_PERCENTILES = (1.0, 99.5)
CHECKER_MM = 16.0  # default side of a checkerboard tile
FLICKER_MS = 700  # default time each image is shown in flicker mode
SWIPE_FRACTION = 0.5  # default place of the swipe boundary (0: left edge, 1: right edge)
CONTOUR_PIXELS = 1


def _normalised(data, limits):
    """`data` scaled so that its contrast limits become 0 and 1 (float32)."""
    low, high = (float(limit) for limit in limits)
    scale = 1.0 / (high - low) if high > low else 1.0
    out = np.subtract(data, low, dtype=np.float32)
    out *= scale
    return np.clip(out, 0.0, 1.0, out=out)


def robust_limits(data, sample=2):
    """Contrast limits of an image that ignore outliers and the background.

    Parameters
    ----------
    data : ndarray
    sample : int
        Every `sample`-th voxel along each axis is looked at.

    Returns
    -------
    (float, float)
        `ROBUST_PERCENTILES` of the voxels: the low one of all, the high one of those above
        the low one.
    """
    data = np.asarray(data)
    values = np.asarray(data[tuple(slice(None, None, sample) for _ in data.shape)], np.float32)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low = float(np.percentile(values, ROBUST_PERCENTILES[0]))
    above = values[values > low]
    high = float(np.percentile(above, ROBUST_PERCENTILES[1])) if above.size else low
    return low, high if high > low else low + 1.0


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
        self._tiles = None  # (shape, scale, side in mm, mask) of the checkerboard
        self.label_display = "all"  # see label_display.LABEL_DISPLAYS
        self.worst_count = WORST_COUNT
        self.selected_label = None  # the label picked in the results table
        self.dice = None  # {label: Dice} of the run's result
        self.warped_opacity = OVERLAY_OPACITY
        self.checker_mm = CHECKER_MM
        self.swipe_fraction = SWIPE_FRACTION
        self._display_before_selection = None
        self._outlines = {}  # layer name -> the labels its colormap shows (None: all)
        # (layer, colormap, contrast limits) of the images the composite recoloured.
        self._before_composite = []
        self._composite_unranged = False  # the warped image had no range yet (a new run)
        self._swipe_key = None  # (warped array id, axis, start, stop) the swipe layer shows
        # Callable giving the run's result layer of a base (DICE_MAP, JACOBIAN), made on
        # first call (None before the run's result): set by the run's layers
        # (`RunLayers.result_layer`).
        self.make_result_layer = None
        self._timer = QTimer()
        self._timer.setInterval(FLICKER_MS)
        self._timer.timeout.connect(self._flick)
        # Another plane puts another axis across the canvas: the swipe follows it.
        viewer.dims.events.order.connect(self._plane_changed)

    def begin(self, live, fixed, label_count=0):
        """Show a run: hide every layer but the fixed image and the run's own.

        Parameters
        ----------
        live : LiveLayers
        fixed : napari Image layer
        label_count : int
            Number of labels of the run's label maps: sets the default label display.
        """
        self._end_composite()
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
        drawn = self.mode in ("overlay", "det J") or (
            self.mode == "composite" and self.label_display == "selected"
        )
        visible = drawn and (shown is None or len(shown) > 0)
        for layer, colour in self.outline_layers():
            key = None if shown is None else tuple(shown)
            if self._outlines.get(layer.name, "unset") != key:
                # A new colormap rebuilds the layer's colour texture: only when it changes.
                layer.colormap = outline_colormap(colour, shown)
                self._outlines[layer.name] = key
            selected = self.label_display == "selected" and self.selected_label is not None
            if selected:
                layer.selected_label = int(self.selected_label)
            # Set only when changed: napari re-draws a labels layer on each set (30 ms at
            # 1 mm with software OpenGL), changed or not.
            if layer.show_selected_label != selected:
                layer.show_selected_label = selected
            if layer.visible != visible:
                layer.visible = visible

    def set_mode(self, mode):
        """Switch to one of `MODES` ("overlay", "composite", "checkerboard", ...)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.apply()

    def set_warped_opacity(self, opacity):
        """Opacity (0-1) of the warped image over the fixed one in overlay mode."""
        self.warped_opacity = float(np.clip(opacity, 0.0, 1.0))
        warped = None if self.live is None else self.live.get(WARPED)
        if warped is not None and self.mode == "overlay":
            warped.opacity = self.warped_opacity

    def set_checker_size(self, millimetres):
        """Side of a checkerboard tile, in mm (at least one voxel)."""
        if not millimetres > 0:
            raise ValueError(f"checkerboard tile must be above 0 mm, got {millimetres!r}")
        self.checker_mm = float(millimetres)
        self.frame_shown()

    @property
    def flicker_ms(self):
        """Time each image is shown in flicker mode (ms)."""
        return self._timer.interval()

    def set_flicker_interval(self, milliseconds):
        """Show each image for `milliseconds` in flicker mode."""
        if not milliseconds > 0:
            raise ValueError(f"flicker interval must be above 0 ms, got {milliseconds!r}")
        self._timer.setInterval(int(milliseconds))

    def set_swipe(self, fraction):
        """Put the swipe boundary at `fraction` of the canvas' width from its left edge
        (0: the fixed image only, 1: the warped image only).
        """
        self.swipe_fraction = float(np.clip(fraction, 0.0, 1.0))
        self.frame_shown()

    def apply(self):
        """Put the warped image (or the layer made from it) on show as the mode says."""
        self._timer.stop()
        self._swipe_key = None  # the swipe layer is remade: the warped contrast may be new
        if self.live is None:
            return
        warped = self.live.get(WARPED)
        if warped is None:
            return
        self._show_outlines()
        maps = {name: self._map_layer(name) for name in MAP_MODES}
        # A map before there is one (during a run): the overlay.
        mode = "overlay" if self.mode in maps and maps[self.mode] is None else self.mode
        for name, layer in maps.items():
            if layer is not None:
                layer.visible = mode == name
        if maps["dice map"] is not None:
            maps["dice map"].opacity = DICE_MAP_OPACITY
        for base in (CHECKERBOARD, SWIPE):
            layer = self.live.get(base)
            if layer is not None:
                layer.visible = False
        if mode == "composite":
            self._begin_composite(warped)
        else:
            self._end_composite()
            warped.colormap, warped.blending = "gray", "translucent"
            warped.opacity = self.warped_opacity if mode == "overlay" else 1.0
        warped.visible = mode in ("overlay", "composite", "flicker")
        if mode == "flicker":
            self._timer.start()
        self.frame_shown()
        self._keep_labels_on_top()

    def _map_layer(self, mode):
        """The run's layer of a map mode; made now if that mode is chosen."""
        base = MAP_MODES[mode]
        layer = self.live.get(base)
        if layer is None and self.mode == mode and self.make_result_layer is not None:
            layer = self.make_result_layer(base)
        return layer

    def _begin_composite(self, warped):
        """The fixed image in green, the warped one in magenta added to it, each on its
        robust range.
        """
        if not self._before_composite:
            self._before_composite = [
                (layer, layer.colormap, tuple(layer.contrast_limits))
                for layer in (self.fixed, warped)
            ]
        for layer, colour in zip((self.fixed, warped), COMPOSITE_COLOURS, strict=True):
            layer.contrast_limits = robust_limits(layer.data)
            layer.colormap = colour
        # Before a run's first frame the warped image is all zeros: ranged on a later frame.
        self._composite_unranged = not np.any(warped.data)
        self.fixed.blending = "translucent"
        warped.blending, warped.opacity = "additive", 1.0

    def _end_composite(self):
        """Give the images the composite recoloured their colormap and range back."""
        for layer, colormap, limits in self._before_composite:
            if layer in self.viewer.layers:
                layer.colormap, layer.contrast_limits = colormap, limits
        self._before_composite = []

    def frame_shown(self):
        """A new warped image is in its layer: bring the checkerboard or the swipe up to
        date.
        """
        if self.live is None or self.mode not in ("composite", "checkerboard", "swipe"):
            return
        warped = self.live.get(WARPED)
        if self.mode == "composite":
            if warped is not None and self._composite_unranged and np.any(warped.data):
                warped.contrast_limits = robust_limits(warped.data)
                self._composite_unranged = False
            return
        if warped is None or warped.data.shape != self.fixed.data.shape:
            return
        if self.mode == "checkerboard":
            self._show_checkerboard(warped)
        else:
            self._show_swipe(warped)
        self._keep_labels_on_top()

    def _show_checkerboard(self, warped):
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

    def _mask(self, shape, scale):
        key = (shape, scale, self.checker_mm)
        if self._tiles is None or self._tiles[:3] != key:
            sides = [max(1, int(round(self.checker_mm / s))) for s in scale]
            index = np.indices(shape, sparse=True)
            parity = sum(axis // side for axis, side in zip(index, sides, strict=True)) % 2
            self._tiles = (*key, parity.astype(bool))
        return self._tiles[3]

    def _show_swipe(self, warped):
        """The warped image's voxels left of the boundary, as a view of its data drawn
        over the fixed image.
        """
        axis = self.viewer.dims.displayed[-1]  # the axis across the canvas
        size = warped.data.shape[axis]
        count = int(round(self.swipe_fraction * size))  # voxels left of the boundary
        # The camera says which way the axis runs across the screen.
        leftwards = self.viewer.scene.camera.orientation2d[1] == "left"
        start, stop = (size - count, size) if leftwards else (0, count)
        layer = self.live.get(SWIPE)
        if count == 0:
            if layer is not None:
                layer.visible = False
            return
        key = (id(warped.data), axis, start, stop)
        if layer is not None and self._swipe_key == key:
            # The same view of the same array: a new frame only needs drawing.
            layer.refresh(thumbnail=False, extent=False)
            layer.visible = True
            return
        self._swipe_key = key
        index = [slice(None)] * warped.data.ndim
        index[axis] = slice(start, stop)
        view = warped.data[tuple(index)]
        shift = np.eye(4)
        shift[axis, 3] = start  # the first voxel shown along the axis
        affine = np.asarray(warped.metadata["display_affine"]) @ shift
        layer = self.live.show(
            SWIPE,
            view,
            "image",
            affine,
            colormap="gray",
            contrast_limits=tuple(warped.contrast_limits),
        )
        layer.contrast_limits = tuple(warped.contrast_limits)
        layer.blending, layer.opacity = "translucent", 1.0
        layer.visible = True

    def _plane_changed(self, _event=None):
        if self.mode == "swipe":
            self.frame_shown()

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
        """Stop flickering and stop following the viewer (the widget is closing)."""
        self._timer.stop()
        self.viewer.dims.events.order.disconnect(self._plane_changed)

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
