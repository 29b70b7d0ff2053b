"""The exports of the last run: one button per output file, each asking for a file name."""

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog, QGridLayout, QPushButton, QWidget

from napari_mireg import files
from napari_mireg.gui.display import on_grid


class ExportPanel(QWidget):
    """Export buttons of the last run's outputs, on the fixed file's grid."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.summary = None  # the RunSummary exported
        self.fixed_affine = None  # display grid of the run's fixed image
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        self.export_buttons = []
        exports = [
            ("Overlap CSV...", self.export_table, "overlap.csv"),
            ("Forward warp...", self.export_forward, "warp.nii.gz"),
            ("Inverse warp...", self.export_inverse, "inverse_warp.nii.gz"),
            ("Affine...", self.export_affine, "affine.txt"),
            ("Warped image...", self.export_warped, "warped.nii.gz"),
            ("Warped labels...", self.export_warped_labels, "warped_labels.nii.gz"),
        ]
        tips = {
            "Forward warp...": "Displacement field (ITK/ANTs, mm, on the fixed file's grid); "
            "use it after the affine, as antsApplyTransforms -t warp -t affine",
            "Inverse warp...": "The inverse displacement field (fixed to moving direction)",
            "Affine...": "The prealignment as an ITK transform (.txt or .mat)",
        }
        for index, (text, export, default) in enumerate(exports):
            button = QPushButton(text)
            button.setToolTip(tips.get(text, f"Write {default} on the fixed file's grid"))
            button.clicked.connect(lambda _, e=export, d=default: self._export_with_dialog(e, d))
            grid.addWidget(button, index // 3, index % 3)
            self.export_buttons.append(button)
        self.clear()

    def clear(self):
        """Nothing to export (a new run, a cancelled or failed one)."""
        self.summary = None
        for button in self.export_buttons:
            button.setEnabled(False)

    def show_summary(self, summary, fixed_affine):
        """Export this RunSummary (its display grid's matrix `fixed_affine`)."""
        self.summary = summary
        self.fixed_affine = fixed_affine
        for button in self.export_buttons:
            button.setEnabled(True)
        self.export_buttons[0].setEnabled(summary.table is not None)
        self.export_buttons[5].setEnabled(summary.warped_labels is not None)

    def _export_with_dialog(self, export, default):
        path, _ = QFileDialog.getSaveFileName(self, "Export", default)
        if path:
            try:
                export(path)
                show_info(f"Wrote {path}")
            except (OSError, ValueError) as error:
                show_error(f"Export failed: {error}")

    def _mapping(self):
        if self.summary is None or self.summary.export_mapping is None:
            raise ValueError("there is no result to export: run a registration first")
        return self.summary.export_mapping

    def export_forward(self, path):
        """Write the forward warp (ITK/ANTs) on the fixed file's grid."""
        files.save_displacement(self._mapping(), path, "forward")

    def export_inverse(self, path):
        """Write the inverse warp (ITK/ANTs) on the fixed file's grid."""
        files.save_displacement(self._mapping(), path, "inverse")

    def export_affine(self, path):
        """Write the prealignment as an ITK affine (.txt or .mat)."""
        self._mapping()
        files.save_affine(self.summary.result.prealignment, path)

    def export_warped(self, path):
        """Write the warped moving image on the fixed file's grid."""
        grid = self._mapping().fixed_grid
        warped = on_grid(self.summary.result.warped, self.fixed_affine, grid)
        files.save_volume(path, warped, grid.affine)

    def export_warped_labels(self, path):
        """Write the warped moving labels on the fixed file's grid."""
        grid = self._mapping().fixed_grid
        if self.summary.warped_labels is None:
            raise ValueError("there are no warped labels: choose moving labels and run")
        labels = on_grid(self.summary.warped_labels, self.fixed_affine, grid, "nearest")
        files.save_volume(path, labels, grid.affine, labels=True)

    def export_table(self, path):
        """Write the overlap table as CSV."""
        if self.summary is None or self.summary.table is None:
            raise ValueError("there is no overlap table: choose fixed and moving labels")
        files.write_text(path, self.summary.table.to_csv_text())
