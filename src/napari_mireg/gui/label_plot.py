"""The per-label Dice plot of the results panel: every label's Dice after the affine stage
and after SyN, worst first.

One column per label, sorted by Dice after SyN from the lowest (left): a grey dot at the
Dice after the prealignment alone, a dot filled on the Dice map's colour scale at the Dice
after SyN, and a line between them (the gain). With 100 labels in a dock 350 pixels wide
a name per label cannot be written; the names are in the tooltip and a click shows the
label, as a click in the table does. Painted with QPainter, as the live plots are.
"""

import math

from qtpy.QtCore import QPointF, QRectF, QSize, Qt, Signal
from qtpy.QtGui import QColor, QFont, QFontMetrics, QPainter, QPalette, QPen
from qtpy.QtWidgets import QToolTip, QWidget

from napari_mireg.gui.label_table import dice_qcolor, short_name
from napari_mireg.gui.summary import worst_first

MARGIN = 4  # pixels around the plot
AXIS_SPACE = 28  # pixels left of the plot area for the tick labels
AFFINE_COLOUR = QColor(150, 150, 150)
TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)


class DicePlot(QWidget):
    """Dice per label, after the affine stage and after SyN, worst first.

    Signals
    -------
    label_clicked(int)
        A label's column was clicked: its label id.

    Attributes
    ----------
    scores : list of LabelScore
        The labels shown, worst first.
    selected : int or None
        The label drawn with a ring (the one selected in the table).
    """

    label_clicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.scores = []
        self.selected = None
        self.setMinimumHeight(100)

    def sizeHint(self):
        """The minimum height: the plot takes the room it is given, and a taller preferred
        height would make the dock's panel scroll on a 1280x800 screen (the wrapped summary
        text makes the panel's scroll area lay it out at preferred heights).
        """
        return QSize(300, self.minimumHeight())

    def show_scores(self, scores):
        """Show a list of LabelScore (any order)."""
        self.scores = worst_first(scores)
        self.selected = None
        self.update()

    def select(self, label):
        """Ring the label `label` (None: no ring)."""
        self.selected = label
        self.update()

    # ------------------------------------------------------------------ geometry
    def plot_area(self):
        """The QRectF of the plot (Dice 0 at its bottom, 1 at its top)."""
        line = self._line_height()
        return QRectF(
            MARGIN + AXIS_SPACE,
            MARGIN + line + 4,
            self.width() - 2 * MARGIN - AXIS_SPACE,
            self.height() - 2 * MARGIN - 2 * line - 8,
        )

    def column_centre(self, index):
        """The x of the index-th label (0: the worst)."""
        area = self.plot_area()
        return area.left() + (index + 0.5) * area.width() / max(len(self.scores), 1)

    def dice_y(self, value):
        """The y of a Dice value."""
        area = self.plot_area()
        return area.bottom() - area.height() * min(max(value, 0.0), 1.0)

    def index_at(self, x):
        """The index of the label whose column holds `x`, or None."""
        area = self.plot_area()
        if not self.scores or not area.left() <= x <= area.right():
            return None
        index = int((x - area.left()) * len(self.scores) / area.width())
        return min(index, len(self.scores) - 1)

    def _font(self):
        font = QFont(self.font())
        font.setPointSizeF(max(font.pointSizeF() - 1.0, 7.5))
        return font

    def _line_height(self):
        return QFontMetrics(self._font()).height()

    # ------------------------------------------------------------------ painting
    def paintEvent(self, _event):
        """Draw the axes, the legend and a column per label."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setFont(self._font())
        text = self.palette().color(QPalette.ColorRole.WindowText)
        area = self.plot_area()
        self._axes(painter, area, text)
        self._legend(painter, area, text)
        if self.scores:
            self._columns(painter, area)
        painter.end()

    def _axes(self, painter, area, colour):
        line = painter.fontMetrics().height()
        faint = QColor(colour)
        faint.setAlpha(60)
        right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        for tick in TICKS:
            y = self.dice_y(tick)
            painter.setPen(QPen(faint, 1))
            painter.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
            if tick in (0.0, 0.5, 1.0):
                painter.setPen(colour)
                painter.drawText(
                    QRectF(MARGIN, y - line / 2, AXIS_SPACE - 4, line), right, f"{tick:g}"
                )
        painter.setPen(colour)
        painter.drawText(
            QRectF(area.left(), area.bottom() + 2, area.width(), line),
            Qt.AlignmentFlag.AlignHCenter,
            "labels, worst first (hover: name; click: show it)" if self.scores else "",
        )

    def _legend(self, painter, area, colour):
        line = painter.fontMetrics().height()
        y = MARGIN + line / 2
        x = area.left()
        for name, fill in (("after the affine", AFFINE_COLOUR), ("after SyN", dice_qcolor(0.75))):
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(fill)
            painter.drawEllipse(QPointF(x + 4, y), 4, 4)
            painter.setPen(colour)
            painter.drawText(QPointF(x + 11, MARGIN + painter.fontMetrics().ascent()), name)
            x += 11 + painter.fontMetrics().horizontalAdvance(name) + 12
        note = "(red 0.5, blue 1)"
        painter.drawText(QPointF(x, MARGIN + painter.fontMetrics().ascent()), note)

    def _columns(self, painter, area):
        spacing = area.width() / len(self.scores)
        radius = min(max(spacing / 1.8, 2.0), 4.5)
        gain_pen = QPen(AFFINE_COLOUR, 1.0)
        for index, score in enumerate(self.scores):
            x = self.column_centre(index)
            before, after = score.affine, score.syn
            if not (math.isnan(before) or math.isnan(after)):
                painter.setPen(gain_pen)
                painter.drawLine(QPointF(x, self.dice_y(before)), QPointF(x, self.dice_y(after)))
            painter.setPen(Qt.PenStyle.NoPen)
            if not math.isnan(before):
                painter.setBrush(AFFINE_COLOUR)
                painter.drawEllipse(QPointF(x, self.dice_y(before)), radius * 0.8, radius * 0.8)
            if not math.isnan(after):
                painter.setBrush(dice_qcolor(after))
                painter.drawEllipse(QPointF(x, self.dice_y(after)), radius, radius)
            if score.label == self.selected:
                painter.setBrush(Qt.BrushStyle.NoBrush)
                painter.setPen(QPen(self.palette().color(QPalette.ColorRole.WindowText), 1.5))
                painter.drawEllipse(QPointF(x, self.dice_y(after)), radius + 3, radius + 3)

    # ------------------------------------------------------------------ mouse
    def describe(self, index):
        """The tooltip text of the index-th label."""
        score = self.scores[index]
        return (
            f"{short_name(score.name)} (id {score.label})\n"
            f"Dice {score.affine:.3f} after the affine, {score.syn:.3f} after SyN "
            f"({score.gain:+.3f})"
        )

    def event(self, event):
        """Tooltips name the label under the mouse."""
        if event.type() == event.Type.ToolTip:
            index = self.index_at(event.pos().x())
            if index is None:
                QToolTip.hideText()
            else:
                QToolTip.showText(event.globalPos(), self.describe(index), self)
            return True
        return super().event(event)

    def mousePressEvent(self, event):
        """A click on a label's column shows that label."""
        index = self.index_at(event.position().x())
        if index is not None and event.button() == Qt.MouseButton.LeftButton:
            self.label_clicked.emit(self.scores[index].label)
        super().mousePressEvent(event)
