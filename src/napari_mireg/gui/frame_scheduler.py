"""When and how a run's Frames are drawn, so that the viewer stays responsive.

Light frames (an iteration's energy and histogram) are counted; with the live images off,
and while prealigning, one a second also moves the progress. Heavy frames (warped images,
made when `Pacing` says) update the layers, then the progress, in steps spread over turns
of the event loop so that none blocks it for long.
"""

import time

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from napari_mireg.gui.frames import Pacing
from napari_mireg.gui.live_layers import UPDATE, WARPED, WARPED_LABELS

# Main-thread time a frame's steps may take in one turn of the event loop before the rest
# wait for the next turn (the repaint in between adds to the pause).
TURN_SECONDS = 0.015
# With the live images off (and while prealigning), the text, progress bar and plots move
# this often at most: each progress bar repaint re-composes the window.
PROGRESS_SECONDS = 1.0


class FrameScheduler(QObject):
    """Draws a run's Frames into its layers and progress, at a cadence the viewer keeps.

    Parameters
    ----------
    layers : RunLayers
        The run's layers, given the warped images.
    view : InspectionView
        Told when a new warped image is shown (the checkerboard follows it).
    reporter : ProgressReporter
        Moved with the frames.

    Signals
    -------
    first_frame_drawn()
        The run's first warped image is in its layer.
    """

    first_frame_drawn = Signal()

    def __init__(self, layers, view, reporter):
        super().__init__()
        self.layers = layers
        self.view = view
        self.reporter = reporter
        self.pacing = Pacing()
        self.first_frame_seconds = None  # from Run to the first warped image in its layer
        self.frames_seen = 0
        self._live_interval = self.pacing.min_interval
        self._live_images = True
        self._run = 0  # counts runs: steps of an earlier run are dropped
        self._active = False
        self._started = 0.0
        self._animation_held = True
        self._progress_shown_at = 0.0

    def begin(self, live_images, hold_animation):
        """A run starts: a new `pacing` (to hand the run), with or without live images;
        `hold_animation`: hold napari's busy animation once it shows.
        """
        self.pacing = Pacing()
        self._live_interval = self.pacing.min_interval
        self.show_live_images(live_images)
        self._run += 1
        self._active = True
        self.first_frame_seconds = None
        self.frames_seen = 0
        self._progress_shown_at = 0.0
        self._animation_held = not hold_animation
        self._started = time.perf_counter()

    def end(self):
        """The run's result is shown, or it was cancelled or failed: drop its steps left."""
        self._active = False

    def show_live_images(self, show):
        """Turn the live images on or off, also during a run (no SyN iteration is due
        for a heavy frame while they are off).
        """
        self._live_images = show
        self.pacing.min_interval = self._live_interval if show else np.inf

    def show_frame(self, frame):
        """Draw one Frame (main thread).

        Light frames record the energy; with the live images off, and while prealigning,
        one a second also moves the text and the progress bar (and the plots). Heavy frames
        (paced by `Pacing`) update the layers, then the text, the progress bar and the
        plots, in steps spread over turns of the event loop so that none blocks it for
        long (see `_run_steps`).
        """
        if not self._animation_held:
            self._animation_held = self.reporter.hold_busy_animation()
        self.frames_seen += 1
        self.reporter.count(frame)
        if frame.stage == "scoring":
            self._show_progress(frame)
            return
        if frame.mask is not None:  # a brain mask just made: its layer at once
            self.layers.show_mask(frame.side, frame.mask)
            self._show_progress(frame)
            return
        if frame.warped is None:
            slow = frame.stage in ("brain extraction", "prealigning") or not self._live_images
            if slow and time.perf_counter() - self._progress_shown_at >= PROGRESS_SECONDS:
                self._show_progress(frame)  # one cheap step; not a drawing for Pacing
            return
        layers = self.layers
        steps = [lambda: layers.update(WARPED, frame.warped, "image")]
        if self.first_frame_seconds is None:
            steps.append(self._first_frame_shown)
        steps.append(self.view.frame_shown)
        if frame.warped_labels is not None:
            steps.append(lambda: layers.update(WARPED_LABELS, frame.warped_labels, "labels"))
        if frame.update_magnitude is not None and layers.has(UPDATE):
            steps.append(lambda: layers.update(UPDATE, frame.update_magnitude, "image"))
        steps.append(lambda: self._show_progress(frame))
        self._run_steps(steps)

    def _show_progress(self, frame):
        self._progress_shown_at = time.perf_counter()
        self.reporter.show(frame)

    def _first_frame_shown(self):
        if self.first_frame_seconds is None:  # two frames may have queued this step
            self.first_frame_seconds = time.perf_counter() - self._started
            self.first_frame_drawn.emit()

    def _run_steps(self, steps, began=None, run=None):
        """Run a frame's steps, as many in a turn of the event loop as fit in `TURN_SECONDS`.

        Each turn is followed by a repaint of what it changed: fewer turns mean fewer
        repaints (each re-composes the window, 50-100 ms with software OpenGL at 1 mm), and
        shorter turns shorter pauses. Pacing is told the time from the first step to the
        repaint after the last. Steps left when their run has ended (result shown, cancelled
        or failed), or when another run has started since, are dropped.
        """
        run = self._run if run is None else run
        if run != self._run or not self._active:
            return
        turn = time.perf_counter()
        began = turn if began is None else began
        while steps and time.perf_counter() - turn < TURN_SECONDS:
            steps.pop(0)()
        if steps:
            QTimer.singleShot(0, lambda: self._run_steps(steps, began, run))
        else:  # a zero timer runs once the pending repaint is done
            pacing = self.pacing
            QTimer.singleShot(0, lambda: pacing.drawn(time.perf_counter() - began))
