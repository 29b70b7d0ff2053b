"""The Tools page: turn a layer into labels or back, clean a labels layer in the
background, and clear the layers of earlier runs.
"""

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QComboBox, QGroupBox, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from napari_mireg.gui.display import labels_colormap
from napari_mireg.gui.live_layers import is_result_layer
from napari_mireg.labels import clean_labels, label_values


class LayerTools(QWidget):
    """Convert a layer (image <-> labels) in place; clean a labels layer into a new one;
    remove the layers of earlier runs.

    Converting and cleaning are refused while a registration runs (`set_run_active`), as
    they change the layers a run may be reading.

    Parameters
    ----------
    viewer : napari.Viewer
    run_layers : RunLayers, optional
        The runs' layers, for "Clear earlier runs" (no such button without).
    """

    def __init__(self, viewer, run_layers=None):
        super().__init__()
        self.viewer = viewer
        self.run_layers = run_layers
        self.cleaning = None  # the worker of a label cleanup
        self.last_cleanup = None  # its CleanupChanges
        self._run_active = False
        layout = QVBoxLayout(self)
        convert = QGroupBox("Convert a layer (image <-> labels)")
        row = QHBoxLayout(convert)
        self.convert_choice = QComboBox()
        self.convert_button = QPushButton("Convert")
        self.convert_button.setToolTip(
            "An image becomes a labels layer (integer values only) and a labels layer an "
            "image, in place, for files the reader took for the other kind"
        )
        self.convert_button.clicked.connect(
            lambda: self.convert_layer(self.convert_choice.currentText())
        )
        row.addWidget(self.convert_choice, 1)
        row.addWidget(self.convert_button)
        layout.addWidget(convert)
        cleanup = QGroupBox("Clean labels (fill holes, remove islands)")
        row = QHBoxLayout(cleanup)
        self.cleanup_choice = QComboBox()
        self.cleanup_button = QPushButton("Clean")
        self.cleanup_button.setToolTip("Writes a new layer '<name> cleaned'")
        self.cleanup_button.clicked.connect(
            lambda: self.clean_layer(self.cleanup_choice.currentText())
        )
        row.addWidget(self.cleanup_choice, 1)
        row.addWidget(self.cleanup_button)
        layout.addWidget(cleanup)
        self.clear_button = None
        if run_layers is not None:
            results = QGroupBox("Result layers")
            row = QHBoxLayout(results)
            self.clear_button = QPushButton("Clear earlier runs")
            self.clear_button.setToolTip(
                "Remove the layers of every run but the last (R1 ..., R2 ...); the input "
                "layers stay"
            )
            self.clear_button.clicked.connect(self.clear_earlier_runs)
            row.addWidget(self.clear_button)
            row.addStretch()
            layout.addWidget(results)
        layout.addStretch()
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh)
        self.refresh()

    def refresh(self, *_):
        """Fill the pickers: any input layer to convert; input and result labels to clean."""
        layers = list(self.viewer.layers)
        inputs = [layer for layer in layers if not is_result_layer(layer)]
        for choice, names in (
            (self.cleanup_choice, [layer.name for layer in layers if isinstance(layer, Labels)]),
            (
                self.convert_choice,
                [layer.name for layer in inputs if isinstance(layer, (Image, Labels))],
            ),
        ):
            current = choice.currentText()
            choice.blockSignals(True)
            choice.clear()
            choice.addItems(names)
            if current in names:
                choice.setCurrentText(current)
            choice.blockSignals(False)
        if self.clear_button is not None:
            self.clear_button.setEnabled(bool(self.run_layers.earlier_layers()))

    def clear_earlier_runs(self):
        """Remove the layers of the runs before the last; returns how many were removed."""
        removed = self.run_layers.clear_earlier()
        if removed:
            show_info(f"Removed {removed} layers of earlier runs")
        return removed

    def set_run_active(self, active):
        """Refuse the tools while a registration runs."""
        self._run_active = active
        self.cleanup_button.setEnabled(not active and self.cleaning is None)
        self.convert_button.setEnabled(not active)

    def convert_layer(self, name):
        """Turn an Image layer into a Labels layer or back, in place; returns the new layer."""
        if name not in self.viewer.layers:
            show_error("Choose a layer to convert")
            return None
        layer = self.viewer.layers[name]
        kwargs = {
            "name": name,
            "scale": layer.scale,
            "translate": layer.translate,
            "metadata": dict(layer.metadata),
        }
        if isinstance(layer, Image):
            try:
                data = label_values(np.asarray(layer.data), name)
            except ValueError as error:
                show_error(f"Cannot make labels: {error}")
                return None
            new = Labels(data, colormap=labels_colormap(np.unique(data)), **kwargs)
        else:
            new = Image(np.asarray(layer.data, np.float32), colormap="gray", **kwargs)
        index = self.viewer.layers.index(layer)
        self.viewer.layers.remove(layer)
        self.viewer.layers.insert(index, new)
        show_info(f"{name} is now a {'labels' if isinstance(new, Labels) else 'image'} layer")
        return new

    def clean_layer(self, name):
        """Clean a labels layer into a new layer "<name> cleaned", in a worker thread (it
        took the window 0.8 s at 2 mm); returns the worker (None if there is no such layer).
        The layer and a notification of the changes come when it is done.
        """
        if name not in self.viewer.layers or not isinstance(self.viewer.layers[name], Labels):
            show_error("Choose a labels layer to clean")
            return None
        layer = self.viewer.layers[name]
        kwargs = {
            "name": f"{name} cleaned",
            "scale": layer.scale,
            "translate": layer.translate,
            "metadata": dict(layer.metadata),
            "colormap": layer.colormap,
        }
        self.cleanup_button.setEnabled(False)
        self.cleanup_button.setText("Cleaning...")
        worker = thread_worker(
            clean_labels,
            connect={
                "returned": lambda done: self._cleaned(name, kwargs, *done),
                "errored": lambda error: show_error(f"Cleaning {name} failed: {error}"),
                "finished": self._cleaning_finished,
            },
            start_thread=False,
        )(np.asarray(layer.data))
        self.cleaning = worker
        worker.start()
        return worker

    def _cleaned(self, name, kwargs, cleaned, changes):
        self.viewer.add_labels(cleaned, **kwargs)
        changed = [c for c in changes if c.island_voxels or c.holes_filled]
        lines = [
            f"{c.name}: {c.islands_removed} islands ({c.island_voxels} voxels), "
            f"{c.holes_filled} hole voxels"
            for c in changed
        ]
        self.last_cleanup = changes
        show_info(
            f"Cleaned {name}: {len(changed)} of {len(changes)} labels changed"
            + ("\n" + "\n".join(lines[:10]) if lines else "")
        )

    def _cleaning_finished(self):
        self.cleaning = None
        self.cleanup_button.setText("Clean")
        self.cleanup_button.setEnabled(not self._run_active)
