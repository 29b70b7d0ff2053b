"""The inputs of a run: the layer pickers, "Open files...", and the checks of a choice.

The pickers hold layer names, which are unique in a viewer: layers are compared by name,
since a widget docked from napari's Plugins menu gets a proxy viewer whose every lookup
makes a new proxy object of a layer.
"""

from dataclasses import dataclass

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
)

from napari_mireg.gui.display import display_affine, layer_volume, original_grid
from napari_mireg.gui.frames import LiveRun
from napari_mireg.gui.live_layers import is_result_layer
from napari_mireg.gui.reader import read_volume

NONE = "(none)"
READ_AS = {"as the values say": None, "as image": "image", "as labels": "labels"}


@dataclass
class InputLayers:
    """The layers chosen for a run (labels None when not chosen)."""

    fixed: object
    moving: object
    fixed_labels: object = None
    moving_labels: object = None


def _same_grid(first, second):
    return np.shape(first.data) == np.shape(second.data) and np.allclose(
        display_affine(first), display_affine(second), atol=1e-3
    )


class InputsBox(QGroupBox):
    """The fixed and moving images and labels of a run, picked from the viewer's layers.

    Parameters
    ----------
    viewer : napari.Viewer
    """

    def __init__(self, viewer):
        super().__init__("Inputs")
        self.viewer = viewer
        form = QFormLayout(self)
        form.setVerticalSpacing(3)
        self.fixed_choice, self.moving_choice = QComboBox(), QComboBox()
        self.fixed_labels_choice, self.moving_labels_choice = QComboBox(), QComboBox()
        tips = (
            (self.fixed_choice, "Fixed image", "The reference image: results are on its grid"),
            (self.moving_choice, "Moving image", "The image warped onto the fixed one"),
            (
                self.fixed_labels_choice,
                "Fixed labels",
                "Labels of the fixed image (same grid), for the Dice table; optional",
            ),
            (
                self.moving_labels_choice,
                "Moving labels",
                "Labels of the moving image (same grid), warped with it; optional",
            ),
        )
        for choice, name, tip in tips:
            choice.setToolTip(tip)
            choice.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            choice.setMinimumContentsLength(12)
            form.addRow(name, choice)
        row = QHBoxLayout()
        open_button = QPushButton("Open files...")
        open_button.setToolTip("Open NIfTI or FreeSurfer MGZ volumes")
        open_button.clicked.connect(self._open_files)
        self.read_as = QComboBox()
        self.read_as.addItems(list(READ_AS))
        self.read_as.setToolTip(
            "Integer volumes are labels when their values are FreeSurfer/SynthSeg ids or "
            "few, or their name says so (synthseg, aseg, _seg, label, dseg); anything "
            "else, a uint8 T1 included, is an image. Force either here"
        )
        row.addWidget(open_button)
        row.addWidget(self.read_as, 1)
        form.addRow(row)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh)
        self.refresh()

    def refresh(self, *_):
        """Fill the pickers from the viewer (images and labels, results left out).

        A picker keeps its choice while that layer exists; "(none)" is a choice too.
        """
        inputs = [layer for layer in self.viewer.layers if not is_result_layer(layer)]
        images = [layer.name for layer in inputs if isinstance(layer, Image)]
        labels = [layer.name for layer in inputs if isinstance(layer, Labels)]
        defaults = [
            (self.fixed_choice, images, 0, False),
            (self.moving_choice, images, 1, False),
            (self.fixed_labels_choice, labels, 0, True),
            (self.moving_labels_choice, labels, 1, True),
        ]
        for choice, names, position, optional in defaults:
            current = choice.currentText()
            choice.blockSignals(True)
            choice.clear()
            choice.addItems(([NONE] if optional else []) + names)
            if current in names or (optional and current == NONE):
                choice.setCurrentText(current)
            elif len(names) > position:
                choice.setCurrentText(names[position])
            choice.blockSignals(False)

    def _open_files(self):
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Open volumes", "", "Volumes (*.nii *.nii.gz *.mgz *.mgh)"
        )
        if paths:
            self.open_files(paths, READ_AS[self.read_as.currentText()])

    def open_files(self, paths, kind=None):
        """Open volumes as layers: `kind` "image" or "labels", or None to let the values
        decide (see `reader.looks_like_labels`). Returns the new layers.
        """
        layers = []
        for path in paths:
            try:
                data, kwargs, layer_kind = read_volume(path, kind)
            except (OSError, ValueError) as error:
                show_error(f"Cannot open {path}: {error}")
                continue
            layers.append(getattr(self.viewer, f"add_{layer_kind}")(data, **kwargs))
        return layers

    def names(self):
        """The names of the chosen fixed and moving images."""
        return self.fixed_choice.currentText(), self.moving_choice.currentText()

    def _layer(self, choice):
        name = choice.currentText()
        return None if name in ("", NONE) else self.viewer.layers[name]

    def chosen(self):
        """The chosen layers; ValueError with the reason if they cannot be registered."""
        fixed_name, moving_name = self.names()
        fixed, moving = self._layer(self.fixed_choice), self._layer(self.moving_choice)
        if fixed is None or moving is None:
            raise ValueError("choose a fixed and a moving image layer")
        if fixed_name == moving_name:
            raise ValueError(
                f"the fixed and moving images are the same layer ({fixed_name}): choose two images"
            )
        chosen = InputLayers(
            fixed,
            moving,
            self._layer(self.fixed_labels_choice),
            self._layer(self.moving_labels_choice),
        )
        for labels, image, role in (
            (chosen.fixed_labels, fixed, "fixed"),
            (chosen.moving_labels, moving, "moving"),
        ):
            if labels is not None and not _same_grid(labels, image):
                raise ValueError(
                    f"the {role} labels {labels.name} {np.shape(labels.data)} are not on the "
                    f"grid of the {role} image {image.name} {np.shape(image.data)}"
                )
        return chosen

    def live_run(self, options, initial=None):
        """The chosen layers and the chosen layers' LiveRun with `options`, continuing the
        map `initial` if given; ValueError with the reason if they cannot be registered.
        """
        chosen = self.chosen()
        fixed, moving = layer_volume(chosen.fixed), layer_volume(chosen.moving)
        if fixed.ndim != moving.ndim:
            raise ValueError(
                f"{chosen.fixed.name} is {fixed.ndim}D but {chosen.moving.name} is {moving.ndim}D"
            )
        labels = {
            role: None if layer is None else layer_volume(layer, labels=True)
            for role, layer in (("fixed", chosen.fixed_labels), ("moving", chosen.moving_labels))
        }
        run = LiveRun(
            fixed,
            moving,
            labels["moving"],
            options,
            initial,
            fixed_labels=labels["fixed"],
            export_grid=original_grid(chosen.fixed) if fixed.ndim == 3 else None,
        )
        return chosen, run
