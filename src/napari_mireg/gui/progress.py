"""How far a run is: the progress bar, the status line, napari's activity dock bar, and the
live plots (the joint histogram and the MI curve).

The bar counts the prealignment as many units as the SyN has iterations (a new run with a
prealignment), then one unit per SyN iteration, then one for the end-of-run scores.
"""

from napari.utils import progress
from qtpy.QtGui import QMovie
from qtpy.QtWidgets import QLabel, QMainWindow, QProgressBar, QVBoxLayout, QWidget


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
        self._prealign_units = 0
        self._planned_iterations = 0
        self._syn_done = 0
        self._paused = False
        self._running = False
        self._last_status = ""

    def begin(self, options, continued):
        """A run with RegistrationOptions `options` starts (`continued`: from the last map,
        whose MI curve goes on).
        """
        self._options = options
        if not continued:
            self.energies = []
        syn_iterations = sum(options.level_iters)
        self._prealign_units = syn_iterations if not continued and options.prealign != "none" else 0
        self._planned_iterations = len(self.energies) + syn_iterations
        self._syn_done = 0
        self._paused = False
        self._running = True
        self.bar.setRange(0, self._prealign_units + syn_iterations + 1)
        self.bar.setValue(0)
        self.say("Starting...")

    def count(self, frame):
        """Record a Frame's iteration (every Frame, drawn or not)."""
        if frame.energy is not None:
            self._syn_done += 1
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

    def _value(self, frame):
        if frame.stage in ("start", "prealigning", "prealigned"):
            return round(self._prealign_units * frame.prealigned)
        if frame.stage == "scoring":
            return self.bar.maximum() - 1
        return self._prealign_units + self._syn_done

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
        """Show `histogram` and the MI curve so far against the planned iterations."""
        self.plots.show_data(histogram, self.energies, self._planned_iterations)

    def add_activity_bar(self):
        """Add a bar to napari's activity dock for the run.

        Made once the first frame is shown rather than at Run, because making one takes
        napari about 0.1 s, and napari's bars process pending events as they change.
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
