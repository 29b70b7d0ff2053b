"""The layers a registration run shows: made once, then fed frames in place.

Each run has its own layers, named after it ("R2 warped"), so that two runs can be
compared; a continued run keeps its run's layers. The names are short enough for napari's
layer list; each layer's full description is in its metadata ("description").
"""

import threading

import numpy as np

from napari_mireg.gui.display import layer_kwargs, scale_translate

WARPED, WARPED_LABELS = "warped moving", "warped moving labels"
UPDATE, JACOBIAN, DISPLACEMENT = "update magnitude (mm)", "det J", "displacement (mm)"
CHECKERBOARD, FIXED_CONTOURS = "checkerboard", "fixed labels (contours)"
DICE_MAP = "Dice map"
# Marks the layers this widget made, which are not offered as registration inputs.
RESULT_KEY = "mireg_run"
BASE_KEY = "mireg_layer"  # which of a run's layers it is (WARPED, JACOBIAN, ...)
# A layer's name in napari's layer list after its run's "R<n> " (a layer without one here is
# named by its description), and its full description.
SHORT_NAMES = {
    WARPED: "warped",
    WARPED_LABELS: "labels",
    UPDATE: "update",
    JACOBIAN: "det J",
    DISPLACEMENT: "displacement",
    CHECKERBOARD: "checker",
    FIXED_CONTOURS: "fixed labels",
    DICE_MAP: "Dice map",
    "fixed brain mask": "fixed brain",
    "moving brain mask": "moving brain",
}
DESCRIPTIONS = {
    WARPED: "the moving image warped onto the fixed image",
    WARPED_LABELS: "the moving labels warped onto the fixed image",
    UPDATE: "length of the current update of the map (mm)",
    JACOBIAN: "det J of the map (1: volume kept, below: shrinks, above: grows, <= 0: fold)",
    DISPLACEMENT: "length of the map's displacement (mm)",
    CHECKERBOARD: "tiles of the fixed and the warped image in turns",
    FIXED_CONTOURS: "the fixed labels, drawn as outlines",
    DICE_MAP: "the fixed labels filled by their Dice",
    "fixed brain mask": "the fixed image's brain mask made by brain extraction",
    "moving brain mask": "the moving image's brain mask made by brain extraction",
}
# The longest layer name of a run numbered below 100 ("R12 displacement").
MAX_NAME_LENGTH = 16


def run_layer_name(base, run):
    """The name of a run's layer, e.g. ``R2 warped``."""
    return f"R{run} {SHORT_NAMES.get(base, base)}"


def run_layer_description(base, run):
    """The full description of a run's layer, e.g. ``run 2: det J of the map (...)``."""
    return f"run {run}: {DESCRIPTIONS.get(base, base)}"


def is_result_layer(layer):
    """True for the layers a run made (warped images and labels, det J, ...)."""
    return RESULT_KEY in layer.metadata


def _touch_pages(buffers):
    """Write every page of freshly allocated `buffers` (zeros stay zeros).

    A new array's memory is only mapped when first written: for a 1 mm volume the first copy
    of a frame into it took about 0.1 s of page faults on the main thread. Run in a helper
    thread while the worker makes the first frame (numpy's fill releases the GIL).
    """
    for buffer in buffers:
        buffer.fill(0)


class LiveLayers:
    """The layers of one run in a viewer: created on demand, updated in place.

    Parameters
    ----------
    viewer : napari.Viewer
    run : int
        The run's number (names its layers).
    fixed_metadata : dict
        The fixed layer's metadata: its file's affine and shape go with every layer, so
        that saving one writes it on the fixed file's grid.
    """

    def __init__(self, viewer, run, fixed_metadata=None):
        self.viewer = viewer
        self.run = run
        self._file = {
            key: fixed_metadata[key]
            for key in ("affine", "shape")
            if fixed_metadata and key in fixed_metadata
        }
        self._buffers = {}  # layer name -> the array a live layer shows
        self._buffers_touched = None  # thread that maps the new buffers' pages
        self._untouched = []  # buffers made since the last touch_new_buffers

    def name(self, base):
        """The run's name for the layer `base` (WARPED, JACOBIAN, ...)."""
        return run_layer_name(base, self.run)

    def get(self, base):
        """The run's layer `base`, or None."""
        name = self.name(base)
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def layers(self):
        """The run's layers in the viewer."""
        return [layer for layer in self.viewer.layers if layer.metadata.get(RESULT_KEY) == self.run]

    def show(self, base, data, kind, affine, **extra):
        """Create or update this run's layer `base` with `data` on a display grid."""
        name = self.name(base)
        scale, translate = scale_translate(affine)
        kwargs = layer_kwargs(affine, name)
        kwargs["metadata"].update(
            self._file,
            description=run_layer_description(base, self.run),
            **{RESULT_KEY: self.run, BASE_KEY: base},
        )
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if not (np.allclose(layer.scale, scale) and np.allclose(layer.translate, translate)):
                layer.scale, layer.translate = scale, translate
            layer.data = data
            if base == UPDATE:
                layer.reset_contrast_limits()
            layer.metadata.update(kwargs["metadata"])
            return layer
        add = self.viewer.add_labels if kind == "labels" else self.viewer.add_image
        # napari selects a new layer; the one looked at stays selected (a hidden
        # checkerboard would otherwise hold the layer controls).
        selection = self.viewer.layers.selection
        active = selection.active
        layer = add(data, **kwargs, **extra)
        if active is not None:
            selection.active = active
        return layer

    def prepare(self, base, shape, dtype, kind, affine, **extra):
        """Make the live layer `base` if missing, showing a zero buffer that frames are then
        copied into: making a layer takes napari a few hundred ms, updating its buffer far
        less. Returns the layer.
        """
        layer = self._live(base)
        if layer is None:
            buffer = np.zeros(shape, dtype)
            self._buffers[self.name(base)] = buffer
            layer = self.show(base, buffer, kind, affine, **extra)
            self._untouched.append(buffer)
        return layer

    def rename(self, base, new_base):
        """Make the live layer `base` the run's layer `new_base`: its name, description and
        buffer go with it (renaming a layer costs napari far less than making one). Returns
        the layer, or None when there is no live layer `base` or already a layer `new_base`.
        """
        layer = self._live(base)
        if layer is None or self.get(new_base) is not None:
            return None
        self._buffers[self.name(new_base)] = self._buffers.pop(self.name(base))
        layer.name = self.name(new_base)
        layer.metadata.update(
            description=run_layer_description(new_base, self.run), **{BASE_KEY: new_base}
        )
        return layer

    def touch_new_buffers(self):
        """Map the pages of the buffers made since the last call, in a helper thread."""
        buffers, self._untouched = list(self._untouched), []
        if buffers:
            self._buffers_touched = threading.Thread(
                target=_touch_pages, args=(buffers,), daemon=True
            )
            self._buffers_touched.start()

    def update(self, base, data, kind, affine, *, refresh=True):
        """Put a frame's array into the live layer `base`.

        A frame of the buffer's shape and grid is copied into the layer's buffer, and the
        layer re-sliced without a data event: a data event makes napari rebuild a Labels
        layer's colour texture and shader (tens of ms with software OpenGL) and re-draw the
        thumbnails, on every frame. Otherwise (a layer that shows a result array, or another
        grid) the frame's array becomes the layer's data and its new buffer. Only the
        widget's own buffers are written, never arrays it was given.

        With ``refresh=False`` a copy into the buffer is not shown until :meth:`refresh`
        (the copy and the re-slicing can then go to two turns of the event loop).
        """
        name = self.name(base)
        layer = self._live(base)
        buffer = self._buffers.get(name)
        if (
            layer is None
            or buffer.shape != data.shape
            or buffer.dtype != data.dtype
            or not np.allclose(layer.metadata["display_affine"], affine)
        ):
            self._buffers[name] = data
            return self.show(base, data, kind, affine)
        if self._buffers_touched is not None:  # the first copy into new buffers
            self._buffers_touched.join()
            self._buffers_touched = None
        np.copyto(buffer, data)
        if refresh:
            self.refresh(base)
        return layer

    def refresh(self, base):
        """Re-slice the live layer `base` after a copy into its buffer (no data event)."""
        layer = self._live(base)
        if layer is None:
            return
        layer.refresh(thumbnail=False, extent=False)
        if base == UPDATE and layer.visible:
            layer.reset_contrast_limits()

    def _live(self, base):
        """The layer `base` if it still shows its buffer, else None."""
        name = self.name(base)
        if name in self.viewer.layers and name in self._buffers:
            layer = self.viewer.layers[name]
            if layer.data is self._buffers[name]:
                return layer
        return None

    def live_layers(self):
        """The layers that still show their buffer (their thumbnails are not re-drawn per
        frame); a layer given a result array since is up to date.
        """
        return [
            self.viewer.layers[name]
            for name, buffer in self._buffers.items()
            if name in self.viewer.layers and self.viewer.layers[name].data is buffer
        ]
