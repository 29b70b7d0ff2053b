"""The dock's live plots: the joint histogram (log scale) and the MI curve.

Redrawing a matplotlib figure costs about 0.1 s; the live view instead blits the two changing
artists over a saved background and redraws the whole figure only when an axis must change
(the curve leaves its limits, or the histogram changes size).
"""

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure


class LivePlots:
    """A canvas with the joint histogram and the MI-per-iteration curve.

    Attributes
    ----------
    canvas : FigureCanvasQTAgg
        The Qt widget to put in a layout.
    image, curve : matplotlib artists
    """

    def __init__(self):
        self.figure = Figure(figsize=(4, 2.2), layout="constrained")
        self.histogram_axes = self.figure.add_subplot(1, 2, 1)
        self.curve_axes = self.figure.add_subplot(1, 2, 2)
        self.histogram_axes.set_title("joint histogram (log)", fontsize=8)
        self.histogram_axes.set_xlabel("moving bin", fontsize=7)
        self.histogram_axes.set_ylabel("fixed bin", fontsize=7)
        self.curve_axes.set_title("MI per iteration", fontsize=8)
        for axes in (self.histogram_axes, self.curve_axes):
            axes.tick_params(labelsize=6)
        self.image = self.histogram_axes.imshow(np.zeros((2, 2)), origin="lower",
                                                cmap="viridis", aspect="auto", animated=True)
        (self.curve,) = self.curve_axes.plot([], [], lw=1.2, animated=True)
        self.curve_axes.set_xlim(0, 1)
        self.curve_axes.set_ylim(0, 1)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(180)
        self._background = None
        self.canvas.mpl_connect("draw_event", self._on_draw)

    def _on_draw(self, _event):
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._draw_artists()

    def _draw_artists(self):
        self.histogram_axes.draw_artist(self.image)
        self.curve_axes.draw_artist(self.curve)

    def update(self, histogram, values, planned_iterations):
        """Show a joint histogram and the curve of `values` (MI per iteration so far)."""
        logarithm = np.log10(np.asarray(histogram, dtype=np.float64) + 1e-7)
        full = logarithm.shape != self.image.get_array().shape
        if full:
            rows, columns = logarithm.shape
            self.image.set_extent((-0.5, columns - 0.5, -0.5, rows - 0.5))
        self.image.set_data(logarithm)
        self.image.set_clim(logarithm.min(), logarithm.max())
        values = np.asarray(values, dtype=np.float64)
        self.curve.set_data(np.arange(1, values.size + 1), values)
        full |= self._fit_limits(values, planned_iterations)
        if full or self._background is None:
            self.canvas.draw()
            # The layout is settled after the first draw; recomputing it costs most of a
            # full redraw.
            self.figure.set_layout_engine("none")
        else:
            self.canvas.restore_region(self._background)
            self._draw_artists()
            self.canvas.blit(self.figure.bbox)

    def _fit_limits(self, values, planned_iterations):
        """Widen the curve's limits when the data leave them; True if they changed."""
        if values.size == 0:
            return False
        low, high = self.curve_axes.get_ylim()
        right = self.curve_axes.get_xlim()[1]
        changed = False
        if values.size > right or right < planned_iterations:
            self.curve_axes.set_xlim(0, max(values.size, planned_iterations))
            changed = True
        if values.min() < low or values.max() > high:
            # MI >= 0: from 0 to well above the largest value, so the limits rarely move
            # (each move costs a full redraw).
            self.curve_axes.set_ylim(min(0.0, values.min()), 1.5 * values.max() + 0.1)
            changed = True
        return changed
