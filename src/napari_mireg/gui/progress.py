"""How far a run is: the progress bar, the status line, napari's activity dock bar, and the
live plots (the joint histogram and the MI curve, with a marker where each level starts).

The bar moves by the expected work of each stage (:mod:`napari_mireg.engine.cost`): a
brain extraction, the prealignment, each SyN level by its grid's voxels and iterations,
then the inversion and the scores. At 1 mm the finest level is most of the SyN's work,
and the bar says so.
"""

from itertools import accumulate

from napari.utils import progress
from qtpy.QtGui import QMovie
from qtpy.QtWidgets import QLabel, QMainWindow, QProgressBar, QVBoxLayout, QWidget

from napari_mireg.engine.cost import BRAIN_EXTRACTION_SECONDS, run_costs

# The bar's steps from start to end.
PROGRESS_STEPS = 1000
# A grid whose stages' shares stand for any run's when the caller gives no stages: the
# work of every stage but a brain extraction grows with the voxels alike.
NOMINAL_SHAPE = (197, 233, 189)
# A brain extraction reports no progress of its own: the bar follows its time against
# the usual time, and waits at this share of the stage until the mask is there.
EXTRACTION_SHARE_BEFORE_MASK = 0.9
# The engine's phase (a StageCost's) of each Frame stage.
STAGE_PHASES = {
    "brain extraction": "brain extraction",
    "prealigning": "prealignment",
    "prealigned": "prealignment",
    "syn": "syn",
    "scoring": "scoring",
}


class ProgressReporter(QWidget):
    """The progress bar and status line of a run; it also feeds the live plots.

    Parameters
    ----------
    plots : LivePlots
        Shown the run's joint histogram and MI curve as the progress moves.
    """

    def __init__(self, plots):
        super().__init__()
        self.plots = plots
        self.bar = QProgressBar()
        self.status = QLabel("Idle")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        self.energies = []  # MI of every SyN iteration of the run, continued runs included
        self.last_histogram = None
        self._options = None
        self._activity = None  # the activity dock's progress bar of a run
        self._stages = []  # the run's StageCost list
        self._before = []  # units of the stages before each stage
        self._total = 1.0
        self._planned_iterations = 0
        self._level = None  # the SyN level of the last iteration counted
        self.markers = []  # (iteration, text): where the MI curve's SyN and levels start
        self._paused = False
        self._running = False
        self._last_status = ""

    def begin(self, options, continued, stages=None):
        """A run with RegistrationOptions `options` starts (`continued`: from the last map,
        whose MI curve goes on).

        Parameters
        ----------
        options : RegistrationOptions
        continued : bool
        stages : list of StageCost, optional
            The run's expected work (:func:`napari_mireg.gui.frames.planned_stages`); by
            default that of a 1 mm brain with the options' brain extraction.
        """
        self._options = options
        if not continued:
            self.energies = []
            self.markers = []
        if stages is None:
            stages = run_costs(options, NOMINAL_SHAPE, continued=continued)
        self._stages = list(stages)
        units = [stage.units for stage in self._stages]
        self._before = [0.0, *accumulate(units)][:-1]
        self._total = max(sum(units), 1e-12)
        self._planned_iterations = len(self.energies) + sum(options.level_iters)
        self._level = None
        self._paused = False
        self._running = True
        self.bar.setRange(0, PROGRESS_STEPS)
        self.bar.setValue(0)
        self.say("Starting...")

    def count(self, frame):
        """Record a Frame's iteration (every Frame, drawn or not); the first iteration of
        the run's SyN, and of each level, marks the MI curve.
        """
        if frame.energy is not None:
            if frame.level != self._level:
                if self._level is None:  # the run's SyN starts
                    text = "continued" if self.energies else "SyN"
                else:
                    text = f"level {frame.level + 1}"
                self.markers.append((len(self.energies), text))
                self._level = frame.level
            self.energies.append(-frame.energy)
            self.last_histogram = frame.joint_histogram

    def say(self, text):
        """Show `text` as the run's status."""
        self._last_status = text
        self.status.setText(text)

    def pausing(self):
        """Pause was asked for: the run pauses at its next step."""
        self.status.setText("Pausing (at the next iteration)...")

    def paused(self):
        """The run is paused: the status says so, and what it was doing."""
        self._paused = True
        self.status.setText(f"Paused ({self._last_status})")

    def resumed(self):
        """The run goes on."""
        self._paused = False
        self.say("Running")

    def _done_units(self, frame):
        """Expected work done by the time of `frame` (units of the run's stages)."""
        if frame.stage == "start":
            return 0.0
        found = self._find(frame)
        if found is None:  # a stage that the plan did not expect: the bar stays put
            return None
        index, stage = found
        if frame.stage == "brain extraction":
            share = (
                1.0
                if frame.mask is not None
                else min(frame.seconds / BRAIN_EXTRACTION_SECONDS, EXTRACTION_SHARE_BEFORE_MASK)
            )
        elif frame.stage in ("prealigning", "prealigned"):
            share = frame.prealigned
        elif frame.stage == "syn":
            share = min((frame.iteration + 1) / max(stage.iterations, 1), 1.0)
        else:  # "scoring": the inversion is done, the scores start
            share = 0.0
        return self._before[index] + share * stage.units

    def _find(self, frame):
        """(index, StageCost) of the stage a Frame belongs to, or None."""
        phase = STAGE_PHASES[frame.stage]
        for index, stage in enumerate(self._stages):
            if stage.phase != phase:
                continue
            if phase == "syn" and stage.level != frame.level:
                continue
            if phase == "brain extraction" and stage.side != frame.side:
                continue
            return index, stage
        return None

    def _value(self, frame):
        """The bar's value at a Frame: its share of the run's expected work."""
        done = self._done_units(frame)
        if done is None:
            return self.bar.value()
        return min(round(PROGRESS_STEPS * done / self._total), PROGRESS_STEPS - 1)

    def show(self, frame):
        """Move the bar, the status and the plots to a Frame."""
        value = self._value(frame)
        # QProgressBar.setValue repaints at once, which re-composes the whole window
        # (50-100 ms with software OpenGL); with updates held it joins the turn's repaint.
        self.bar.setUpdatesEnabled(False)
        self.bar.setValue(value)
        self.bar.setUpdatesEnabled(True)
        if frame.stage == "scoring":
            text = "Registered; computing det J and the overlap scores..."
        elif frame.stage == "brain extraction":
            text = (
                f"Brain mask of the {frame.side} image made ({frame.seconds:.0f} s)"
                if frame.mask is not None
                else f"Extracting the brain ({frame.side}) with ROBEX... {frame.seconds:.0f} s "
                f"(usually about {BRAIN_EXTRACTION_SECONDS:.0f} s)"
            )
        elif frame.energy is None:
            text = {
                "start": "Prealigning...",
                "prealigning": f"Prealigning ({self._options.prealign})...",
            }.get(frame.stage, "Prealigned; SyN starting")
        else:
            levels = len(self._options.level_iters)
            text = (
                f"Level {frame.level + 1}/{levels}, iteration {frame.iteration + 1}: "
                f"MI {-frame.energy:.4f} (half-way images at the level's resolution)"
            )
            self.draw_plots(frame.joint_histogram)
        if self._paused:
            self.status.setText(f"Paused ({text})")
            self._last_status = text
        else:
            self.say(text)
        # The activity dock's bar moves with the progress bar; a repaint of it per
        # iteration would re-compose the whole window. Last, as it processes pending events.
        if self._activity is not None and value > self._activity.n:
            self._activity.update(value - self._activity.n)

    def draw_plots(self, histogram):
        """Show `histogram` and the MI curve so far against the planned iterations, with
        its level markers.
        """
        self.plots.mark_starts(self.markers)
        self.plots.show_data(histogram, self.energies, self._planned_iterations)

    def add_activity_bar(self):
        """Add a bar to napari's activity dock for the run.

        Made at the end of the Run handler: making one takes napari 0.1-0.3 s (it processes
        pending events, a repaint of the window), which adds to the wait for the first
        frame there rather than holding the window during the run.
        """
        if self._activity is not None:
            return
        bar = progress(total=self.bar.maximum(), desc="MI-SyN registration")
        if self._running:
            self._activity = bar
        else:  # the run ended while the bar was being made
            bar.close()

    def finish(self):
        """The run's result is shown: a full bar, the last histogram with the whole curve."""
        self.say("Done")
        self.bar.setValue(self.bar.maximum())
        if self.last_histogram is not None:
            self.draw_plots(self.last_histogram)

    def hold_busy_animation(self):
        """Pause the animated "in progress" GIF in the status bar of napari's window.

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

    def end(self):
        """The run has ended, whatever the outcome: the activity dock's bar goes."""
        self._paused = self._running = False
        if self._activity is not None:
            self._activity.close()
            self._activity = None
