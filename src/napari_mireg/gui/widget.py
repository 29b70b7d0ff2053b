"""The napari dock widget: pick volumes, register live in the background, inspect, export.

A thin view over the engine: the work runs in `napari.qt.threading.thread_worker` over
:func:`napari_mireg.gui.frames.run_and_summarise`; every Frame arrives in the main thread (the
`yielded` signal), where layers, plots and the progress bar are updated. Cancel is
``worker.quit()``, which takes effect at the next iteration. The widget holds the panel and
runs; the run's layers (`live_layers`), what the canvas shows (`inspection`) and the
results and exports (`results`) have their own classes.
"""

import gc
import time

import numpy as np
from matplotlib import colormaps
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from napari.utils import Colormap, progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QSize, Qt, QTimer
from qtpy.QtGui import QMovie
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_mireg.gui.display import display_affine, labels_colormap, layer_volume, original_grid
from napari_mireg.gui.frames import LiveRun, Pacing, run_and_summarise
from napari_mireg.gui.inspection import MODES, InspectionView
from napari_mireg.gui.live_layers import (
    DISPLACEMENT,
    JACOBIAN,
    UPDATE,
    WARPED,
    WARPED_LABELS,
    LiveLayers,
    is_result_layer,
)
from napari_mireg.gui.options_form import OptionsForm
from napari_mireg.gui.plots import LivePlots
from napari_mireg.gui.reader import read_volume
from napari_mireg.gui.results import ResultsPanel
from napari_mireg.labels import clean_labels, label_values

NONE = "(none)"
# Main-thread time a frame's steps may take in one turn of the event loop before the rest
# wait for the next turn (the repaint in between adds to the pause).
TURN_SECONDS = 0.015
# With the live images off (and while prealigning), the text, progress bar and plots move
# this often at most: each progress bar repaint re-composes the window.
PROGRESS_SECONDS = 1.0
# det J: diverging, white at 1 (volume kept), blue where the map shrinks, red where it
# grows; with contrast limits (0, 2) a fold (det J <= 0) is full blue.
JACOBIAN_COLORMAP = Colormap(
    colormaps["RdBu_r"](np.linspace(0.0, 1.0, 256)), name="det J (1 = white)"
)
READ_AS = {"as the values say": None, "as image": "image", "as labels": "labels"}


def _collect_garbage():
    """A full garbage collection, done while no registration runs.

    A full collection of napari's many objects pauses the event loop for 0.1-0.2 s. Done
    when the widget opens and after each run, it leaves too few new objects for Python to
    start one during the next run, and stays out of the Run button's time.
    """
    gc.collect()


class _VerticalScrollArea(QScrollArea):
    """A scroll area that scrolls its widget vertically only: it is as wide as the
    widget needs (whatever the widget shows now), as short as the dock allows.
    """

    def __init__(self):
        super().__init__()
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def minimumSizeHint(self):
        hint = super().minimumSizeHint()
        scroll_bar = self.verticalScrollBar().sizeHint().width()
        return QSize(self.widget().minimumSizeHint().width() + scroll_bar, hint.height())

    def eventFilter(self, watched, event):
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the widget's own minimum may have changed
        return super().eventFilter(watched, event)


class RegistrationWidget(QWidget):
    """MI-SyN registration of two layers, live: the panel and the run control.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.job = None
        self.summary = None  # RunSummary of the last finished run
        self.live = None  # LiveLayers of the current run
        self.run_number = 0
        self.energies = []
        self.view = InspectionView(napari_viewer)
        self._last_histogram = None
        self._activity = None  # the activity dock's progress bar of a run
        self.first_frame_seconds = None
        self._run_started = 0.0
        self._pacing = Pacing()
        self._live_interval = self._pacing.min_interval
        self._progress_shown_at = 0.0
        self._outcome = None
        self._last_status = ""
        self._planned_iterations = 0
        self._prealign_units = 0
        self._syn_done = 0
        self._frames_seen = 0
        self._pair_names = ("", "")
        self._cleaning = None  # the worker of a label cleanup
        self.last_cleanup = None  # its CleanupChanges

        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addWidget(self._inputs_box())
        layout.addLayout(self._run_row())
        self.progress = QProgressBar()
        self.status = QLabel("Idle")
        self.status.setWordWrap(True)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(self._view_row())
        self.tabs = QTabWidget()
        self.tabs.addTab(self._parameters_page(), "Parameters")
        self.plots = LivePlots()
        self.tabs.addTab(self.plots, "Live")
        self.results = ResultsPanel()
        self.results.label_clicked.connect(self.select_label)
        self.tabs.addTab(self.results, "Results")
        self.tabs.addTab(self._tools_page(), "Tools")
        layout.addWidget(self.tabs, 1)
        self._scroll_area(content)

        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.refresh_layer_choices)
        self.refresh_layer_choices()
        self._set_running(False)
        _collect_garbage()

    # ---------------------------------------------------------------- building the panel
    def _scroll_area(self, content):
        """Show `content` in a vertical scroll area filling the widget (a fallback for
        screens shorter than the panel, about 600 px).
        """
        area = _VerticalScrollArea()
        area.setWidget(content)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(area)

    def _inputs_box(self):
        box = QGroupBox("Inputs")
        form = QFormLayout(box)
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
        return box

    def _parameters_page(self):
        self.options_form = OptionsForm()
        self.activity_progress = QCheckBox("Progress in napari's activity dock")
        self.activity_progress.setChecked(True)
        self.activity_progress.setToolTip(
            "A progress bar in napari's activity dock (its busy animation is held still "
            "during the run)"
        )
        self.live_images = QCheckBox("Show the warped images during the run")
        self.live_images.setChecked(True)
        self.live_images.setToolTip(
            "Off: only the histogram, the MI curve and the progress move until the end "
            "(for a slow display, such as X11 forwarding from a cluster)"
        )
        self.live_images.toggled.connect(self._show_live_images)
        self.options_form.add_row(self.activity_progress)
        self.options_form.add_row(self.live_images)
        return self.options_form

    def _run_row(self):
        row = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Register the moving image to the fixed one (a new run)")
        self.run_button.clicked.connect(self._run_or_cancel)
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self._pause_or_resume)
        self.more_iterations = QSpinBox(minimum=1, maximum=1000, value=10)
        self.more_iterations.setToolTip("Finest-level iterations that Continue adds")
        self.continue_button = QPushButton("Continue")
        self.continue_button.setToolTip("Run more finest-level iterations from the current map")
        self.continue_button.clicked.connect(lambda: self.start(continue_from=self.summary))
        for widget in (self.run_button, self.pause_button, self.more_iterations):
            row.addWidget(widget)
        row.addWidget(self.continue_button)
        return row

    def _view_row(self):
        row = QHBoxLayout()
        row.addWidget(QLabel("View:"))
        self.mode_buttons = QButtonGroup(self)
        tips = {
            "overlay": "The warped image in magenta, half transparent, over the gray fixed image",
            "checkerboard": "Alternate 16 mm tiles of the fixed and the warped image",
            "flicker": "The fixed and the warped image in turns",
        }
        for mode in MODES:
            button = QPushButton(mode.capitalize())
            button.setCheckable(True)
            button.setChecked(mode == self.view.mode)
            button.setToolTip(tips[mode])
            button.clicked.connect(lambda _, m=mode: self.view.set_mode(m))
            self.mode_buttons.addButton(button)
            row.addWidget(button)
        return row

    def _tools_page(self):
        page = QWidget()
        layout = QVBoxLayout(page)
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
        layout.addStretch()
        return page

    # ---------------------------------------------------------------- layer choices
    def refresh_layer_choices(self, *_):
        """Fill the layer pickers from the viewer (images and labels, results left out).

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
        for choice, names in (
            (
                self.cleanup_choice,
                labels
                + [
                    layer.name
                    for layer in self.viewer.layers
                    if is_result_layer(layer) and isinstance(layer, Labels)
                ],
            ),
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

    def _layer(self, choice):
        name = choice.currentText()
        return None if name in ("", NONE) else self.viewer.layers[name]

    # ---------------------------------------------------------------- running
    def options(self):
        """RegistrationOptions from the panel (OptionError, a ValueError, on a bad value)."""
        return self.options_form.options()

    def _job(self, continue_from):
        """The LiveRun of the panel's choices; ValueError with the reason if it cannot run."""
        fixed, moving = self._layer(self.fixed_choice), self._layer(self.moving_choice)
        if fixed is None or moving is None:
            raise ValueError("choose a fixed and a moving image layer")
        if fixed is moving:
            raise ValueError(
                f"the fixed and moving images are the same layer ({fixed.name}): choose two images"
            )
        fixed_labels = self._layer(self.fixed_labels_choice)
        moving_labels = self._layer(self.moving_labels_choice)
        for labels, image, role in (
            (fixed_labels, fixed, "fixed"),
            (moving_labels, moving, "moving"),
        ):
            if labels is not None and not self._same_grid(labels, image):
                raise ValueError(
                    f"the {role} labels {labels.name} {np.shape(labels.data)} are not on the "
                    f"grid of the {role} image {image.name} {np.shape(image.data)}"
                )
        options = self.options()
        if continue_from is not None:
            options = options.replace(level_iters=(self.more_iterations.value(),))
        fixed_volume = layer_volume(fixed)
        moving_volume = layer_volume(moving)
        if fixed_volume.ndim != moving_volume.ndim:
            raise ValueError(
                f"{fixed.name} is {fixed_volume.ndim}D but {moving.name} is {moving_volume.ndim}D"
            )
        return LiveRun(
            fixed_volume,
            moving_volume,
            None if moving_labels is None else layer_volume(moving_labels, labels=True),
            options,
            None if continue_from is None else continue_from.result.mapping,
            fixed_labels=None if fixed_labels is None else layer_volume(fixed_labels, labels=True),
            export_grid=original_grid(fixed) if fixed_volume.ndim == 3 else None,
        )

    @staticmethod
    def _same_grid(first, second):
        return np.shape(first.data) == np.shape(second.data) and np.allclose(
            display_affine(first), display_affine(second), atol=1e-3
        )

    def start(self, continue_from=None):
        """Start a registration (or continue the last one); returns the worker.

        A new run gets its own layers (the previous run's are hidden, kept for comparison)
        and clears the results panel; a continued run keeps its layers.
        """
        if self.worker is not None:
            return None
        try:
            job = self._job(continue_from)
        except ValueError as error:
            show_error(f"Cannot register: {error}")
            self.status.setText(f"Not started: {error}")
            return None
        self.job = job
        self._pair_names = (self.fixed_choice.currentText(), self.moving_choice.currentText())
        if continue_from is None:
            self.energies = []
            self.run_number += 1
            self.live = LiveLayers(
                self.viewer, self.run_number, self._layer(self.fixed_choice).metadata
            )
        self.summary = None
        self.results.clear(f"Run {self.run_number} is under way...")
        syn_iterations = sum(job.options.level_iters)
        self._prealign_units = (
            syn_iterations if continue_from is None and job.options.prealign != "none" else 0
        )
        self._planned_iterations = len(self.energies) + syn_iterations
        self._syn_done = 0
        self._frames_seen = 0
        self.progress.setRange(0, self._prealign_units + syn_iterations + 1)
        self.progress.setValue(0)
        self.first_frame_seconds = None
        self._outcome = None
        self._pacing = Pacing()
        self._live_interval = self._pacing.min_interval
        self._show_live_images(self.live_images.isChecked())
        self._run_started = time.perf_counter()
        self._busy_animation_held = not self.activity_progress.isChecked()
        # Connecting `errored` here (not after) keeps napari from re-raising the error.
        self.worker = thread_worker(
            run_and_summarise,
            connect={
                "yielded": self.show_frame,
                "returned": self.show_result,
                "errored": self._failed,
                "finished": self._finished,
                "paused": self._paused,
                "resumed": lambda: self._status("Running"),
            },
            start_thread=False,
        )(job, self._pacing)
        self._set_running(True)
        self._status("Starting...")
        self.worker.start()
        self._prepare_layers(job)  # while the worker makes the first frame
        self.tabs.setCurrentWidget(self.plots)
        return self.worker

    def _status(self, text):
        self._last_status = text
        self.status.setText(text)

    def _show_live_images(self, show):
        """Turn the live images on or off, also during a run (no SyN iteration is due
        for a heavy frame while they are off).
        """
        self._pacing.min_interval = self._live_interval if show else np.inf

    def _hold_busy_animation(self):
        """Pause the animated "in progress" GIF in napari's status bar.

        Every frame of it re-composes the whole window, OpenGL canvas included: with
        software OpenGL that slowed the engine by 80-90 %, against about 18 % with the
        animation held (2 mm sample pair). The activity dock's progress bar still moves.
        Returns True once it is held (napari starts it once, when the progress appears).
        """
        window = self
        while window.parentWidget() is not None:
            window = window.parentWidget()
        if not isinstance(window, QMainWindow):
            return True  # not in a napari window: nothing to hold
        held = False
        for label in window.statusBar().findChildren(QLabel):
            movie = label.movie()
            if movie is not None and movie.state() == QMovie.MovieState.Running:
                movie.setPaused(True)
                held = True
        return held

    def _prepare_layers(self, job):
        """Make the run's live layers for the first frame, then the inspection view.

        The hidden update magnitude layer waits until the first frame is shown
        (`_prepare_more_layers`): napari takes 0.1-0.3 s to make a layer, and each run
        has its own.
        """
        shape, affine = job.fixed.data.shape, job.fixed.affine
        moving = self._layer(self.moving_choice)
        self.live.prepare(
            WARPED,
            shape,
            np.float32,
            "image",
            affine,
            contrast_limits=moving.contrast_limits,
        )
        if job.moving_labels is not None:
            self.live.prepare(
                WARPED_LABELS,
                shape,
                job.moving_labels.data.dtype,
                "labels",
                affine,
                colormap=self._layer(self.moving_labels_choice).colormap,
            ).editable = False
        self.live.touch_new_buffers()
        fixed = self._layer(self.fixed_choice)
        self.view.begin(self.live, fixed)
        fixed_labels = self._layer(self.fixed_labels_choice)
        if job.moving_labels is not None and fixed_labels is not None:
            self.view.show_fixed_contours(fixed_labels)
        # The fixed image stays the selected layer: the layer controls show what is looked at.
        self.viewer.layers.selection.active = fixed

    def _prepare_more_layers(self):
        """The hidden update magnitude layer, made once the first frame is shown."""
        if self.worker is None or self.live is None:
            return
        job = self.job
        shape, affine = job.fixed.data.shape, job.fixed.affine
        layer = self.live.prepare(
            UPDATE, shape, np.float32, "image", affine, colormap="inferno", visible=False
        )
        layer.visible = False
        # Under the warped image and the contours: shown, it is looked at with them.
        layers, warped = self.viewer.layers, self.live.get(WARPED)
        if warped is not None and layers.index(layer) > layers.index(warped):
            layers.move(layers.index(layer), layers.index(warped))
        self.live.touch_new_buffers()
        self.viewer.layers.selection.active = self.view.fixed

    def _run_or_cancel(self):
        if self.worker is not None:
            self.cancel()
        else:
            self.start()

    def cancel(self):
        """Stop the running registration at its next iteration; nothing is kept."""
        if self.worker is not None:
            if self.worker.is_paused:
                self.worker.resume()  # a paused generator would never see the quit
            self.worker.quit()
            self._status("Cancelling...")

    def _pause_or_resume(self):
        if self.worker is None:
            return
        if self.worker.is_paused:
            self.worker.resume()
            self.pause_button.setText("Pause")
        else:
            self.worker.pause()
            self.pause_button.setText("Resume")
            self.status.setText("Pausing (at the next iteration)...")

    def _paused(self):
        self.status.setText(f"Paused ({self._last_status})")

    def _set_running(self, running):
        self.run_button.setText("Cancel" if running else "Run")
        self.pause_button.setEnabled(running)
        self.pause_button.setText("Pause")
        self.continue_button.setEnabled(not running and self.summary is not None)
        self.cleanup_button.setEnabled(not running and self._cleaning is None)
        self.convert_button.setEnabled(not running)

    def _finished(self):
        """Back to idle, whatever the outcome; a run that neither ended nor failed was
        cancelled, and shows no results.
        """
        if self._outcome is None:
            self._status("Cancelled")
            self.results.clear(f"Run {self.run_number} was cancelled: no results.")
        if self.live is not None:
            self.live.refresh_thumbnails()
        if self._activity is not None:
            self._activity.close()
            self._activity = None
        self.worker = None
        self._set_running(False)
        _collect_garbage()

    def _failed(self, error):
        self._outcome = "failed"
        show_error(f"Registration failed: {error}")
        self._status(f"Failed: {error}")
        self.results.clear(f"Run {self.run_number} failed: no results.")

    # ---------------------------------------------------------------- live view
    def show_frame(self, frame):
        """Draw one Frame (main thread).

        Light frames record the energy; with the live images off, and while prealigning,
        one a second also moves the text and the progress bar (and the plots). Heavy frames
        (paced by `Pacing`) update the layers, then the text, the progress bar and the
        plots, in steps spread over turns of the event loop so that none blocks it for
        long (see `_run_steps`).
        """
        if not self._busy_animation_held:
            self._busy_animation_held = self._hold_busy_animation()
        self._frames_seen += 1
        if frame.energy is not None:
            self._syn_done += 1
            self.energies.append(-frame.energy)
            self._last_histogram = frame.joint_histogram
        if frame.stage == "scoring":
            self._show_progress(frame)
            return
        if frame.warped is None:
            slow = frame.stage == "prealigning" or not self.live_images.isChecked()
            if slow and time.perf_counter() - self._progress_shown_at >= PROGRESS_SECONDS:
                self._show_progress(frame)  # one cheap step; not a drawing for Pacing
            return
        affine = self.job.fixed.affine
        steps = [lambda: self.live.update(WARPED, frame.warped, "image", affine)]
        if self.first_frame_seconds is None:  # Run to the first warped image in its layer
            steps.append(self._first_frame_shown)
        steps.append(self.view.frame_shown)
        if frame.warped_labels is not None:
            steps.append(
                lambda: self.live.update(WARPED_LABELS, frame.warped_labels, "labels", affine)
            )
        if frame.update_magnitude is not None and self.live.get(UPDATE) is not None:
            steps.append(lambda: self.live.update(UPDATE, frame.update_magnitude, "image", affine))
        steps.append(lambda: self._show_progress(frame))
        self._run_steps(steps)

    def _first_frame_shown(self):
        """Record the first frame's latency; then add the activity dock's progress bar.

        The bar is made here rather than at Run because making one takes napari about
        0.1 s, and napari's bars process pending events as they change.
        """
        if self.first_frame_seconds is None:  # two frames may have queued this step
            self.first_frame_seconds = time.perf_counter() - self._run_started
            QTimer.singleShot(0, self._prepare_more_layers)
        if self.activity_progress.isChecked() and self._activity is None:
            bar = progress(total=self.progress.maximum(), desc="MI-SyN registration")
            if self.worker is None:  # the run ended while the bar was being made
                bar.close()
            else:
                self._activity = bar

    def _run_steps(self, steps, began=None, worker=None):
        """Run a frame's steps, as many in a turn of the event loop as fit in `TURN_SECONDS`.

        Each turn is followed by a repaint of what it changed: fewer turns mean fewer
        repaints (each re-composes the window, 50-100 ms with software OpenGL at 1 mm), and
        shorter turns shorter pauses. Pacing is told the time from the first step to the
        repaint after the last. Steps left when their run has ended (result shown, cancelled
        or failed), or when another run has started since, are dropped.
        """
        worker = self.worker if worker is None else worker
        if self.worker is None or self.worker is not worker or self._outcome is not None:
            return
        turn = time.perf_counter()
        began = turn if began is None else began
        while steps and time.perf_counter() - turn < TURN_SECONDS:
            steps.pop(0)()
        if steps:
            QTimer.singleShot(0, lambda: self._run_steps(steps, began, worker))
        else:  # a zero timer runs once the pending repaint is done
            pacing = self._pacing
            QTimer.singleShot(0, lambda: pacing.drawn(time.perf_counter() - began))

    def _progress_value(self, frame):
        if frame.stage in ("start", "prealigning", "prealigned"):
            return round(self._prealign_units * frame.prealigned)
        if frame.stage == "scoring":
            return self.progress.maximum() - 1
        return self._prealign_units + self._syn_done

    def _show_progress(self, frame):
        self._progress_shown_at = time.perf_counter()
        value = self._progress_value(frame)
        # QProgressBar.setValue repaints at once, which re-composes the whole window
        # (50-100 ms with software OpenGL); with updates held it joins the turn's repaint.
        self.progress.setUpdatesEnabled(False)
        self.progress.setValue(value)
        self.progress.setUpdatesEnabled(True)
        if frame.stage == "scoring":
            text = "Registered; computing det J and the overlap scores..."
        elif frame.energy is None:
            text = {
                "start": "Prealigning...",
                "prealigning": f"Prealigning ({self.job.options.prealign})...",
            }.get(frame.stage, "Prealigned; SyN starting")
        else:
            levels = len(self.job.options.level_iters)
            text = (
                f"Level {frame.level + 1}/{levels}, iteration {frame.iteration + 1}: "
                f"MI {-frame.energy:.4f} (half-way images at the level's resolution)"
            )
            self._draw_plots(frame.joint_histogram)
        if self.worker is not None and self.worker.is_paused:
            self.status.setText(f"Paused ({text})")
            self._last_status = text
        else:
            self._status(text)
        # The activity dock's bar moves with the progress bar; a repaint of it per
        # iteration would re-compose the whole window. Last, as it processes pending events.
        if self._activity is not None and value > self._activity.n:
            self._activity.update(value - self._activity.n)

    def _draw_plots(self, histogram):
        self.plots.show_data(histogram, self.energies, self._planned_iterations)

    # ---------------------------------------------------------------- results
    def show_result(self, summary):
        """Put a RunSummary (computed in the worker) into layers and the results panel."""
        self._outcome = "done"
        self.summary = summary
        result = summary.result
        affine = self.job.fixed.affine
        live = self.live
        live.show(WARPED, result.warped, "image", affine)
        if summary.warped_labels is not None:
            live.show(WARPED_LABELS, summary.warped_labels, "labels", affine)
        live.show(
            JACOBIAN,
            summary.determinant,
            "image",
            affine,
            colormap=JACOBIAN_COLORMAP,
            contrast_limits=(0.0, 2.0),
            visible=False,
        )
        layer = live.show(
            DISPLACEMENT, summary.displacement, "image", affine, colormap="viridis", visible=False
        )
        if summary.export_mapping is not None:
            layer.metadata["displacement"] = summary.export_mapping.transforms()[0]
        self.view.apply()
        self.viewer.layers.selection.active = self.view.fixed  # not the last layer made
        fixed, moving = self._pair_names
        seconds = summary.result.timings["total"]
        self.results.show_summary(
            summary, affine, f"Run {self.run_number} ({seconds:.1f} s): {moving} onto {fixed}"
        )
        self._status("Done")
        self.progress.setValue(self.progress.maximum())
        if self._last_histogram is not None:
            self._draw_plots(self._last_histogram)
        self.tabs.setCurrentWidget(self.results)
        self._set_running(False)

    @property
    def table(self):
        """The last run's OverlapTable (None without one)."""
        return None if self.summary is None else self.summary.table

    @property
    def result(self):
        """The last run's engine Result (None without one)."""
        return None if self.summary is None else self.summary.result

    def layer_name(self, base):
        """The current run's name of a result layer (WARPED, JACOBIAN, ...)."""
        return self.live.name(base)

    def select_label(self, label):
        """Show only `label` (-1: every label) and centre the view on it."""
        if label < 0:
            self.view.select_label(None)
            return
        centres = {} if self.summary is None else self.summary.centres or {}
        self.view.select_label(label, centres.get(label))

    # ---------------------------------------------------------------- layer tools
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
        self._cleaning = worker
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
        self._cleaning = None
        self.cleanup_button.setText("Clean")
        self.cleanup_button.setEnabled(self.worker is None)
