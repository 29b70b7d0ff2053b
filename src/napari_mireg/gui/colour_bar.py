"""Colour bars in the dock for the run's maps: det J and the Dice map.

A `ColourBar` paints one colour scale (a gradient, its title and a few labelled ticks);
`MapColourBars` shows the bar of each map layer that is visible on the canvas (det J with its
layer's colormap and contrast limits, the Dice map with its fixed scale) and hides it with
the layer. In the dock rather than on the canvas: a bar painted there would cover anatomy
and be cut from screenshots of the canvas alone.
"""

import numpy as np
from matplotlib import colormaps
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QLinearGradient, QPainter, QPen
from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_mireg.gui.dice_map import DICE_COLORMAP, DICE_RANGE
from napari_mireg.gui.live_layers import DICE_MAP, JACOBIAN, RESULT_KEY, run_layer_name

GRADIENT_STOPS = 32  # colours sampled from a colormap (enough for a smooth bar)
BAR_HEIGHT = 10  # pixels
TICK_LENGTH = 3


class ColourBar(QWidget):
    """One colour scale: a title, a horizontal gradient and labelled ticks under it.

    Parameters
    ----------
    parent : QWidget, optional
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.title = ""
        self.colours = np.zeros((2, 4))  # RGBA (0-1) from the low to the high end
        self.limits = (0.0, 1.0)  # the values at the two ends
        self.ticks = []  # [(value, text)]
        text_height = self.fontMetrics().height()
        self.setMinimumHeight(2 * text_height + BAR_HEIGHT + TICK_LENGTH + 4)
        self.setMaximumHeight(self.minimumHeight())

    def set_scale(self, title, colours, limits, ticks):
        """Show a colour scale.

        Parameters
        ----------
        title : str
            What the colours mean (drawn above the bar).
        colours : array-like (N, 3 or 4)
            RGB(A) 0-1, evenly spaced from the low to the high end.
        limits : (float, float)
            The values at the low and the high end.
        ticks : sequence of (float, str)
            Values marked under the bar, and their labels.
        """
        self.title = str(title)
        self.colours = np.asarray(colours, float)
        self.limits = (float(limits[0]), float(limits[1]))
        self.ticks = [(float(value), str(text)) for value, text in ticks]
        self.setToolTip(f"{self.title}: " + ", ".join(text for _, text in self.ticks))
        self.update()

    def tick_texts(self):
        """The labels of the ticks, from the low to the high end."""
        return [text for _, text in self.ticks]

    def _bar_rect(self):
        metrics = self.fontMetrics()
        # Room at both ends for half a tick label, so the end labels are not cut.
        margin = max([metrics.horizontalAdvance(text) for _, text in self.ticks] + [0]) / 2 + 2
        return QRectF(margin, metrics.height() + 2, self.width() - 2 * margin, BAR_HEIGHT)

    def paintEvent(self, event):
        """Paint the title, the gradient and the ticks."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        metrics = self.fontMetrics()
        text_colour = self.palette().windowText().color()
        painter.setPen(text_colour)
        painter.drawText(
            QRectF(0, 0, self.width(), metrics.height()),
            int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
            metrics.elidedText(self.title, Qt.TextElideMode.ElideRight, self.width()),
        )
        bar = self._bar_rect()
        gradient = QLinearGradient(bar.topLeft(), bar.topRight())
        positions = np.linspace(0.0, 1.0, len(self.colours))
        for position, colour in zip(positions, self.colours, strict=True):
            gradient.setColorAt(float(position), QColor.fromRgbF(*(float(c) for c in colour[:3])))
        painter.fillRect(bar, gradient)
        painter.setPen(QPen(text_colour))
        painter.drawRect(bar)
        low, high = self.limits
        for value, text in self.ticks:
            fraction = 0.0 if high == low else (value - low) / (high - low)
            x = bar.left() + float(np.clip(fraction, 0.0, 1.0)) * bar.width()
            painter.drawLine(QPointF(x, bar.bottom()), QPointF(x, bar.bottom() + TICK_LENGTH))
            width = metrics.horizontalAdvance(text)
            painter.drawText(
                QRectF(x - width / 2 - 1, bar.bottom() + TICK_LENGTH, width + 2, metrics.height()),
                int(Qt.AlignmentFlag.AlignCenter),
                text,
            )
        painter.end()


def _number(value):
    """A tick label: at most two decimals, no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _map_kind(layer):
    """JACOBIAN or DICE_MAP for a run's det J or Dice map layer, else None."""
    run = layer.metadata.get(RESULT_KEY)
    if run is None:
        return None
    for base in (JACOBIAN, DICE_MAP):
        if layer.name == run_layer_name(base, run):
            return base
    return None


class MapColourBars(QWidget):
    """The colour bars of the det J and the Dice map layers visible in a viewer.

    The bar of the topmost visible layer of each kind is shown; none is shown (the widget
    takes no room) when no map is visible.

    Parameters
    ----------
    viewer : napari.Viewer
    """

    # The layer events that can change which bar is shown or what it shows.
    _EVENTS = frozenset(
        ("inserted", "removed", "moved", "reordered", "visible", "contrast_limits", "colormap")
    )

    def __init__(self, viewer):
        super().__init__()
        self.viewer = viewer
        self.bars = {JACOBIAN: ColourBar(), DICE_MAP: ColourBar()}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for bar in self.bars.values():
            layout.addWidget(bar)
        viewer.layers.events.connect(self._layers_changed)
        self.refresh()

    def _layers_changed(self, event):
        if event.type in self._EVENTS:
            self.refresh()

    def refresh(self):
        """Show the bar of each visible map layer, hide the others."""
        shown = {}
        for layer in self.viewer.layers:
            kind = _map_kind(layer)
            if kind is not None and layer.visible:
                shown[kind] = layer  # the last one is the topmost
        if JACOBIAN in shown:
            layer = shown[JACOBIAN]
            low, high = (float(limit) for limit in layer.contrast_limits)
            ticks = [(low, _number(low)), (high, _number(high))]
            if low < 1.0 < high:
                ticks.insert(1, (1.0, "1"))
            self.bars[JACOBIAN].set_scale(
                f"{layer.name}: blue shrinks, 1 keeps the volume, red grows",
                layer.colormap.colors,
                (low, high),
                ticks,
            )
        if DICE_MAP in shown:
            low, high = DICE_RANGE
            middle = (low + high) / 2
            self.bars[DICE_MAP].set_scale(
                f"{shown[DICE_MAP].name}: Dice of each fixed label",
                colormaps[DICE_COLORMAP](np.linspace(0.0, 1.0, GRADIENT_STOPS)),
                DICE_RANGE,
                [(low, f"{_number(low)} or less"), (middle, _number(middle)), (high, "1")],
            )
        for kind, bar in self.bars.items():
            bar.setVisible(kind in shown)
        self.setVisible(bool(shown))

    def close_viewer_link(self):
        """Stop following the viewer's layers (the panel is closing)."""
        self.viewer.layers.events.disconnect(self._layers_changed)
