"""The dock's live plots: the joint histogram (log scale) and the MI curve.

They are painted with QPainter, not matplotlib: a new frame costs about a millisecond of
the event loop, and an axis that grows costs no more than any other frame (a matplotlib
figure took 0.1-0.2 s to redraw, the largest pause of the live view).
"""

import numpy as np
from matplotlib import colormaps
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QImage, QPainter, QPalette, QPen, QPolygonF
from qtpy.QtWidgets import QWidget

CURVE_COLOUR = QColor("#4fc3f7")
MARKER_COLOUR = QColor("#9e9e9e")
MARGIN = 6  # pixels around each panel
LABEL_SPACE = 30  # pixels left of and below a plot area for the tick labels


def _viridis_table():
    """The viridis colour map as 256 ARGB32 words."""
    rgba = (colormaps["viridis"](np.linspace(0.0, 1.0, 256)) * 255).round().astype(np.uint32)
    return (0xFF << 24) | (rgba[:, 0] << 16) | (rgba[:, 1] << 8) | rgba[:, 2]


class LivePlots(QWidget):
    """The joint histogram (log10, fixed bins upwards) beside the MI-per-iteration curve.

    Attributes
    ----------
    histogram : ndarray or None
        The log10 joint histogram shown, rows the fixed bins.
    values : ndarray
        The MI values of the curve, one per iteration.
    x_limit : int
        The right end of the curve's axis: the planned number of iterations, or more.
    y_limits : tuple of float
        The curve's vertical range; it grows with head room, so it rarely moves.
    markers : list of (float, str)
        Vertical markers on the curve's axis: where the SyN starts (after the
        prealignment) and where each later level starts, half-way between that level's
        first iteration and the iteration before it, with their text.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(180)
        self.histogram = None
        self.values = np.zeros(0)
        self.x_limit = 1
        self.y_limits = (0.0, 1.0)
        self.markers = []
        self._image = None
        self._colours = _viridis_table()

    def mark_starts(self, starts):
        """Mark where the SyN and its levels start, at the next :meth:`show_data`.

        Parameters
        ----------
        starts : sequence of (int, str)
            The number of iterations before each start, and its text ("SyN", "level 2").
        """
        self.markers = [(before + 0.5, text) for before, text in starts]

    def show_data(self, histogram, values, planned_iterations):
        """Show a joint histogram and the curve of `values` (MI per iteration so far)."""
        logarithm = np.log10(np.asarray(histogram, dtype=np.float64) + 1e-7)
        self.histogram = logarithm
        low, high = logarithm.min(), logarithm.max()
        levels = (
            np.zeros(logarithm.shape, dtype=np.intp)
            if high <= low
            else np.round(255 * (logarithm - low) / (high - low)).astype(np.intp)
        )
        pixels = np.ascontiguousarray(self._colours[levels[::-1]])  # fixed bins upwards
        rows, columns = pixels.shape
        self._image = QImage(
            pixels.data, columns, rows, 4 * columns, QImage.Format.Format_ARGB32
        ).copy()
        self.values = np.asarray(values, dtype=np.float64)
        self.x_limit = max(self.values.size, int(planned_iterations), 1)
        self._fit_y_limits()
        self.update()

    def _fit_y_limits(self):
        """Widen the curve's range when the values leave it (MI >= 0: from 0 to well above
        the largest value).
        """
        if self.values.size == 0:
            return
        low, high = self.y_limits
        if self.values.min() < low or self.values.max() > high:
            self.y_limits = (min(0.0, self.values.min()), 1.5 * self.values.max() + 0.1)

    def paintEvent(self, _event):
        """Draw the curve (Qt calls this whenever the widget needs painting)."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(painter.font())
        font.setPointSizeF(7.5)
        painter.setFont(font)
        text = self.palette().color(QPalette.ColorRole.WindowText)
        half = self.width() / 2
        left = QRectF(MARGIN, MARGIN, half - 2 * MARGIN, self.height() - 2 * MARGIN)
        right = QRectF(half + MARGIN, MARGIN, half - 2 * MARGIN, self.height() - 2 * MARGIN)
        histogram_area = self._panel(painter, left, "joint histogram (log)", text)
        curve_area = self._panel(painter, right, "MI of the half-way images (nats)", text)
        if self._image is not None:
            painter.drawImage(histogram_area, self._image)
            rows, columns = self.histogram.shape
            self._axis_labels(
                painter,
                histogram_area,
                text,
                (0, columns - 1),
                (0, rows - 1),
                "moving bin",
                "fixed bin",
            )
        self._axis_labels(
            painter, curve_area, text, (0, self.x_limit), self.y_limits, "iteration", ""
        )
        self._markers(painter, curve_area)
        self._curve(painter, curve_area)
        painter.end()

    @staticmethod
    def _panel(painter, rect, title, colour):
        """Draw a panel's title and frame; return the plot area inside it."""
        painter.setPen(colour)
        line = painter.fontMetrics().height()
        painter.drawText(
            QRectF(rect.left(), rect.top(), rect.width(), line),
            Qt.AlignmentFlag.AlignHCenter,
            title,
        )
        area = QRectF(
            rect.left() + LABEL_SPACE,
            rect.top() + line + 2,
            rect.width() - LABEL_SPACE,
            rect.height() - line - 2 - LABEL_SPACE,
        )
        painter.drawRect(area)
        return area

    @staticmethod
    def _axis_labels(painter, area, colour, x_range, y_range, x_title, y_title):
        """Tick labels at both ends of each axis, and the axis titles."""
        painter.setPen(colour)
        line = painter.fontMetrics().height()
        number = (lambda v: f"{v:g}") if float(y_range[1]).is_integer() else (lambda v: f"{v:.2f}")
        below = area.bottom() + 2
        painter.drawText(
            QRectF(area.left() - 20, below, 40, line),
            Qt.AlignmentFlag.AlignHCenter,
            f"{x_range[0]:g}",
        )
        painter.drawText(
            QRectF(area.right() - 20, below, 40, line),
            Qt.AlignmentFlag.AlignHCenter,
            f"{x_range[1]:g}",
        )
        painter.drawText(
            QRectF(area.left(), below + line, area.width(), line),
            Qt.AlignmentFlag.AlignHCenter,
            x_title,
        )
        end = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        painter.drawText(
            QRectF(area.left() - LABEL_SPACE, area.bottom() - line, LABEL_SPACE - 3, line),
            end,
            number(y_range[0]),
        )
        painter.drawText(
            QRectF(area.left() - LABEL_SPACE, area.top(), LABEL_SPACE - 3, line),
            end,
            number(y_range[1]),
        )
        if y_title:
            painter.save()
            painter.translate(area.left() - LABEL_SPACE + line / 2, area.center().y())
            painter.rotate(-90)
            painter.drawText(
                QRectF(-area.height() / 2, -line / 2, area.height(), line),
                Qt.AlignmentFlag.AlignHCenter,
                y_title,
            )
            painter.restore()

    def _markers(self, painter, area):
        """Dashed vertical lines where the SyN and its levels start, their text at the top."""
        pen = QPen(MARKER_COLOUR, 1.0, Qt.PenStyle.DashLine)
        line = painter.fontMetrics().height()
        for position, text in self.markers:
            x = area.left() + area.width() * position / self.x_limit
            painter.setPen(pen)
            painter.drawLine(QPointF(x, area.top()), QPointF(x, area.bottom()))
            painter.setPen(MARKER_COLOUR)
            painter.drawText(QRectF(x + 2, area.top() + 1, 60, line), text)

    def _curve(self, painter, area):
        if self.values.size == 0:
            return
        low, high = self.y_limits
        x = area.left() + area.width() * np.arange(1, self.values.size + 1) / self.x_limit
        y = area.bottom() - area.height() * (self.values - low) / (high - low)
        painter.setPen(QPen(CURVE_COLOUR, 1.5))
        painter.drawPolyline(QPolygonF([QPointF(a, b) for a, b in zip(x, y, strict=True)]))
