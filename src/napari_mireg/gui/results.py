"""The results panel: the run's summary, the per-label Dice table and plot, the exports.

One compact panel: the totals (time, MI, folds, det J, whole-brain and mean Dice after the
affine stage and after SyN) are in the summary text; below it the per-label Dice table
(`label_table`) or plot (`label_plot`), one at a time; a click on a table row or a plot
column asks the view to show that label. Without both label maps there are no scores: the
table and the plot are hidden and the text says what would give them.
"""

import html
import time

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QButtonGroup,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from napari_mireg.gui.exports import ExportPanel
from napari_mireg.gui.label_plot import DicePlot
from napari_mireg.gui.label_table import ID, LabelTable

NO_LABELS = (
    "Label maps of both images (e.g. SynthSeg's) give each label's Dice after the affine "
    "stage and after SyN: choose fixed and moving labels before Run."
)
NO_FIXED_LABELS = (
    "No fixed labels: the warped labels are shown, with no scores (fixed labels would give "
    "each label's Dice)."
)


def describe(summary, seconds=None, title=""):
    """The summary of a RunSummary as rich text: title, time, whole-brain and mean Dice
    after the affine stage and after SyN, MI, det J and folds.

    Parameters
    ----------
    summary : RunSummary
    seconds : float, optional
        Wall-clock time of the whole run, from Run to the result shown.
    title : str
        First line (plain text), e.g. which images.
    """
    result = summary.result
    lines = [f"<b>{html.escape(title)}</b>"] if title else []
    registration = result.timings.get("total")
    if seconds is not None:
        engine = "" if registration is None else f" (registration {registration:.1f} s)"
        lines.append(f"{seconds:.1f} s from Run to result{engine}")
    after, affine = summary.table, summary.quality.overlap_affine
    if after is not None and affine is not None:
        scores = _dice_table(affine, after)  # a table is a block: no line break around it
    else:
        lines.append(NO_FIXED_LABELS if summary.warped_labels is not None else NO_LABELS)
        scores = "<br>"
    regularity = [
        f"MI at full resolution (nats): {result.mi_before:.3f} before, {result.mi_after:.3f} after",
        f"det J from {summary.determinant.min():.2f} to {summary.determinant.max():.2f}; "
        f"folds (det J &lt;= 0): {summary.folds} voxels",
    ]
    return "<br>".join(lines) + scores + "<br>".join(regularity)


def _dice_table(affine, after):
    """Whole-brain and mean Dice after the affine stage and after SyN, as an HTML table."""
    right = ' align="right" style="padding-left:12px"'
    rows = [f"<tr><td>Dice</td><td{right}>affine</td><td{right}>SyN</td><td{right}>gain</td></tr>"]
    for name, before_syn, after_syn in (
        ("whole brain", affine.whole_dice, after.whole_dice),
        (f"mean of {len(after.rows)} labels", affine.mean_dice, after.mean_dice),
    ):
        rows.append(
            f"<tr><td>{name}</td><td{right}>{before_syn:.3f}</td>"
            f"<td{right}><b>{after_syn:.3f}</b></td>"
            f"<td{right}>{after_syn - before_syn:+.3f}</td></tr>"
        )
    return '<table cellspacing="0" cellpadding="0">' + "".join(rows) + "</table>"


def jaccard_tip(summary):
    """The summary's tooltip: the Jaccard totals after SyN (empty without scores)."""
    table = summary.table
    if table is None:
        return ""
    return (
        f"Jaccard after SyN: whole brain {table.whole_jaccard:.3f}, mean over labels "
        f"{table.mean_jaccard:.3f}"
    )


class ResultsPanel(QWidget):
    """Summary, per-label Dice plot and table, and exports (:class:`ExportPanel`) of the
    last run.

    Signals
    -------
    label_clicked(int)
        A table row or plot column was clicked: its label id (-1 when the selected label
        is clicked again, to show every label).
    """

    label_clicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.summary = None  # the RunSummary shown
        self.fixed_affine = None  # display grid of the run's fixed image
        self._selected = None
        self._started = None  # time.perf_counter() when Run was pressed
        self._seconds = None  # the shown run's time from Run to result
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.text = QLabel("No results yet.")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.text)
        self.table = LabelTable()
        self.table.cellClicked.connect(self._row_clicked)
        self.plot = DicePlot()
        self.plot.label_clicked.connect(self._plot_clicked)
        layout.addWidget(self._scores_view(), 1)
        self.exports = ExportPanel()
        layout.addWidget(self.exports)
        self.clear("No results yet.")

    def _scores_view(self):
        """The per-label scores: a table or a plot, one at a time (a 1280x800 screen has
        room for one of them beside the summary and the exports).
        """
        self.scores_view = QWidget()
        # Hidden (no labels), it keeps its room: the dock keeps its width from run to run.
        policy = self.scores_view.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.scores_view.setSizePolicy(policy)
        layout = QVBoxLayout(self.scores_view)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Dice per label:"))
        self.scores_buttons = QButtonGroup(self)
        self.scores_stack = QStackedWidget()
        tips = (
            "One row per label, worst first; click a header to sort, a row to show the label",
            "Every label's Dice after the affine stage (grey) and after SyN (coloured), "
            "worst first; hover for the name, click to show the label",
        )
        for index, (text, page, tip) in enumerate(
            (("Table", self.table, tips[0]), ("Plot", self.plot, tips[1]))
        ):
            button = QPushButton(text)
            button.setCheckable(True)
            button.setChecked(index == 0)
            button.setToolTip(tip)
            button.clicked.connect(lambda _, p=page: self.scores_stack.setCurrentWidget(p))
            self.scores_buttons.addButton(button, index)
            row.addWidget(button)
            self.scores_stack.addWidget(page)
        layout.addLayout(row)
        layout.addWidget(self.scores_stack, 1)
        return self.scores_view

    # ------------------------------------------------------------------ contents
    def begin(self, message, started=None):
        """A run starts: show no results, say `message`; the run's time counts from
        `started` (time.perf_counter(), default now).
        """
        self.clear(message)
        self._started = time.perf_counter() if started is None else started
        self._seconds = None

    def clear(self, message=""):
        """Show no results (a new run, a cancelled or failed one); `message` says why."""
        self.summary = None
        self._selected = None
        self.text.setText(html.escape(message))
        self.text.setToolTip("")
        self.table.setRowCount(0)
        self.plot.show_scores([])
        self.scores_view.setVisible(False)
        self.exports.clear()

    def show_summary(self, summary, fixed_affine, title=""):
        """Show a RunSummary: text (with the time since `begin`), plot and table (worst
        first), exports enabled.
        """
        self.summary = summary
        self.fixed_affine = fixed_affine
        self._selected = None
        scores = summary.scores
        self.table.show_scores(scores or [])
        self.plot.show_scores(scores or [])
        self.scores_view.setVisible(bool(scores))
        self.exports.show_summary(summary, fixed_affine)
        if self._started is not None:  # the run's first showing ends its time
            self._seconds = time.perf_counter() - self._started
            self._started = None
        self.text.setText(describe(summary, self._seconds, title))
        self.text.setToolTip(jaccard_tip(summary))

    def _row_clicked(self, row, _column):
        label = int(self.table.item(row, ID).value)
        if label == self._selected:  # a second click shows every label again
            self._selected = None
            self.table.clearSelection()
            self.plot.select(None)
            self.label_clicked.emit(-1)
        else:
            self._selected = label
            self.plot.select(label)
            self.label_clicked.emit(label)

    def _plot_clicked(self, label):
        row = next(
            (r for r in range(self.table.rowCount()) if self.table.item(r, ID).value == label),
            None,
        )
        if row is None:
            return
        if label != self._selected:
            self.table.selectRow(row)
            self.table.scrollToItem(self.table.item(row, ID))
        self._row_clicked(row, ID)
