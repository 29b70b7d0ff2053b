"""The napari dock widget: pick volumes, register live in the background, inspect, export.

`RegistrationWidget` composes the panel's parts and wires their signals: the inputs
(`inputs`), the options form, the run's worker (`run_controller`), its progress
(`progress`), the drawing of its frames (`frame_scheduler`), its layers (`run_layers`),
what the canvas shows (`inspection`), the results and exports (`results`) and the layer
tools (`layer_tools`).
"""

import time

from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_mireg.engine.cost import expected_seconds, run_costs
from napari_mireg.gui.colour_bar import MapColourBars
from napari_mireg.gui.dice_map import DICE_LEGEND
from napari_mireg.gui.frame_scheduler import FrameScheduler
from napari_mireg.gui.frames import planned_stages
from napari_mireg.gui.inputs import InputsBox
from napari_mireg.gui.inspection import MODES, InspectionView
from napari_mireg.gui.label_display import MANY_LABELS, WORST_COUNT
from napari_mireg.gui.layer_tools import LayerTools
from napari_mireg.gui.options_form import CUSTOM, DEFAULT, OptionsForm
from napari_mireg.gui.planes import PLANES, AnatomicalPlanes
from napari_mireg.gui.plots import LivePlots
from napari_mireg.gui.progress import ProgressReporter
from napari_mireg.gui.results import ResultsPanel
from napari_mireg.gui.run_controller import (
    RunButtons,
    RunController,
    collect_garbage,
    release_frozen,
)
from napari_mireg.gui.run_layers import RunLayers
from napari_mireg.gui.turns import Turns
from napari_mireg.gui.view_controls import ModeControls


class _VerticalScrollArea(QScrollArea):
    """A scroll area that scrolls its widget vertically only: it is as wide as the
    widget needs (whatever the widget shows now), as short as the dock allows.

    Parameters
    ----------
    room_for_scroll_bar : bool
        Count the vertical scroll bar in the minimum width (False for an area that only
        scrolls on screens too short for any dock, around the areas that hold the pages).
    """

    def __init__(self, room_for_scroll_bar=True):
        super().__init__()
        self._room_for_scroll_bar = room_for_scroll_bar
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def minimumSizeHint(self):
        hint = super().minimumSizeHint()
        scroll_bar = self.verticalScrollBar().sizeHint().width() * self._room_for_scroll_bar
        return QSize(self.widget().minimumSizeHint().width() + scroll_bar, hint.height())

    def eventFilter(self, watched, event):
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the widget's own minimum may have changed
        return super().eventFilter(watched, event)


class _PageScrollArea(_VerticalScrollArea):
    """The scroll area of a tab page: it asks for no more height than its minimum, so that
    the panel, whose word-wrapped lines lay it out by height for width (preferred heights),
    fits the dock without scrolling; the tabs take the height left over (stretch).
    """

    def sizeHint(self):
        return QSize(super().sizeHint().width(), self.minimumSizeHint().height())


class _ScrollingTabs(QTabWidget):
    """Tabs whose every page scrolls vertically when the dock is short (a 1280x800
    screen): the tallest page would otherwise set the tabs' minimum height, and with it the
    panel's. The pages are handled as themselves (`setCurrentWidget(page)`,
    `currentWidget()`), not as the scroll areas that hold them.
    """

    def addTab(self, page, title):
        area = _PageScrollArea()
        area.setWidget(page)
        return super().addTab(area, title)

    def widget(self, index):
        area = super().widget(index)
        return None if area is None else area.widget()

    def currentWidget(self):
        return self.widget(self.currentIndex())

    def indexOf(self, page):
        for index in range(self.count()):
            if self.widget(index) is page:
                return index
        return -1

    def setCurrentWidget(self, page):
        self.setCurrentIndex(self.indexOf(page))


class RegistrationWidget(QWidget):
    """MI-SyN registration of two layers, live: the panel, composed of its parts.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.job = None  # LiveRun of the current or last run
        self.summary = None  # RunSummary of the last finished run
        self._pair_names = ("", "")  # the fixed and moving images' names of the run
        self.view = InspectionView(napari_viewer)
        self.planes = AnatomicalPlanes(napari_viewer)
        self.inputs = InputsBox(napari_viewer)
        self.runner = RunController()
        self.buttons = RunButtons()
        self.plots = LivePlots()
        self.reporter = ProgressReporter(self.plots)
        self.run_layers = RunLayers(napari_viewer, self.view)
        self.scheduler = FrameScheduler(self.run_layers, self.view, self.reporter)
        self.results = ResultsPanel()
        self.tools = LayerTools(napari_viewer, self.run_layers)
        # The window's work around a run (layers, tables, plots), one step a turn.
        self.turns = Turns(self)

        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addWidget(self.inputs)
        layout.addWidget(self.buttons)
        layout.addWidget(self.reporter)
        layout.addLayout(self._plane_row())
        layout.addLayout(self._view_row())
        layout.addLayout(self._labels_row())
        # Each page scrolls on its own when the dock is short (a 1280x800 screen): the
        # plane, view and label controls above the tabs stay in sight.
        self.tabs = _ScrollingTabs()
        parameters = self._parameters_page()
        layout.insertLayout(layout.indexOf(self.buttons), self._preset_row())
        self.tabs.addTab(parameters, "Parameters")
        self.tabs.addTab(self.plots, "Live")
        self.tabs.addTab(self.results, "Results")
        self.tabs.addTab(self.tools, "Tools")
        layout.addWidget(self.tabs, 1)
        self._scroll_area(content)
        self._wire()
        self._set_running(False)
        collect_garbage()

    # ---------------------------------------------------------------- building the panel
    def _scroll_area(self, content):
        """Show `content` in a vertical scroll area filling the widget (a fallback for
        screens shorter than the panel's minimum, about 450 px: the tab pages scroll on their
        own, so no room is kept for this area's scroll bar).
        """
        area = _VerticalScrollArea(room_for_scroll_bar=False)
        area.setWidget(content)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(area)

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

    def _preset_row(self):
        """The preset picker and the run's expected time (for the chosen inputs)."""
        row = QHBoxLayout()
        row.addWidget(QLabel("Preset:"))
        row.addWidget(self.options_form.preset_choice)
        self.expected_time = QLabel()
        self.expected_time.setToolTip(
            "The time a run of the chosen inputs and options is expected to take on this "
            "kind of machine (2 busy cores); a level that converges early ends sooner"
        )
        row.addWidget(self.expected_time, 1)
        self.options_form.preset_choice.textActivated.connect(self._preset_chosen)
        self.options_form.changed.connect(self.show_expected_time)
        self.inputs.changed.connect(self.show_expected_time)
        self.show_expected_time()
        return row

    def _preset_chosen(self, name):
        if name == CUSTOM:  # the options are set in the Parameters tab
            self.tabs.setCurrentIndex(0)

    def expected_seconds(self, preset=None):
        """Seconds a run of the chosen inputs is expected to take, with the form's options
        or a preset's; None when it cannot be said (no fixed image, a bad option).
        """
        form = self.options_form
        try:
            options = form.options() if preset is None else form.preset_options(preset)
            shape, extracted = self.inputs.planned(options)
        except ValueError:
            return None
        return expected_seconds(run_costs(options, shape, extracted=extracted))

    def show_expected_time(self, *_):
        """Say how long a run is expected to take, and the Default preset's time beside."""
        seconds = self.expected_seconds()
        if seconds is None:
            self.expected_time.setText("")
            return
        text = f"expected {_duration(seconds)}"
        if self.options_form.preset() != DEFAULT:
            text += f" (Default {_duration(self.expected_seconds(DEFAULT))})"
        self.expected_time.setText(text)

    def _plane_row(self):
        row = QHBoxLayout()
        row.addWidget(QLabel("Plane:"))
        self.plane_buttons = QButtonGroup(self)
        tips = {
            "axial": "Axial slices, anterior at the top, the patient's right on the left",
            "coronal": "Coronal slices, superior at the top, the patient's right on the left",
            "sagittal": "Sagittal slices, superior at the top, anterior on the left",
        }
        _add_choice_buttons(
            row, self.plane_buttons, PLANES, tips, self.planes.plane, self.planes.show
        )
        return row

    def _view_row(self):
        """The comparison mode's buttons, the control of the mode on show, and the colour
        bars of the maps on show.
        """
        box = QVBoxLayout()
        box.setSpacing(2)  # one block: the panel stays short enough for a 1280x800 screen
        self.mode_buttons = QButtonGroup(self)
        self.mode_controls = ModeControls(self.view)
        self.colour_bars = MapColourBars(self.viewer)

        def choose(mode):
            self.view.set_mode(mode)
            self.mode_controls.show_mode(mode)

        tips = {
            "overlay": "The warped image in gray over the fixed image (at a chosen opacity), "
            "with the label outlines",
            "composite": "The fixed image in green plus the warped image in magenta: gray "
            "where they agree",
            "checkerboard": "Alternate tiles of the fixed and the warped image (of a chosen side)",
            "flicker": "The fixed and the warped image in turns",
            "swipe": "The warped image left of a boundary, the fixed image right of it (a "
            "slider moves the boundary)",
            "dice map": "The fixed labels filled by their Dice after the run ("
            + ", ".join(DICE_LEGEND.splitlines()[1:])
            + ")",
            "det J": "det J of the map after the run (blue: shrinks, white: volume kept, red: "
            "grows; a fold, det J <= 0, is full blue), with the label outlines",
        }
        # Four buttons on the first line; the last three share the second with the control
        # of the mode on show: the panel stays short enough for a 1280x800 screen.
        for modes in (MODES[:4], MODES[4:]):
            row = QHBoxLayout()
            label = QLabel("View:")
            if modes[0] != MODES[0]:
                # Hidden but holding its room: the second line's buttons line up.
                policy = label.sizePolicy()
                policy.setRetainSizeWhenHidden(True)
                label.setSizePolicy(policy)
                label.hide()
            row.addWidget(label)
            _add_choice_buttons(row, self.mode_buttons, modes, tips, self.view.mode, choose)
            box.addLayout(row)
        row.addWidget(self.mode_controls, 1)
        box.addWidget(self.colour_bars)
        return box

    # The label display control's choices: (text, display name, tooltip).
    LABEL_CHOICES = (
        ("Off", "off", "No label outlines"),
        ("Selected", "selected", "Only the label clicked in the results table"),
        (
            "Worst by Dice",
            "worst",
            "The labels of lowest Dice after the run (during the run: the white matter and "
            f"the lateral ventricles); the default with more than {MANY_LABELS} labels",
        ),
        ("All", "all", "Every label (a mosaic with a parcellation)"),
    )

    def _labels_row(self):
        row = QHBoxLayout()
        row.addWidget(QLabel("Outlines:"))
        self.label_choice = QComboBox()
        for index, (text, _, tip) in enumerate(self.LABEL_CHOICES):
            self.label_choice.addItem(text)
            self.label_choice.setItemData(index, tip, Qt.ItemDataRole.ToolTipRole)
        self.label_choice.setToolTip(
            "Which labels are outlined: fixed labels in green, warped moving labels in "
            "magenta (overlay view only)"
        )
        self.worst_count = QSpinBox()
        self.worst_count.setRange(1, 50)
        self.worst_count.setValue(WORST_COUNT)
        self.worst_count.setToolTip("How many of the worst labels are outlined")
        self.label_choice.currentIndexChanged.connect(self._label_display_chosen)
        self.worst_count.valueChanged.connect(self._label_display_chosen)
        row.addWidget(self.label_choice, 1)
        row.addWidget(self.worst_count)
        self._show_label_display()
        return row

    def _label_display_chosen(self, *_):
        display = self.LABEL_CHOICES[self.label_choice.currentIndex()][1]
        self.view.set_label_display(display, self.worst_count.value())
        self.worst_count.setEnabled(display == "worst")

    def _show_label_display(self):
        """Put the view's label display into the control (it changes at Run and on a
        table click).
        """
        names = [name for _, name, _ in self.LABEL_CHOICES]
        self.label_choice.blockSignals(True)
        self.label_choice.setCurrentIndex(names.index(self.view.label_display))
        self.label_choice.blockSignals(False)
        self.worst_count.setEnabled(self.view.label_display == "worst")

    def _wire(self):
        buttons, runner, reporter = self.buttons, self.runner, self.reporter
        buttons.run_clicked.connect(self._run_or_cancel)
        buttons.pause_clicked.connect(self._pause_or_resume)
        buttons.continue_clicked.connect(lambda: self.start(continue_from=self.summary))
        runner.frame_arrived.connect(self.scheduler.show_frame)
        runner.result_ready.connect(self._show_result)
        runner.failed.connect(self._failed)
        runner.paused.connect(reporter.paused)
        runner.resumed.connect(reporter.resumed)
        runner.ended.connect(self._ended)
        self.results.label_clicked.connect(self.select_label)
        # A removed layer's arrays are freed: the frozen objects go back to the collector.
        # A callable of this panel's own, which its closing disconnects (not another's).
        self._layer_removed = lambda _event: release_frozen()
        self.viewer.layers.events.removed.connect(self._layer_removed)

    # ---------------------------------------------------------------- running
    def options(self):
        """RegistrationOptions from the panel (OptionError, a ValueError, on a bad value)."""
        return self.options_form.options()

    def start(self, continue_from=None):
        """Start a registration (or continue the last one); returns the worker.

        A new run gets its own layers (the previous run's are hidden, kept for comparison)
        and clears the results panel; a continued run keeps its layers.
        """
        if self.runner.running:
            return None
        pressed = time.perf_counter()  # the summary's time counts from here
        continued = continue_from is not None
        try:
            options = self.options()
            if continued:
                options = options.replace(level_iters=(self.buttons.more_iterations.value(),))
            chosen, job = self.inputs.live_run(
                options, continue_from.result.mapping if continued else None
            )
        except ValueError as error:
            show_error(f"Cannot register: {error}")
            self.reporter.status.setText(f"Not started: {error}")
            return None
        self.job = job
        self.results.exports.set_inputs(chosen, job.options)
        self._pair_names = self.inputs.names()
        self.summary = None
        self.reporter.begin(job.options, continued, planned_stages(job))
        self.scheduler.begin(self.live_images.isChecked(), self.activity_progress.isChecked())
        worker = self.runner.start(job, self.scheduler.pacing)
        # The layers are made while the worker makes the first frame (which arrives once
        # this handler has returned).
        self.run_layers.begin(job, chosen, continued)
        # After the earlier runs' views are dropped (a removed layer unfreezes): the run's
        # layers are frozen with the rest, and no full collection pauses the run or its end.
        collect_garbage()
        self._show_label_display()
        self.results.begin(f"Run {self.run_layers.run_number} is under way...", pressed)
        self._set_running(True)
        self.tabs.setCurrentWidget(self.plots)
        if self.activity_progress.isChecked():
            # Last: napari's bar processes pending events as it is made (the first frame
            # may be drawn then), and here its cost adds to the wait for the first frame
            # rather than holding the window during the run.
            self.reporter.add_activity_bar()
        return worker

    def cancel(self):
        """Stop the running registration at its next iteration; nothing is kept (a
        result that has arrived is shown).
        """
        if self.runner.cancel():
            self.reporter.say("Cancelling...")

    def _run_or_cancel(self):
        if self.runner.running:
            self.cancel()
        else:
            self.start()

    def _pause_or_resume(self):
        if not self.runner.running:
            return
        if self.runner.is_paused:
            self.runner.resume()
            self.buttons.set_paused(False)
        else:
            self.runner.pause()
            self.buttons.set_paused(True)
            self.reporter.pausing()

    def _show_live_images(self, show):
        self.scheduler.show_live_images(show)

    def _set_running(self, running):
        self.buttons.set_running(running, can_continue=self.summary is not None)
        self.tools.set_run_active(running)

    def _show_result(self, summary):
        """Put a RunSummary (computed in the worker) into layers and the results panel,
        a layer or a table a turn of the event loop; then the run ends.
        """
        self.scheduler.end()
        self.summary = summary
        self.turns.add(
            *self.run_layers.result_steps(summary),
            lambda: self._show_tables(summary),
            self.reporter.finish,
            self.runner.result_shown,
        )

    def _show_tables(self, summary):
        fixed, moving = self._pair_names
        self.results.show_summary(
            summary,
            self.job.fixed.affine,
            f"Run {self.run_layers.run_number}: {moving} onto {fixed}",
        )
        self.tabs.setCurrentWidget(self.results)

    def _failed(self, error):
        self.scheduler.end()
        show_error(f"Registration failed: {error}")
        self.reporter.say(f"Failed: {error}")
        self.results.clear(f"Run {self.run_layers.run_number} failed: no results.")

    def _ended(self, outcome):
        """Back to idle, whatever the outcome; a cancelled run shows no results."""
        self.scheduler.end()
        if outcome == "cancelled":
            self.reporter.say("Cancelled")
            self.results.clear(f"Run {self.run_layers.run_number} was cancelled: no results.")
        self.reporter.end()
        self._set_running(False)
        self.turns.add(*(layer.refresh for layer in self.run_layers.stale_thumbnails()))

    def _stop(self):
        """The panel is closed: its run is cancelled, a result being shown is dropped."""
        self.turns.clear()
        self.viewer.layers.events.removed.disconnect(self._layer_removed)
        release_frozen()
        self.cancel()
        self.runner.result_shown()
        self.view.stop()
        self.colour_bars.close_viewer_link()

    def closeEvent(self, event):
        """Closing the panel cancels its run."""
        self._stop()
        super().closeEvent(event)

    def changeEvent(self, event):
        """Taken out of its dock (napari's close button): the run is cancelled."""
        if event.type() == QEvent.Type.ParentChange and self.parentWidget() is None:
            self._stop()
        super().changeEvent(event)

    # ---------------------------------------------------------------- results
    @property
    def table(self):
        """The last run's OverlapTable (None without one)."""
        return None if self.summary is None else self.summary.table

    @property
    def result(self):
        """The last run's engine Result (None without one)."""
        return None if self.summary is None else self.summary.result

    def select_label(self, label):
        """Outline only `label` and centre the view on it (-1: back to the label display
        used before).
        """
        if label < 0:
            self.view.select_label(None)
        else:
            centres = {} if self.summary is None else self.summary.centres or {}
            self.view.select_label(label, centres.get(label))
        self._show_label_display()


def _duration(seconds):
    """A rough duration: "about 40 s", "about 3 min"."""
    if seconds < 90:
        return f"about {max(1, round(seconds)):d} s"
    return f"about {round(seconds / 60):d} min"


def _add_choice_buttons(row, group, choices, tips, current, choose):
    """One checkable button per choice, in an exclusive group.

    Parameters
    ----------
    row : QHBoxLayout
        Where the buttons go.
    group : QButtonGroup
        The exclusive group they join.
    choices : iterable of str
        The choices, in the buttons' order.
    tips : dict of str
        Tooltip of each choice.
    current : str
        The choice checked now.
    choose : callable
        Called with the choice when its button is clicked.
    """
    for choice in choices:
        button = QPushButton(choice[0].upper() + choice[1:])  # "Dice map", "Det J"
        button.setCheckable(True)
        button.setChecked(choice == current)
        button.setToolTip(tips[choice])
        button.clicked.connect(lambda _, c=choice: choose(c))
        group.addButton(button)
        row.addWidget(button)
