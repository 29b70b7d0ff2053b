"""The inputs of a run: the layer pickers, "Open files...", and the checks of a choice.

Each side (fixed, moving) has an image, optional labels and an optional mask. The pickers
hold layer names, which are unique in a viewer: layers are compared by name, since a widget
docked from napari's Plugins menu gets a proxy viewer whose every lookup makes a new proxy
object of a layer.
"""

from dataclasses import dataclass

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
)

from napari_mireg.engine.masks import extracted_sides
from napari_mireg.gui.display import display_affine, layer_volume, original_grid
from napari_mireg.gui.frames import LiveRun
from napari_mireg.gui.live_layers import is_result_layer
from napari_mireg.gui.reader import read_volume

NONE = "(none)"
READ_AS = {"as the values say": None, "as image": "image", "as labels": "labels"}


# Each row of pickers: (row label, kind, tooltip of the fixed and of the moving side).
# Kinds: "image" (Image layers), "labels" (Labels layers, optional), "mask" (Image or Labels
# layers, optional, never chosen by default).
ROWS = (
    (
        "Image",
        "image",
        "The reference image: results are on its grid",
        "The image warped onto the fixed one",
    ),
    (
        "Labels",
        "labels",
        "Labels of the fixed image (same grid), for the Dice table; optional",
        "Labels of the moving image (same grid), warped with it; optional",
    ),
    (
        "Mask",
        "mask",
        "Where the metric counts in the fixed image: any non-zero voxel of this layer (same "
        "grid) is inside. It wins over the mask made from the fixed labels and over brain "
        "extraction; optional",
        "Where the metric counts in the moving image: any non-zero voxel of this layer (same "
        "grid) is inside. It wins over the mask made from the moving labels and over brain "
        "extraction; optional",
    ),
)


@dataclass
class InputLayers:
    """The layers chosen for a run (labels and masks None when not chosen)."""

    fixed: object
    moving: object
    fixed_labels: object = None
    moving_labels: object = None
    fixed_mask: object = None
    moving_mask: object = None


def _same_grid(first, second):
    return np.shape(first.data) == np.shape(second.data) and np.allclose(
        display_affine(first), display_affine(second), atol=1e-3
    )


class InputsBox(QGroupBox):
    """The fixed and moving images, labels and masks of a run, picked from the viewer's
    layers.

    Signals
    -------
    changed()
        A choice changed (or the layers it names did).

    Parameters
    ----------
    viewer : napari.Viewer
    """

    changed = Signal()

    def __init__(self, viewer):
        super().__init__("Inputs")
        self.viewer = viewer
        grid = QGridLayout(self)
        grid.setVerticalSpacing(3)
        grid.addWidget(QLabel("Fixed"), 0, 1)
        grid.addWidget(QLabel("Moving"), 0, 2)
        self.pickers = {}  # (side, kind) -> its QComboBox
        for row, (name, kind, fixed_tip, moving_tip) in enumerate(ROWS, start=1):
            grid.addWidget(QLabel(name), row, 0)
            for column, (side, tip) in enumerate((("fixed", fixed_tip), ("moving", moving_tip))):
                choice = QComboBox()
                choice.setToolTip(tip)
                choice.setSizeAdjustPolicy(
                    QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
                )
                choice.setMinimumContentsLength(10)
                choice.currentTextChanged.connect(self.changed.emit)
                self.pickers[side, kind] = choice
                grid.addWidget(choice, row, column + 1)
        self.fixed_choice, self.moving_choice = self._side_pickers("image")
        self.fixed_labels_choice, self.moving_labels_choice = self._side_pickers("labels")
        self.fixed_mask_choice, self.moving_mask_choice = self._side_pickers("mask")
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(2, 1)
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
        grid.addLayout(row, len(ROWS) + 1, 0, 1, 3)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh)
        self.refresh()

    def refresh(self, *_):
        """Fill the pickers from the viewer (images, labels and masks, results left out).

        A picker keeps its choice while that layer exists; "(none)" is a choice too. An
        image or labels picker without a choice takes the first (fixed) or second (moving)
        layer of its kind; a mask picker stays at "(none)".
        """
        inputs = [layer for layer in self.viewer.layers if not is_result_layer(layer)]
        names = {
            "image": [layer.name for layer in inputs if isinstance(layer, Image)],
            "labels": [layer.name for layer in inputs if isinstance(layer, Labels)],
            "mask": [layer.name for layer in inputs if isinstance(layer, (Image, Labels))],
        }
        for (side, kind), choice in self.pickers.items():
            optional, position = kind != "image", 0 if side == "fixed" else 1
            current = choice.currentText()
            choice.blockSignals(True)
            choice.clear()
            choice.addItems(([NONE] if optional else []) + names[kind])
            if current in names[kind] or (optional and current == NONE):
                choice.setCurrentText(current)
            elif kind != "mask" and len(names[kind]) > position:
                choice.setCurrentText(names[kind][position])
            choice.blockSignals(False)
        self.changed.emit()

    def _side_pickers(self, kind):
        return self.pickers["fixed", kind], self.pickers["moving", kind]

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
            self._layer(self.fixed_mask_choice),
            self._layer(self.moving_mask_choice),
        )
        for layer, image, role in (
            (chosen.fixed_labels, fixed, "fixed labels"),
            (chosen.moving_labels, moving, "moving labels"),
            (chosen.fixed_mask, fixed, "fixed mask"),
            (chosen.moving_mask, moving, "moving mask"),
        ):
            if layer is not None and not _same_grid(layer, image):
                side, verb = role.split()[0], "are" if role.endswith("labels") else "is"
                raise ValueError(
                    f"the {role} {layer.name} {np.shape(layer.data)} {verb} not on the grid "
                    f"of the {side} image {image.name} {np.shape(image.data)}"
                )
        for mask, role in ((chosen.fixed_mask, "fixed mask"), (chosen.moving_mask, "moving mask")):
            if mask is not None and not np.any(np.asarray(mask.data)):
                raise ValueError(f"the {role} {mask.name} has no voxel inside (all zero)")
        return chosen

    def planned(self, options):
        """What the expected time of a run with `options` depends on: the fixed grid's
        shape (3D) and the sides that brain extraction will mask (those with neither labels
        nor a mask). ValueError without a fixed image.
        """
        fixed = self._layer(self.fixed_choice)
        if fixed is None:
            raise ValueError("choose a fixed image layer")
        shape = np.shape(fixed.data)
        extracted = extracted_sides(
            options.brain_extraction,
            *(
                self._layer(self.pickers[side, "labels"]) is not None
                or self._layer(self.pickers[side, "mask"]) is not None
                for side in ("fixed", "moving")
            ),
        )
        return (1,) * (3 - len(shape)) + tuple(shape[-3:]), extracted

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
        # A mask layer, Image or Labels: any non-zero voxel is inside.
        masks = {
            role: None if layer is None else layer_volume(layer, labels=True).data != 0
            for role, layer in (("fixed", chosen.fixed_mask), ("moving", chosen.moving_mask))
        }
        run = LiveRun(
            fixed,
            moving,
            labels["moving"],
            options,
            initial,
            fixed_labels=labels["fixed"],
            export_grid=original_grid(chosen.fixed) if fixed.ndim == 3 else None,
            fixed_mask=masks["fixed"],
            moving_mask=masks["moving"],
        )
        return chosen, run
