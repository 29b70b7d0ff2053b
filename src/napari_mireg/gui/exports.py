"""The exports of the last run: "Export all" into a folder, or one file at a time.

"Export all" writes the file set of ``mireg register`` (:data:`OUTPUT_FILES`) through the
same writer (:func:`napari_mireg.cli.jobs.save_output_set`): the same files, formats and
``report.json``, and the same output-folder promises (a lock, no file mireg did not write
replaced, the set swapped in at once). Every export is written in a worker thread, so the
window stays responsive; the buttons wait while one is written and a status line says how
it went. Everything is on the fixed file's own grid.
"""

import dataclasses

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_mireg import files
from napari_mireg.cli import jobs
from napari_mireg.engine import masks
from napari_mireg.gui.display import on_grid
from napari_mireg.gui.frames import ENGINE_NICENESS, lower_thread_priority

OUTPUT_FILES = jobs.OUTPUT_FILES


def _need_mapping(summary):
    """The map on the fixed file's grid, or ValueError when there is nothing to export."""
    if summary is None or summary.export_mapping is None:
        raise ValueError("there is no result to export: run a registration first")
    return summary.export_mapping


def on_file_grid(summary, fixed_affine):
    """The run's Result and Quality with their images on the fixed file's own grid.

    Parameters
    ----------
    summary : RunSummary
    fixed_affine : ndarray (4, 4)
        The fixed display grid's matrix (where the summary's images lie).

    Returns
    -------
    grid : Volume
        The fixed file's grid.
    result : Result
        Warped image on `grid`, the map with its fields on `grid`.
    quality : Quality
        Warped labels on `grid` (the scores are the run's).
    """
    mapping = _need_mapping(summary)
    grid = mapping.fixed_grid
    result = dataclasses.replace(
        summary.result,
        warped=on_grid(summary.result.warped, fixed_affine, grid),
        mapping=mapping,
    )
    labels = summary.quality.warped_labels
    quality = dataclasses.replace(
        summary.quality,
        warped_labels=None if labels is None else on_grid(labels, fixed_affine, grid, "nearest"),
    )
    return grid, result, quality


def layer_path(layer):
    """The file a layer was read from, or None."""
    if layer is None:
        return None
    path = layer.metadata.get("path") or getattr(layer.source, "path", None)
    return str(path) if path else None


def run_report(layers, options):
    """What ``report.json`` says of a widget run's inputs (the rest comes from the result).

    Parameters
    ----------
    layers : InputLayers
        The run's layers (fixed, moving and the label maps or None).
    options : RegistrationOptions

    Returns
    -------
    dict
        "inputs" (each layer's name and file), "parameters", "metric_masks".
    """
    inputs = {}
    for role in ("fixed", "moving", "fixed_labels", "moving_labels", "fixed_mask", "moving_mask"):
        layer = getattr(layers, role)
        if layer is not None:
            inputs[role] = {"layer": layer.name, "path": layer_path(layer)}
    # mask_source prefers a side's mask, then its labels, to ROBEX: as the engine does.
    asked = masks.extraction_sides(options.brain_extraction)
    sources = {
        side: jobs.mask_source(
            getattr(layers, f"{side}_mask"), getattr(layers, f"{side}_labels"), asked[index]
        )
        for index, side in enumerate(("fixed", "moving"))
    }
    return {"inputs": inputs, "parameters": options.as_dict(), "metric_masks": sources}


def export_all(folder, summary, fixed_affine, report, inputs=None):
    """Write the ``mireg register`` file set of a widget run into `folder`.

    Parameters
    ----------
    folder : str or Path
    summary : RunSummary
    fixed_affine : ndarray (4, 4)
        The fixed display grid's matrix.
    report : dict
        :func:`run_report` of the run.
    inputs : dict of str, optional
        The input files by role (none may be replaced by the outputs).

    Returns
    -------
    dict
        The report written (its "outputs" list the files).
    """
    grid, result, quality = on_file_grid(summary, fixed_affine)
    return jobs.save_output_set(folder, grid, result, quality, report, inputs)


def _outcome(write):
    """Run `write()`; a refused or failed write is an outcome, not an error to raise.

    Returns ``(True, what write() says it wrote)``, or ``(False, message)`` for an OSError
    or ValueError (a bad folder, a full disk, a file mireg did not write in the way,
    nothing to export).
    """
    # As the registration's worker: the viewer's thread comes first (the resampling onto
    # the file's grid runs on every core).
    lower_thread_priority(ENGINE_NICENESS)
    try:
        return True, write()
    except (OSError, ValueError) as error:
        return False, str(error)


class ExportPanel(QWidget):
    """Export buttons of the last run's outputs; the writing happens in a worker thread.

    Signals
    -------
    finished(bool, str)
        An export ended: whether it succeeded, and what the status line says.
    """

    finished = Signal(bool, str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.summary = None  # the RunSummary exported
        self.fixed_affine = None  # display grid of the run's fixed image
        self.report = None  # run_report of the run
        self.input_files = {}  # the run's input files by role
        self.worker = None  # the export being written
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.all_button = QPushButton("Export all...")
        self.all_button.setToolTip(
            "Write the files of `mireg register` into a folder: "
            + ", ".join(sorted(OUTPUT_FILES.values()))
        )
        self.all_button.clicked.connect(self._export_all_with_dialog)
        # The status line beside "Export all", in one row: the panel must fit a 1280x800
        # screen. Its text never resizes the dock (a resize redraws the whole window): its
        # width is what the row leaves, the full text its tooltip.
        self.status = QLabel("")
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        row = QHBoxLayout()
        row.addWidget(self.all_button)
        row.addWidget(self.status, 1)
        layout.addLayout(row)
        grid = QGridLayout()
        self.export_buttons = []
        exports = [
            ("Overlap CSV...", self.export_table, OUTPUT_FILES["overlap"]),
            ("Forward warp...", self.export_forward, OUTPUT_FILES["warp"]),
            ("Inverse warp...", self.export_inverse, OUTPUT_FILES["inverse_warp"]),
            ("Affine...", self.export_affine, OUTPUT_FILES["affine"]),
            ("Warped image...", self.export_warped, OUTPUT_FILES["warped"]),
            ("Warped labels...", self.export_warped_labels, OUTPUT_FILES["warped_labels"]),
        ]
        tips = {
            "Forward warp...": "Displacement field (ITK/ANTs, mm, on the fixed file's grid); "
            "use it after the affine, as antsApplyTransforms -t warp -t affine",
            "Inverse warp...": "The inverse displacement field (fixed to moving direction)",
            "Affine...": "The prealignment as an ITK transform: .txt (text) or .mat (ANTs' "
            "binary, which ANTsPy can invert)",
        }
        for index, (text, export, default) in enumerate(exports):
            button = QPushButton(text)
            button.setToolTip(tips.get(text, f"Write {default} on the fixed file's grid"))
            button.clicked.connect(lambda _, e=export, d=default: self._export_with_dialog(e, d))
            grid.addWidget(button, index // 3, index % 3)
            self.export_buttons.append(button)
        layout.addLayout(grid)
        self.clear()

    # ------------------------------------------------------------------ state
    @property
    def busy(self):
        """True while an export is written."""
        return self.worker is not None

    def set_inputs(self, layers, options):
        """The layers and options of the run whose results will be exported."""
        self.report = run_report(layers, options)
        self.input_files = {
            role: entry["path"] for role, entry in self.report["inputs"].items() if entry["path"]
        }

    def clear(self):
        """Nothing to export (a new run, a cancelled or failed one)."""
        self.summary = None
        self._enable()

    def show_summary(self, summary, fixed_affine):
        """Export this RunSummary (its display grid's matrix `fixed_affine`)."""
        self.summary = summary
        self.fixed_affine = fixed_affine
        self._say("")
        self._enable()

    def _enable(self):
        """Buttons for what the summary has, none while an export is written."""
        summary = None if self.busy else self.summary
        self.all_button.setEnabled(summary is not None and summary.export_mapping is not None)
        for button in self.export_buttons:
            button.setEnabled(summary is not None)
        self.export_buttons[0].setEnabled(summary is not None and summary.table is not None)
        self.export_buttons[5].setEnabled(summary is not None and summary.warped_labels is not None)

    # ------------------------------------------------------------------ writing
    def _export_all_with_dialog(self):
        folder = QFileDialog.getExistingDirectory(self, "Export all into a folder")
        if folder:
            self.export_all(folder)

    def _export_with_dialog(self, export, default):
        path, _ = QFileDialog.getSaveFileName(self, "Export", default)
        if path:
            self.export_file(export, path)

    def export_file(self, export, path):
        """Write one file with `export` (an ``export_*`` method) in a worker thread.

        Returns
        -------
        worker or None
            As :meth:`write`.
        """
        summary, affine = self.summary, self.fixed_affine  # as they are now: a run may follow

        def write():
            export(path, summary, affine)
            return f"Wrote {path}"

        return self.write(write, f"Writing {path}...")

    def export_all(self, folder):
        """Write the ``mireg register`` file set into `folder`, in a worker thread.

        Returns
        -------
        worker or None
            The worker writing (None when there is nothing to export or one is written).
        """
        summary, affine, inputs = self.summary, self.fixed_affine, dict(self.input_files)
        report = self.report or {"inputs": {}, "parameters": None, "metric_masks": None}

        def write():
            written = export_all(folder, summary, affine, report, inputs)["outputs"]
            return f"Wrote {len(written)} files into {folder}: {', '.join(written)}"

        return self.write(write, f"Writing the outputs into {folder}...")

    def write(self, write, doing):
        """Run `write()` in a worker thread; the buttons wait and the status line tells.

        Parameters
        ----------
        write : callable
            Writes the files (called in the worker thread); returns the status line to
            show when done.
        doing : str
            The status line while writing.

        Returns
        -------
        worker or None
            None when another export is being written.
        """
        if self.busy:
            return None
        self.worker = create_worker(_outcome, write, _start_thread=False)
        self.worker.returned.connect(self._written)
        self.worker.finished.connect(self._idle)
        self._say(doing)
        self._enable()
        self.worker.start()
        return self.worker

    def _written(self, outcome):
        succeeded, message = outcome
        if not succeeded:
            message = f"Export failed: {message}"
            show_error(message)
        self._say(message)
        self.finished.emit(succeeded, message)

    def _say(self, text):
        self.status.setText(text)
        self.status.setToolTip(text)

    def _idle(self):
        self.worker = None
        self._enable()

    # ------------------------------------------------------------------ single files
    # Each takes the summary and display matrix to write (default: the panel's own), so a
    # file written in the background keeps to the run it was asked for.
    def export_forward(self, path, summary=None, fixed_affine=None):
        """Write the forward warp (ITK/ANTs) on the fixed file's grid."""
        files.save_displacement(_need_mapping(summary or self.summary), path, "forward")

    def export_inverse(self, path, summary=None, fixed_affine=None):
        """Write the inverse warp (ITK/ANTs) on the fixed file's grid."""
        files.save_displacement(_need_mapping(summary or self.summary), path, "inverse")

    def export_affine(self, path, summary=None, fixed_affine=None):
        """Write the prealignment as an ITK affine (.txt, or ANTs' binary .mat)."""
        summary = summary or self.summary
        _need_mapping(summary)
        files.save_affine(summary.result.prealignment, path)

    def export_warped(self, path, summary=None, fixed_affine=None):
        """Write the warped moving image on the fixed file's grid."""
        summary = summary or self.summary
        grid = _need_mapping(summary).fixed_grid
        affine = self.fixed_affine if fixed_affine is None else fixed_affine
        files.save_volume(path, on_grid(summary.result.warped, affine, grid), grid.affine)

    def export_warped_labels(self, path, summary=None, fixed_affine=None):
        """Write the warped moving labels on the fixed file's grid."""
        summary = summary or self.summary
        grid = _need_mapping(summary).fixed_grid
        if summary.warped_labels is None:
            raise ValueError("there are no warped labels: choose moving labels and run")
        affine = self.fixed_affine if fixed_affine is None else fixed_affine
        labels = on_grid(summary.warped_labels, affine, grid, "nearest")
        files.save_volume(path, labels, grid.affine, labels=True)

    def export_table(self, path, summary=None, fixed_affine=None):
        """Write the overlap table as CSV."""
        summary = summary or self.summary
        if summary is None or summary.table is None:
            raise ValueError("there is no overlap table: choose fixed and moving labels")
        files.write_text(path, summary.table.to_csv_text())
