"""The results panel: the run's summary, the per-label table and the exports.

One compact panel: the totals (MI, folds, det J, whole-brain and mean Dice/Jaccard) are
in the summary text; the table has one row per label, its name column stretching and the
numeric columns as narrow as their contents, sortable; a click on a row asks the view to
show that label.
"""

import numpy as np
from qtpy.QtCore import QSize, Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_mireg.gui.exports import ExportPanel

# The table's columns: (header, tooltip, keys of the OverlapTable row shown).
TABLE_COLUMNS = (
    ("id", "FreeSurfer label id", ("label",)),
    ("name", "FreeSurfer label name (hover for the full name)", ("name",)),
    ("Dice", "2|F∩W| / (|F| + |W|), fixed labels F, warped moving labels W", ("dice",)),
    ("Jacc.", "Jaccard index |F∩W| / |F∪W|", ("jaccard",)),
    (
        "voxels F/W",
        "voxels of the label in the fixed / the warped moving labels (sorted by the fixed count)",
        ("fixed_voxels", "warped_voxels"),
    ),
)
NAME_COLUMN = 1
# FreeSurfer names shortened for the table's width (the full name is the cell's tooltip).
SHORT_NAMES = (
    ("Left-", "L "),
    ("Right-", "R "),
    ("Cerebral-White-Matter", "cerebral WM"),
    ("Cerebellum-White-Matter", "cerebellum WM"),
    ("Cerebral-Cortex", "cortex"),
    ("Cerebellum-Cortex", "cerebellum cortex"),
    ("Lateral-Ventricle", "lat. ventricle"),
    ("Inf-Lat-Vent", "inf. lat. ventricle"),
    ("VentralDC", "ventral DC"),
)


def short_name(name):
    """A FreeSurfer label name as the table shows it ("Left-Cerebral-Cortex": "L cortex")."""
    for long, short in SHORT_NAMES:
        name = name.replace(long, short)
    return name


class _LabelTable(QTableWidget):
    """The per-label table, asking for little height: it stretches into the room the dock
    has, and a tall preferred height made the whole panel scroll on a 1280x800 screen (the
    wrapped summary text makes the panel's scroll area lay it out at preferred heights).
    """

    def sizeHint(self):
        hint = super().sizeHint()
        return QSize(hint.width(), self.minimumHeight())


class NumericItem(QTableWidgetItem):
    """A table cell that sorts by its number."""

    def __init__(self, value, text):
        super().__init__(text)
        self.value = value

    def __lt__(self, other):
        return self.value < getattr(other, "value", 0)


def describe(summary):
    """The summary text of a RunSummary (MI, det J, folds, time, overlap totals)."""
    result = summary.result
    lines = [
        f"MI of the fixed and moving images (full resolution, nats): "
        f"{result.mi_before:.3f} before, {result.mi_after:.3f} after",
        f"det J from {summary.determinant.min():.2f} to {summary.determinant.max():.2f}; "
        f"folds (det J <= 0): {summary.folds} voxels",
    ]
    if summary.table is not None:
        table = summary.table
        lines.append(
            f"Dice whole brain {table.whole_dice:.3f}, mean over {len(table.rows)} labels "
            f"{table.mean_dice:.3f} (Jaccard {table.whole_jaccard:.3f} / "
            f"{table.mean_jaccard:.3f})"
        )
    elif summary.warped_labels is not None:
        lines.append("No fixed labels: the warped labels are shown, with no scores.")
    return "\n".join(lines)


class ResultsPanel(QWidget):
    """Summary, table and exports (:class:`ExportPanel`) of the last run.

    Signals
    -------
    label_clicked(int)
        A table row was clicked: its label id (-1 when the selected row is clicked again,
        to show every label).
    """

    label_clicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.summary = None  # the RunSummary shown
        self.fixed_affine = None  # display grid of the run's fixed image
        self._selected = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.text = QLabel("No results yet.")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.text)
        self.table = _LabelTable(0, len(TABLE_COLUMNS))
        for column, (header, tip, _) in enumerate(TABLE_COLUMNS):
            item = QTableWidgetItem(header)
            item.setToolTip(tip)
            self.table.setHorizontalHeaderItem(column, item)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(NAME_COLUMN, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(30)
        self.table.setMinimumWidth(360)  # every column, names of about 20 characters
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(True)
        self.table.setMinimumHeight(150)
        self.table.setToolTip("Click a row to show only that label and centre the view on it")
        self.table.cellClicked.connect(self._row_clicked)
        layout.addWidget(self.table, 1)
        self.exports = ExportPanel()
        layout.addWidget(self.exports)
        self.clear("No results yet.")

    # ------------------------------------------------------------------ contents
    def clear(self, message=""):
        """Show no results (a new run, a cancelled or failed one); `message` says why."""
        self.summary = None
        self._selected = None
        self.text.setText(message)
        self.table.setRowCount(0)
        self.exports.clear()

    def show_summary(self, summary, fixed_affine, title=""):
        """Show a RunSummary: text, table (sorted by label id), exports enabled."""
        self.summary = summary
        self.fixed_affine = fixed_affine
        self._selected = None
        self.text.setText((title + "\n" if title else "") + describe(summary))
        self.table.setSortingEnabled(False)
        rows = [] if summary.table is None else summary.table.rows
        self.table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            for column, (_, _, keys) in enumerate(TABLE_COLUMNS):
                value = row[keys[0]]
                if len(keys) == 2:
                    item = NumericItem(int(value), f"{value} / {row[keys[1]]}")
                elif isinstance(value, float):
                    item = NumericItem(value, f"{value:.3f}")
                elif isinstance(value, (int, np.integer)):
                    item = NumericItem(int(value), str(value))
                else:
                    item = NumericItem(0, short_name(str(value)))
                    item.setToolTip(str(value))
                self.table.setItem(index, column, item)
        self.table.setSortingEnabled(True)
        self.table.sortItems(0, Qt.SortOrder.AscendingOrder)
        self.exports.show_summary(summary, fixed_affine)

    def _row_clicked(self, row, _column):
        label = int(self.table.item(row, 0).value)
        if label == self._selected:  # a second click shows every label again
            self._selected = None
            self.table.clearSelection()
            self.label_clicked.emit(-1)
        else:
            self._selected = label
            self.label_clicked.emit(label)
