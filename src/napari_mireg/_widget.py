"""The napari dock widget: pick volumes, register live in the background, score, export.

A thin view over the engine: the work runs in `napari.qt.threading.thread_worker` over
:func:`napari_mireg._frames.live_frames`; every Frame arrives in the main thread (the
`yielded` signal), where layers, plots and the progress bar are updated. Cancel is
``worker.quit()``, which takes effect at the next iteration.
"""

import gc
import threading
import time

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QSize, Qt, QTimer
from qtpy.QtGui import QMovie
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_mireg import files
from napari_mireg._display import (
    layer_kwargs,
    layer_volume,
    on_grid,
    original_grid,
    scale_translate,
)
from napari_mireg._frames import LiveRun, Pacing, live_frames
from napari_mireg._plots import LivePlots
from napari_mireg.labels import clean_labels
from napari_mireg.options import RegistrationOptions
from napari_mireg.overlap import COLUMNS, overlap_scores
from napari_mireg.transforms import DiffeomorphicMap, apply_transforms

WARPED, WARPED_LABELS = "warped moving", "warped moving labels"
UPDATE, JACOBIAN, DISPLACEMENT = "update magnitude (mm)", "det J", "displacement (mm)"
NONE = "(none)"
# Main-thread time a frame's steps may take in one turn of the event loop before the rest
# wait for the next turn (the repaint in between adds to the pause).
TURN_SECONDS = 0.015
# With the live images off, the text, progress bar and plots move this often at most.
PROGRESS_SECONDS = 1.0


class NumericItem(QTableWidgetItem):
    """A table cell that sorts by its number."""

    def __init__(self, value, text):
        super().__init__(text)
        self.value = value

    def __lt__(self, other):
        return self.value < getattr(other, "value", 0)


def _fill(table, rows):
    """Put rows (dicts keyed by COLUMNS) into a QTableWidget, read-only."""
    table.setRowCount(len(rows))
    for index, row in enumerate(rows):
        for column, key in enumerate(COLUMNS):
            value = row[key]
            if isinstance(value, float):
                item = NumericItem(value, f"{value:.4f}")
            else:
                item = NumericItem(value if isinstance(value, int) else 0, str(value))
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            table.setItem(index, column, item)


def _touch_pages(buffers):
    """Write every page of freshly allocated `buffers` (zeros stay zeros).

    A new array's memory is only mapped when first written: for a 1 mm volume the first copy
    of a frame into it took about 0.1 s of page faults on the main thread. Run in a helper
    thread while the worker makes the first frame (numpy's fill releases the GIL).
    """
    for buffer in buffers:
        buffer.fill(0)


def _collect_garbage():
    """A full garbage collection, done while no registration runs.

    A full collection of napari's many objects pauses the event loop for 0.1-0.2 s. Done
    when the widget opens and after each run, it leaves too few new objects for Python to
    start one during the next run (it did once mid-run, 179 ms), and stays out of the Run
    button's time.
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
    """MI-SyN registration of two layers, live.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.result = None
        self.export_mapping = None  # the result's map on the fixed file's grid
        self.job = None
        self.table = None
        self.energies = []
        self._frames_seen = 0
        self._last_histogram = None
        self._live_buffers = {}  # layer name -> the array a live layer shows
        self._buffers_touched = None  # thread that maps the new buffers' pages
        self._activity = None  # the activity dock's progress bar of a run
        self.first_frame_seconds = None
        self._run_started = 0.0
        self._pacing = Pacing()
        self._progress_shown_at = 0.0
        self._outcome = None

        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addWidget(self._inputs_box())
        layout.addWidget(self._parameters_box())
        layout.addLayout(self._run_row())
        self.progress = QProgressBar()
        self.status = QLabel("Idle")
        self.status.setWordWrap(True)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.plots = LivePlots()
        self._planned_iterations = 0
        layout.addWidget(self.plots)
        layout.addWidget(self._results_box())
        layout.addWidget(self._cleanup_box())
        layout.addStretch()
        self._scroll_area(content)

        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.refresh_layer_choices)
        self.refresh_layer_choices()
        self._set_running(False)
        _collect_garbage()

    # ---------------------------------------------------------------- building the panel
    def _scroll_area(self, content):
        """Show `content` in a vertical scroll area filling the widget.

        The panel is about 1150 px tall: without it, napari's window could not be made
        shorter than that, taller than a laptop's screen (the bottom of the window,
        the viewer's sliders included, would be out of reach).
        """
        area = _VerticalScrollArea()
        area.setWidget(content)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(area)

    def _inputs_box(self):
        box = QGroupBox("Inputs")
        form = QFormLayout(box)
        self.fixed_choice, self.moving_choice = QComboBox(), QComboBox()
        self.fixed_labels_choice, self.moving_labels_choice = QComboBox(), QComboBox()
        form.addRow("Fixed image", self.fixed_choice)
        form.addRow("Moving image", self.moving_choice)
        form.addRow("Fixed labels", self.fixed_labels_choice)
        form.addRow("Moving labels", self.moving_labels_choice)
        open_button = QPushButton("Open files...")
        open_button.clicked.connect(self._open_files)
        form.addRow(open_button)
        return box

    def _parameters_box(self):
        box = QGroupBox("Parameters")
        form = QFormLayout(box)
        self.bins = QSpinBox(minimum=8, maximum=256, value=32)
        self.iterations = QLineEdit("40,20,10")
        self.iterations.setToolTip("SyN iterations per level, coarsest first")
        self.step_length = QDoubleSpinBox(minimum=0.01, maximum=2.0, singleStep=0.05, value=0.25)
        self.update_sigma = QDoubleSpinBox(minimum=0.0, maximum=10.0, singleStep=0.25, value=1.73)
        self.prealign = QComboBox()
        self.prealign.addItems(["affine", "rigid", "none"])
        self.threads = QSpinBox(minimum=0, maximum=256, value=0, specialValueText="all cores")
        self.activity_progress = QCheckBox("Progress in napari's activity dock")
        self.activity_progress.setChecked(True)
        self.activity_progress.setToolTip(
            "A progress bar in napari's activity dock (its "
            "busy animation is held still during the run)"
        )
        for name, control in (
            ("Bins", self.bins),
            ("Iterations", self.iterations),
            ("Step (voxels)", self.step_length),
            ("Smoothing sigma (voxels)", self.update_sigma),
            ("Prealignment", self.prealign),
            ("Threads", self.threads),
        ):
            form.addRow(name, control)
        self.live_images = QCheckBox("Show the warped images during the run")
        self.live_images.setChecked(True)
        self.live_images.setToolTip(
            "Off: only the histogram, the MI curve and the progress "
            "move until the end (for a slow display, such as X11 "
            "forwarding from a cluster)"
        )
        self.live_images.toggled.connect(self._show_live_images)
        form.addRow(self.activity_progress)
        form.addRow(self.live_images)
        return box

    def _run_row(self):
        row = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self._run_or_cancel)
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self._pause_or_resume)
        self.more_iterations = QSpinBox(minimum=1, maximum=1000, value=10)
        self.continue_button = QPushButton("Continue")
        self.continue_button.setToolTip("Run more finest-level iterations from the current map")
        self.continue_button.clicked.connect(lambda: self.start(continue_from=self.result))
        for widget in (
            self.run_button,
            self.pause_button,
            self.more_iterations,
            self.continue_button,
        ):
            row.addWidget(widget)
        return row

    def _results_box(self):
        box = QGroupBox("Results")
        layout = QVBoxLayout(box)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        headers = ["label", "name", "Dice", "Jaccard", "fixed voxels", "warped voxels"]
        self.totals_table = QTableWidget(2, len(COLUMNS))  # whole brain and mean, on top
        self.overlap_table = QTableWidget(0, len(COLUMNS))  # one row per label, sortable
        for table in (self.totals_table, self.overlap_table):
            table.setHorizontalHeaderLabels(headers)
        for table in (self.totals_table, self.overlap_table):
            table.verticalHeader().setVisible(False)
            table.horizontalHeader().setStretchLastSection(True)
        self.totals_table.setFixedHeight(
            3 * self.totals_table.verticalHeader().defaultSectionSize() + 8
        )
        self.overlap_table.setSortingEnabled(True)
        self.overlap_table.setMinimumHeight(160)
        layout.addWidget(self.totals_table)
        layout.addWidget(self.overlap_table)
        grid = QGridLayout()
        self.export_buttons = []
        exports = [
            ("Overlap CSV...", self.export_table, "overlap.csv"),
            ("Forward warp...", self.export_forward, "warp.nii.gz"),
            ("Inverse warp...", self.export_inverse, "inverse_warp.nii.gz"),
            ("Affine...", self.export_affine, "affine.txt"),
            ("Warped image...", self.export_warped, "warped.nii.gz"),
            ("Warped labels...", self.export_warped_labels, "warped_labels.nii.gz"),
        ]
        for index, (text, export, default) in enumerate(exports):
            button = QPushButton(text)
            button.clicked.connect(lambda _, e=export, d=default: self._export_with_dialog(e, d))
            grid.addWidget(button, index // 3, index % 3)
            self.export_buttons.append(button)
        layout.addLayout(grid)
        return box

    def _cleanup_box(self):
        box = QGroupBox("Clean labels (fill holes, remove islands)")
        row = QHBoxLayout(box)
        self.cleanup_choice = QComboBox()
        self.cleanup_button = QPushButton("Clean")
        self.cleanup_button.clicked.connect(
            lambda: self.clean_layer(self.cleanup_choice.currentText())
        )
        row.addWidget(self.cleanup_choice, 1)
        row.addWidget(self.cleanup_button)
        return box

    # ---------------------------------------------------------------- layer choices
    def refresh_layer_choices(self, *_):
        """Fill the layer pickers from the viewer (images and labels, results left out)."""
        ours = {WARPED, WARPED_LABELS, UPDATE, JACOBIAN, DISPLACEMENT}
        images = [
            layer.name
            for layer in self.viewer.layers
            if layer._type_string == "image" and layer.name not in ours
        ]
        labels = [
            layer.name
            for layer in self.viewer.layers
            if layer._type_string == "labels" and layer.name not in ours
        ]
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
            if current in names:
                choice.setCurrentText(current)
            elif len(names) > position:
                choice.setCurrentText(names[position])
            choice.blockSignals(False)
        current = self.cleanup_choice.currentText()
        self.cleanup_choice.clear()
        self.cleanup_choice.addItems(
            [layer.name for layer in self.viewer.layers if layer._type_string == "labels"]
        )
        if current:
            self.cleanup_choice.setCurrentText(current)

    def _open_files(self):
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Open volumes", "", "Volumes (*.nii *.nii.gz *.mgz *.mgh)"
        )
        if paths:
            self.viewer.open(paths, plugin="napari-mireg")

    def _layer(self, choice):
        name = choice.currentText()
        return None if name in ("", NONE) else self.viewer.layers[name]

    # ---------------------------------------------------------------- running
    def options(self):
        """RegistrationOptions from the panel (OptionError, a ValueError, on a bad value)."""
        return RegistrationOptions.build(
            bins=self.bins.value(),
            level_iters=self.iterations.text(),
            step_length=self.step_length.value(),
            update_sigma=self.update_sigma.value(),
            prealign=self.prealign.currentText(),
            threads=self.threads.value() or None,
        )

    def _job(self, continue_from):
        fixed, moving = self._layer(self.fixed_choice), self._layer(self.moving_choice)
        if fixed is None or moving is None:
            raise ValueError("choose a fixed and a moving image layer")
        moving_labels = self._layer(self.moving_labels_choice)
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
            continue_from,
        )

    def start(self, continue_from=None):
        """Start a registration (or continue the last one); returns the worker."""
        try:
            job = self._job(continue_from)
        except ValueError as error:
            show_error(f"Cannot register: {error}")
            return None
        self.job = job
        if continue_from is None:
            self.energies = []
            self.result = None
            self.table = None
        total = sum(job.options.level_iters) + (0 if continue_from else 2)
        self._planned_iterations = len(self.energies) + sum(job.options.level_iters)
        self.progress.setRange(0, total)
        self.progress.setValue(0)
        self.first_frame_seconds = None
        self._outcome = None
        self._frames_seen = 0
        self._pacing = Pacing()
        self._show_live_images(self.live_images.isChecked())
        self._run_started = time.perf_counter()
        self._busy_animation_held = not self.activity_progress.isChecked()
        # Connecting `errored` here (not after) keeps napari from re-raising the error.
        self.worker = thread_worker(
            live_frames,
            connect={
                "yielded": self.show_frame,
                "returned": self.show_result,
                "errored": self._failed,
                "finished": self._finished,
            },
            start_thread=False,
        )(job, self._pacing)
        self._set_running(True)
        self.status.setText("Starting...")
        self.worker.start()
        self._prepare_layers(job)  # while the worker makes the first frame
        return self.worker

    def _show_live_images(self, show):
        """Turn the live images on or off, also during a run (no SyN iteration is due
        for a heavy frame while they are off).
        """
        self._pacing.min_interval = Pacing.min_interval if show else np.inf

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
        """Create the live layers that do not exist yet, each showing a zero buffer that
        the frames are then copied into: making a layer takes napari a few hundred ms,
        updating its buffer far less, so the event loop stays free while frames arrive.
        """
        shape = job.fixed.data.shape
        affine = job.fixed.affine
        missing = [
            name for name in (WARPED, WARPED_LABELS, UPDATE) if name not in self.viewer.layers
        ]
        if WARPED in missing:
            self._add_live(
                WARPED,
                np.zeros(shape, np.float32),
                "image",
                affine,
                colormap="magenta",
                blending="additive",
                contrast_limits=self._layer(self.moving_choice).contrast_limits,
            )
        if WARPED_LABELS in missing and job.moving_labels is not None:
            colours = self._layer(self.moving_labels_choice).colormap
            self._add_live(
                WARPED_LABELS,
                np.zeros(shape, job.moving_labels.data.dtype),
                "labels",
                affine,
                colormap=colours,
                opacity=0.5,
            ).editable = False
        if UPDATE in missing:
            self._add_live(
                UPDATE,
                np.zeros(shape, np.float32),
                "image",
                affine,
                colormap="inferno",
                visible=False,
            )
        new_buffers = [self._live_buffers[name] for name in missing if name in self._live_buffers]
        if new_buffers:
            self._buffers_touched = threading.Thread(
                target=_touch_pages, args=(new_buffers,), daemon=True
            )
            self._buffers_touched.start()

    def _add_live(self, name, buffer, kind, affine, **extra):
        """Show `buffer` in layer `name` (made if missing) as the layer's live buffer."""
        self._live_buffers[name] = buffer
        return self._show_layer(name, buffer, kind, affine, **extra)

    def _run_or_cancel(self):
        if self.worker is not None:
            self.cancel()
        else:
            self.start()

    def cancel(self):
        """Stop the running registration at its next iteration; nothing is kept."""
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("Cancelling...")

    def _pause_or_resume(self):
        if self.worker is None:
            return
        if self.worker.is_paused:
            self.worker.resume()
            self.pause_button.setText("Pause")
        else:
            self.worker.pause()
            self.pause_button.setText("Resume")

    def _set_running(self, running):
        self.run_button.setText("Cancel" if running else "Run")
        self.pause_button.setEnabled(running)
        self.pause_button.setText("Pause")
        idle_with_result = not running and self.result is not None
        self.continue_button.setEnabled(idle_with_result)
        for button in self.export_buttons:
            button.setEnabled(idle_with_result)
        self.cleanup_button.setEnabled(not running)

    def _finished(self):
        """Back to idle, whatever the outcome; a run that neither ended nor failed was
        cancelled.
        """
        if self._outcome is None:
            self.status.setText("Cancelled")
        self._refresh_thumbnails()
        if self._activity is not None:
            self._activity.close()
            self._activity = None
        self.worker = None
        self._set_running(False)
        _collect_garbage()

    def _failed(self, error):
        self._outcome = "failed"
        show_error(f"Registration failed: {error}")
        self.status.setText(f"Failed: {error}")

    # ---------------------------------------------------------------- live view
    def _show_layer(self, name, data, kind, affine, **extra):
        """Create or update a result layer on a display grid."""
        scale, translate = scale_translate(affine)
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if not (np.allclose(layer.scale, scale) and np.allclose(layer.translate, translate)):
                layer.scale, layer.translate = scale, translate
            layer.data = data
            if name == UPDATE:
                layer.reset_contrast_limits()
            layer.metadata.update(layer_kwargs(affine, name)["metadata"])
            return layer
        add = self.viewer.add_labels if kind == "labels" else self.viewer.add_image
        return add(data, **layer_kwargs(affine, name), **extra)

    def _show_live(self, name, data, kind, affine):
        """Update a live layer with a frame's array.

        A frame of the buffer's shape and grid is copied into the layer's buffer, and the
        layer re-sliced without a data event: a data event makes napari rebuild a Labels
        layer's colour texture and shader (tens of ms with software OpenGL) and re-draw the
        thumbnails, on every frame. Otherwise (a layer that shows a result array, or another
        grid) the frame's array becomes the layer's data and its new buffer. Only the
        widget's own buffers are written, never arrays it was given.
        """
        layer = self._live_layer(name)
        buffer = self._live_buffers.get(name)
        if (
            layer is None
            or buffer.shape != data.shape
            or buffer.dtype != data.dtype
            or not np.allclose(layer.metadata["display_affine"], affine)
        ):
            return self._add_live(name, data, kind, affine)
        if self._buffers_touched is not None:  # the first copy into new buffers
            self._buffers_touched.join()
            self._buffers_touched = None
        np.copyto(buffer, data)
        layer.refresh(thumbnail=False, extent=False)
        if name == UPDATE and layer.visible:
            layer.reset_contrast_limits()
        return layer

    def _live_layer(self, name):
        """The layer `name` if it still shows the widget's buffer, else None."""
        if name in self.viewer.layers and name in self._live_buffers:
            layer = self.viewer.layers[name]
            if layer.data is self._live_buffers[name]:
                return layer
        return None

    def _refresh_thumbnails(self):
        """Bring the live layers' thumbnails up to date (they are not re-drawn per frame)."""
        for name in self._live_buffers:
            layer = self._live_layer(name)
            if layer is not None:
                layer.refresh()

    def show_frame(self, frame):
        """Draw one Frame (main thread).

        Light frames only record the energy; with the live images off, one a second also
        moves the text, the progress bar and the plots. Heavy frames (paced by `Pacing`)
        update the layers, then the text, the progress bar and the plots, in steps spread
        over turns of the event loop so that none blocks it for long (see `_run_steps`).
        """
        if not self._busy_animation_held:
            self._busy_animation_held = self._hold_busy_animation()
        self._frames_seen += 1
        if frame.energy is not None:
            self.energies.append(-frame.energy)
            self._last_histogram = frame.joint_histogram
        if frame.warped is None:
            if (
                frame.energy is not None
                and not self.live_images.isChecked()
                and time.perf_counter() - self._progress_shown_at >= PROGRESS_SECONDS
            ):
                self._show_progress(frame)  # one cheap step; not a drawing for Pacing
            return
        fixed_affine = self.job.fixed.affine
        steps = [lambda: self._show_live(WARPED, frame.warped, "image", fixed_affine)]
        if self.first_frame_seconds is None:  # Run to the first warped image in its layer
            steps.append(self._first_frame_shown)
        if frame.warped_labels is not None:
            steps.append(
                lambda: self._show_live(WARPED_LABELS, frame.warped_labels, "labels", fixed_affine)
            )
        if frame.update_magnitude is not None:
            steps.append(
                lambda: self._show_live(UPDATE, frame.update_magnitude, "image", fixed_affine)
            )
        steps.append(lambda: self._show_progress(frame))
        self._run_steps(steps)

    def _first_frame_shown(self):
        """Record the first frame's latency; then add the activity dock's progress bar.

        The bar is made here rather than at Run because making one takes napari about
        0.1 s, and napari's bars process pending events as they change.
        """
        if self.first_frame_seconds is None:  # two frames may have queued this step
            self.first_frame_seconds = time.perf_counter() - self._run_started
        if self.activity_progress.isChecked() and self._activity is None:
            bar = progress(total=self.progress.maximum(), desc="MI-SyN registration")
            if self.worker is None:  # the run ended while the bar was being made
                bar.close()
            else:
                self._activity = bar

    def _run_steps(self, steps, began=None):
        """Run a frame's steps, as many in a turn of the event loop as fit in `TURN_SECONDS`.

        Each turn is followed by a repaint of what it changed: fewer turns mean fewer
        repaints (each re-composes the window, 50-100 ms with software OpenGL at 1 mm), and
        shorter turns shorter pauses. Pacing is told the time from the first step to the
        repaint after the last. Steps left when the run has ended (result shown, cancelled or
        failed) are dropped.
        """
        if self.worker is None or self._outcome is not None:
            return
        turn = time.perf_counter()
        began = turn if began is None else began
        while steps and time.perf_counter() - turn < TURN_SECONDS:
            steps.pop(0)()
        if steps:
            QTimer.singleShot(0, lambda: self._run_steps(steps, began))
        else:  # a zero timer runs once the pending repaint is done
            pacing = self._pacing
            QTimer.singleShot(0, lambda: pacing.drawn(time.perf_counter() - began))

    def _show_progress(self, frame):
        self._progress_shown_at = time.perf_counter()
        # QProgressBar.setValue repaints at once, which re-composes the whole window
        # (50-100 ms with software OpenGL); with updates held it joins the turn's repaint.
        self.progress.setUpdatesEnabled(False)
        self.progress.setValue(self._frames_seen)
        self.progress.setUpdatesEnabled(True)
        if frame.energy is None:
            self.status.setText(
                "Prealigning..." if frame.stage == "start" else "Prealigned; SyN starting"
            )
        else:
            self.status.setText(
                f"Level {frame.level + 1}, iteration {frame.iteration + 1}: MI {-frame.energy:.4f}"
            )
            self._draw_plots(frame.joint_histogram)
        # The activity dock's bar moves with the heavy frames only: a repaint of it per
        # iteration re-composes the whole window (costly with software OpenGL). Last, as it
        # processes pending events.
        if self._activity is not None:
            self._activity.update(self._frames_seen - self._activity.n)

    def _draw_plots(self, histogram):
        self.plots.show_data(histogram, self.energies, self._planned_iterations)

    # ---------------------------------------------------------------- results
    def show_result(self, result):
        """Final layers, the fold count and the overlap table (main thread)."""
        self.result = result
        self._outcome = "done"
        fixed_affine = self.job.fixed.affine
        mapping = result.mapping
        self._show_layer(
            WARPED, result.warped, "image", fixed_affine, colormap="magenta", blending="additive"
        )
        determinant = mapping.jacobian_determinant()
        self._show_layer(
            JACOBIAN,
            determinant.astype(np.float32),
            "image",
            fixed_affine,
            colormap="twilight",
            contrast_limits=(0.0, 2.0),
            visible=False,
        )
        magnitude = np.sqrt((mapping.displacement() ** 2).sum(axis=-1))
        layer = self._show_layer(
            DISPLACEMENT, magnitude, "image", fixed_affine, colormap="viridis", visible=False
        )
        self.export_mapping = self._original_mapping()
        layer.metadata["displacement"] = self.export_mapping.transforms()[0]
        folds = int(np.count_nonzero(determinant <= 0))
        text = (
            f"MI {result.mi_before:.4f} -> {result.mi_after:.4f}; folds (det J <= 0): "
            f"{folds}; min det J {determinant.min():.2f}; "
            f"{result.timings['total']:.1f} s"
        )
        fixed_labels = self._layer(self.fixed_labels_choice)
        if fixed_labels is not None and self.job.moving_labels is not None:
            warped_labels = mapping.transform(self.job.moving_labels, interpolation="nearest")
            self._show_layer(WARPED_LABELS, warped_labels, "labels", fixed_affine)
            fixed_grid_labels = apply_transforms(
                layer_volume(fixed_labels, labels=True), self.job.fixed, [], "nearest"
            )
            self.table = overlap_scores(fixed_grid_labels, warped_labels)
            self._fill_table(self.table)
            text += (
                f"\nDice whole brain {self.table.whole_dice:.4f}, mean over labels "
                f"{self.table.mean_dice:.4f}; Jaccard {self.table.whole_jaccard:.4f} / "
                f"{self.table.mean_jaccard:.4f}"
            )
        self.summary.setText(text)
        self.status.setText("Done")
        self.progress.setValue(self.progress.maximum())
        if self._last_histogram is not None:
            self._draw_plots(self._last_histogram)
        self._set_running(False)

    def _fill_table(self, table):
        totals = [
            {
                "label": "",
                "name": "whole brain",
                "dice": table.whole_dice,
                "jaccard": table.whole_jaccard,
                "fixed_voxels": "",
                "warped_voxels": "",
            },
            {
                "label": "",
                "name": "mean over labels",
                "dice": table.mean_dice,
                "jaccard": table.mean_jaccard,
                "fixed_voxels": "",
                "warped_voxels": "",
            },
        ]
        _fill(self.totals_table, totals)
        self.overlap_table.setSortingEnabled(False)
        _fill(self.overlap_table, table.rows)
        self.overlap_table.setSortingEnabled(True)
        self.overlap_table.sortItems(0, Qt.SortOrder.AscendingOrder)

    # ---------------------------------------------------------------- exports
    def _original_mapping(self):
        """The result's map with its fields on the fixed file's own grid (for exports)."""
        mapping = self.result.mapping
        grid = original_grid(self._layer(self.fixed_choice))
        forward = on_grid(mapping.forward, mapping.fixed_grid.affine, grid)
        backward = on_grid(mapping.backward, mapping.fixed_grid.affine, grid)
        return DiffeomorphicMap(grid, mapping.moving_grid, mapping.prealign, forward, backward)

    def _export_with_dialog(self, export, default):
        path, _ = QFileDialog.getSaveFileName(self, "Export", default)
        if path:
            try:
                export(path)
                show_info(f"Wrote {path}")
            except (OSError, ValueError) as error:
                show_error(f"Export failed: {error}")

    def export_forward(self, path):
        """Write the forward warp (ITK/ANTs) on the fixed file's grid."""
        files.save_displacement(self.export_mapping, path, "forward")

    def export_inverse(self, path):
        """Write the inverse warp (ITK/ANTs) on the fixed file's grid."""
        files.save_displacement(self.export_mapping, path, "inverse")

    def export_affine(self, path):
        """Write the prealignment as an ITK affine (.txt or .mat)."""
        files.save_affine(self.result.prealignment, path)

    def export_warped(self, path):
        """Write the warped moving image on the fixed file's grid."""
        grid = self.export_mapping.fixed_grid
        files.save_volume(
            path, on_grid(self.result.warped, self.job.fixed.affine, grid), grid.affine
        )

    def export_warped_labels(self, path):
        """Write the warped moving labels on the fixed file's grid."""
        if WARPED_LABELS not in self.viewer.layers:
            raise ValueError("there are no warped labels: choose moving labels and run")
        grid = self.export_mapping.fixed_grid
        data = self.viewer.layers[WARPED_LABELS].data
        files.save_volume(
            path, on_grid(data, self.job.fixed.affine, grid, "nearest"), grid.affine, labels=True
        )

    def export_table(self, path):
        """Write the overlap table as CSV."""
        if self.table is None:
            raise ValueError("there is no overlap table: choose fixed and moving labels")
        files.write_text(path, self.table.to_csv_text())

    # ---------------------------------------------------------------- label cleanup
    def clean_layer(self, name):
        """Clean a labels layer into a new layer "<name> cleaned"; returns the changes."""
        if name not in self.viewer.layers:
            show_error("Choose a labels layer to clean")
            return None
        layer = self.viewer.layers[name]
        cleaned, changes = clean_labels(np.asarray(layer.data))
        changed = [c for c in changes if c.island_voxels or c.holes_filled]
        kwargs = {
            "name": f"{name} cleaned",
            "scale": layer.scale,
            "translate": layer.translate,
            "metadata": dict(layer.metadata),
            "colormap": layer.colormap,
        }
        self.viewer.add_labels(cleaned, **kwargs)
        lines = [
            f"{c.name}: {c.islands_removed} islands ({c.island_voxels} voxels), "
            f"{c.holes_filled} hole voxels"
            for c in changed
        ]
        show_info(
            f"Cleaned {name}: {len(changed)} of {len(changes)} labels changed"
            + ("\n" + "\n".join(lines[:10]) if lines else "")
        )
        return changes
