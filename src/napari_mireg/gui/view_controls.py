"""The setting of the comparison mode on show: one control, shown only with its mode.

The warped image's opacity (overlay), the checkerboard's tile side (mm), the flicker's
interval (ms) and the swipe boundary's place; the composite has a key to its colours, the
Dice map none (its colour bar is below). The controls share one line of the panel, so that
switching modes does not move what is under them.
"""

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QStackedWidget,
    QWidget,
)

from napari_mireg.gui.inspection import CHECKER_MM, FLICKER_MS, OVERLAY_OPACITY, SWIPE_FRACTION


def _slider(value, tip):
    slider = QSlider(Qt.Orientation.Horizontal)
    slider.setRange(0, 100)
    slider.setValue(int(round(100 * value)))
    slider.setToolTip(tip)
    return slider


def _spin_box(minimum, maximum, step, value, suffix, tip):
    box = QSpinBox()
    box.setRange(minimum, maximum)
    box.setSingleStep(step)
    box.setValue(int(value))
    box.setSuffix(suffix)
    box.setToolTip(tip)
    return box


COMPOSITE_KEY = "gray: alike, green: fixed brighter, magenta: warped brighter"
# The key as coloured squares: which image is brighter (the words in the tooltip).
_SQUARE = '<span style="color:{}">&#9632;</span> {}'
COMPOSITE_SQUARES = "&nbsp;".join(
    _SQUARE.format(colour, text)
    for colour, text in (
        ("#00ff00", "fixed"),
        ("#ff00ff", "warped"),
        ("#b0b0b0", "alike"),
    )
)


class ModeControls(QStackedWidget):
    """The control of each comparison mode, wired to an InspectionView.

    Parameters
    ----------
    view : InspectionView
    """

    def __init__(self, view):
        super().__init__()
        self.view = view
        self.opacity = _slider(
            OVERLAY_OPACITY,
            "Opacity of the warped image over the fixed one (0: the fixed image only, 1: the "
            "warped image only)",
        )
        self.tile = _spin_box(
            2, 100, 2, CHECKER_MM, " mm", "Side of a checkerboard tile, in millimetres"
        )
        self.interval = _spin_box(
            100, 3000, 100, FLICKER_MS, " ms", "How long each image is shown in turn"
        )
        self.swipe = _slider(
            SWIPE_FRACTION,
            "Where the boundary is: the warped image on its left, the fixed image on its right",
        )
        self.opacity.valueChanged.connect(lambda value: view.set_warped_opacity(value / 100))
        self.tile.valueChanged.connect(view.set_checker_size)
        self.interval.valueChanged.connect(view.set_flicker_interval)
        self.swipe.valueChanged.connect(lambda value: view.set_swipe(value / 100))
        self.pages = {}  # mode -> its page
        key = QLabel(COMPOSITE_SQUARES)
        # The key never widens the panel (a narrow dock cuts its end; the tooltip says it).
        key.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        key.setToolTip(
            COMPOSITE_KEY.capitalize() + ". Each image is scaled to its own range (1st to "
            "99.5th percentile): images of the same contrast are gray where they are aligned"
        )
        for mode, text, control in (
            ("overlay", "Opacity:", self.opacity),
            ("composite", "", key),
            ("checkerboard", "Tile:", self.tile),
            ("flicker", "Each:", self.interval),
            ("swipe", "Boundary:", self.swipe),
            ("dice map", "", QLabel("")),
            ("det J", "", QLabel("")),
        ):
            page = QWidget()
            page_layout = QHBoxLayout(page)
            page_layout.setContentsMargins(0, 0, 0, 0)
            if text:
                page_layout.addWidget(QLabel(text))
            page_layout.addWidget(control, 1)
            self.addWidget(page)
            self.pages[mode] = page
        self.show_mode(view.mode)

    def show_mode(self, mode):
        """Show the control of `mode`."""
        self.setCurrentWidget(self.pages[mode])
