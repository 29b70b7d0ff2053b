"""The per-label table of the results panel: Dice after the affine stage and after SyN.

One row per label: id, name, Dice after the prealignment alone, Dice after SyN and the
gain, the two Dice cells filled by their value on the Dice map's colour scale. Sorted
worst first (lowest Dice after SyN) and scrolled to the top after every sort. The name
column is wide enough for every FreeSurfer name SynthSeg writes, as the table shows it;
the full name, the voxel counts and the Jaccard index are in the name's tooltip (per
label, Jaccard is Dice / (2 - Dice): a column of it would say nothing new).
"""

import math

from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QStyle,
    QTableWidget,
    QTableWidgetItem,
)

from napari_mireg.gui.dice_map import dice_colour
from napari_mireg.labels import LABEL_NAMES

# The columns: (header, tooltip).
COLUMNS = (
    ("id", "FreeSurfer label id"),
    ("name", "Label name (hover for the full name, voxel counts and Jaccard)"),
    (
        "Dice\naffine",
        "Dice 2|F∩A| / (|F| + |A|) of the fixed labels F and the moving labels A moved by "
        "the affine prealignment alone",
    ),
    (
        "Dice\nSyN",
        "Dice 2|F∩W| / (|F| + |W|) of the fixed labels F and the moving labels W warped by "
        "the whole registration (prealignment and SyN)",
    ),
    ("gain", "Dice after SyN minus Dice after the affine stage"),
)
ID, NAME, AFFINE, SYN, GAIN = range(len(COLUMNS))
ROW_HEIGHT = 20  # pixels
# FreeSurfer names shortened for the table's width (the full name is the cell's tooltip).
SHORT_NAMES = (
    ("Left-", "L "),
    ("Right-", "R "),
    ("ctx-lh-", "L "),
    ("ctx-rh-", "R "),
    ("Cerebral-White-Matter", "cerebral WM"),
    ("Cerebellum-White-Matter", "cerebellum WM"),
    ("Cerebral-Cortex", "cortex"),
    ("Cerebellum-Cortex", "cerebellum cortex"),
    ("Lateral-Ventricle", "lat. ventricle"),
    ("Inf-Lat-Vent", "inf. lat. ventricle"),
    ("VentralDC", "ventral DC"),
)
# Room the style leaves around a cell's text (Qt elides text wider than the cell less this).
CELL_PADDING = 12


def short_name(name):
    """A FreeSurfer label name as the table shows it ("Left-Cerebral-Cortex": "L cortex",
    "ctx-lh-insula": "L insula").
    """
    for long, short in SHORT_NAMES:
        name = name.replace(long, short)
    return name


def relative_luminance(colour):
    """The WCAG relative luminance (0 black to 1 white) of a QColor."""
    linear = [
        c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
        for c in (colour.redF(), colour.greenF(), colour.blueF())
    ]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def text_colour(background):
    """Black or white, whichever contrasts more with the QColor `background` (by the WCAG
    contrast ratio, at least 4.6 for any background).
    """
    luminance = relative_luminance(background)
    on_black = (luminance + 0.05) / 0.05
    on_white = 1.05 / (luminance + 0.05)
    return QColor("black") if on_black > on_white else QColor("white")


def dice_qcolor(value):
    """The QColor of a Dice value on the Dice map's scale."""
    return QColor.fromRgbF(*dice_colour(value))


class NumericItem(QTableWidgetItem):
    """A table cell that sorts by its number (NaN below every number)."""

    def __init__(self, value, text):
        super().__init__(text)
        self.value = value
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def _key(self):
        return -math.inf if math.isnan(self.value) else self.value

    def __lt__(self, other):
        if isinstance(other, NumericItem):
            return self._key() < other._key()
        return super().__lt__(other)


class LabelTable(QTableWidget):
    """The per-label table of a run's LabelScores.

    It asks for little height: it stretches into the room the dock has, and a tall
    preferred height made the whole panel scroll on a 1280x800 screen (the wrapped summary
    text makes the panel's scroll area lay it out at preferred heights).
    """

    def __init__(self, parent=None):
        super().__init__(0, len(COLUMNS), parent)
        for column, (header, tip) in enumerate(COLUMNS):
            item = QTableWidgetItem(header)
            item.setToolTip(tip)
            self.setHorizontalHeaderItem(column, item)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(ROW_HEIGHT)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        header.setSectionResizeMode(NAME, QHeaderView.ResizeMode.Stretch)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSortingEnabled(True)
        self.setMinimumHeight(80)
        self._fit_columns()
        self.setToolTip("Click a row to show only that label and centre the view on it")
        # Every sort (a header click, or a new run's) starts from the top: the worst labels.
        self.model().layoutChanged.connect(self.scrollToTop)

    def _fit_columns(self):
        """Numbers' columns as narrow as their text, and the table wide enough for the
        longest name of any SynthSeg label as shown (the name column takes the rest).
        """
        metrics = self.fontMetrics()
        header = self.horizontalHeader()
        # The sorted column's header also holds the sort arrow.
        arrow = self.style().pixelMetric(QStyle.PixelMetric.PM_HeaderMarkSize) + 4
        for column in (ID, AFFINE, SYN, GAIN):
            cell = metrics.horizontalAdvance("0000" if column == ID else "+0.000")
            title = max(metrics.horizontalAdvance(line) for line in COLUMNS[column][0].split("\n"))
            header.resizeSection(column, max(cell, title + arrow) + CELL_PADDING)
        name = max(metrics.horizontalAdvance(short_name(n)) for n in LABEL_NAMES.values())
        scroll_bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
        others = sum(header.sectionSize(c) for c in (ID, AFFINE, SYN, GAIN))
        self.setMinimumWidth(others + name + CELL_PADDING + scroll_bar + 2 * self.frameWidth())

    def changeEvent(self, event):
        """A new font or style (napari's style sheet, once docked): fit the columns again."""
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self._fit_columns()
        super().changeEvent(event)

    def sizeHint(self):
        """The minimum height (see the class)."""
        hint = super().sizeHint()
        return QSize(hint.width(), self.minimumHeight())

    def show_scores(self, scores):
        """Fill the table with a list of LabelScore, sorted worst first."""
        self.setSortingEnabled(False)
        self.setRowCount(len(scores))
        for row, score in enumerate(scores):
            label = NumericItem(score.label, str(score.label))
            name = QTableWidgetItem(short_name(score.name))
            name.setToolTip(
                f"{score.name} (id {score.label})\n"
                f"voxels: {score.fixed_voxels} fixed, {score.warped_voxels} warped\n"
                f"Jaccard after SyN: {score.jaccard:.3f}"
            )
            cells = [label, name, _dice_item(score.affine), _dice_item(score.syn)]
            gain = NumericItem(score.gain, "" if math.isnan(score.gain) else f"{score.gain:+.3f}")
            for column, item in enumerate([*cells, gain]):
                self.setItem(row, column, item)
        self.setSortingEnabled(True)
        self.sortItems(SYN, Qt.SortOrder.AscendingOrder)
        self.scrollToTop()


def _dice_item(value):
    """A Dice cell filled by its value's colour, its text black or white to read on it."""
    if math.isnan(value):
        return NumericItem(value, "")
    item = NumericItem(value, f"{value:.3f}")
    background = dice_qcolor(value)
    item.setBackground(background)
    item.setForeground(text_colour(background))
    return item
