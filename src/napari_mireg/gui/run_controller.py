"""A run's worker from start to end: pause, resume, cancel, and what it reports.

The registration runs in `napari.qt.threading.thread_worker` over
:func:`napari_mireg.gui.frames.run_and_summarise`; every Frame arrives in the main thread.
Cancel sets a stop that the run's generator looks at before each step
(:func:`napari_mireg.gui.frames.until_stopped`): it then closes the engine's generator in
the worker thread, which gives back the SyN's reused buffers. (`worker.quit()` would leave
the generator suspended, and with it up to 1 GiB for the rest of the process.)
"""

import gc
import threading

from napari.qt.threading import thread_worker
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QHBoxLayout, QPushButton, QSpinBox, QWidget

from napari_mireg.gui.frames import run_and_summarise, until_stopped


def collect_garbage():
    """A full garbage collection, then the objects left are frozen (`gc.freeze`).

    A full collection of napari's many objects pauses the event loop for 0.15-0.5 s at
    1 mm (each layer made adds to them), and Python starts one by itself after enough new
    objects: one fell at the end of every 1 mm run, while the result's layers were made.
    Frozen, the objects that exist at Run (napari's, the inputs' layers, the run's live
    layers) are skipped by the later collections, which then only look at the run's new
    objects. Done when the widget opens and at each Run; `release_frozen` gives them back
    to the collector.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def release_frozen(*_):
    """Give the frozen objects back to the garbage collector (a layer was removed, or the
    widget closes): a frozen object is never collected, and a removed layer's arrays
    should be freed.
    """
    gc.unfreeze()


class RunError(Exception):
    """A RuntimeError of a run, passed on under another type: napari's worker takes a
    RuntimeError for its own deletion and drops it, never saying that the run ended.
    """


def _delegate(steps):
    """A generator function over the generator `steps` (napari's worker takes a function)."""
    try:
        return (yield from steps)
    except RuntimeError as error:
        raise RunError(str(error)) from error


class RunController(QObject):
    """Starts a run's worker, pauses, resumes and cancels it, and says how it went.

    Signals
    -------
    frame_arrived(Frame)
        Each Frame of the run, in the main thread, until the run is told to stop.
    result_ready(RunSummary)
        The run ended by itself (not emitted for a cancelled or failed run). The run
        ends once the receiver has shown the result (over several turns of the event
        loop) and called `result_shown`.
    failed(Exception)
    paused(), resumed()
    ended(str)
        Last, whatever the outcome: "done", "failed" or "cancelled"; the engine's generator
        is closed by then.
    """

    frame_arrived = Signal(object)
    result_ready = Signal(object)
    failed = Signal(object)
    paused = Signal()
    resumed = Signal()
    ended = Signal(str)

    def __init__(self):
        super().__init__()
        self.worker = None
        self._stop = threading.Event()
        self._frames = None  # the run's generator
        self._outcome = None
        self._showing = False  # the result is being shown: the run ends once it is

    @property
    def running(self):
        """True from `start` until `ended` (while the result is shown too)."""
        return self.worker is not None or self._showing

    @property
    def is_paused(self):
        """True while the running worker is paused."""
        return self.worker is not None and self.worker.is_paused

    def start(self, job, pacing):
        """Run the LiveRun `job` in a worker thread, with heavy frames when `pacing` says.

        Returns the worker, or None while another run is under way.
        """
        if self.running:
            return None
        self._outcome = None
        self._stop = threading.Event()
        self._frames = until_stopped(run_and_summarise(job, pacing), self._stop)
        # Connecting `errored` here (not after) keeps napari from re-raising the error.
        self.worker = thread_worker(
            _delegate,
            connect={
                "yielded": self._yielded,
                "returned": self._returned,
                "errored": self._failed,
                "finished": self._finished,
                "paused": self.paused.emit,
                "resumed": self.resumed.emit,
            },
            start_thread=False,
        )(self._frames)
        self.worker.start()
        return self.worker

    def cancel(self):
        """Stop the run at its next step; nothing is kept.

        Returns True if a worker was told to stop (False between runs, and once the result
        has arrived).
        """
        if self.worker is None or self._showing:
            return False
        self._stop.set()
        if self.worker.is_paused:
            self.worker.resume()  # a paused generator would never see the stop
        return True

    def result_shown(self):
        """The result sent by `result_ready` is shown: the run ends (once its worker has)."""
        if self._showing:
            self._showing = False
            if self.worker is None:
                self._end()

    def pause(self):
        """Pause the run at its next step."""
        if self.worker is not None:
            self.worker.pause()

    def resume(self):
        """Resume a paused run."""
        if self.worker is not None:
            self.worker.resume()

    def _yielded(self, frame):
        # A run told to stop (Cancel, or napari closing its viewer) shows no more frames.
        worker = self.worker
        if worker is not None and not (self._stop.is_set() or worker.abort_requested):
            self.frame_arrived.emit(frame)

    def _returned(self, summary):
        if not self._stop.is_set():  # a stopped run returns nothing to show
            self._outcome = "done"
            self._showing = True
            self.result_ready.emit(summary)

    def _failed(self, error):
        self._outcome = "failed"
        self.failed.emit(error.__cause__ if isinstance(error, RunError) else error)

    def _finished(self):
        # Ended by itself, stopped or failed, the generator has closed in the worker thread;
        # a worker told to quit from outside (napari's teardown) has left it suspended.
        self._frames.close()
        self.worker = None
        if not self._showing:
            self._end()

    def _end(self):
        self.ended.emit(self._outcome or "cancelled")


class RunButtons(QWidget):
    """Run (Cancel while running), Pause/Resume, and Continue with more iterations.

    Signals
    -------
    run_clicked(), pause_clicked(), continue_clicked()
    """

    run_clicked = Signal()
    pause_clicked = Signal()
    continue_clicked = Signal()

    def __init__(self):
        super().__init__()
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Register the moving image to the fixed one (a new run)")
        self.run_button.clicked.connect(self.run_clicked.emit)
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self.pause_clicked.emit)
        self.more_iterations = QSpinBox(minimum=1, maximum=1000, value=10)
        self.more_iterations.setToolTip("Finest-level iterations that Continue adds")
        self.continue_button = QPushButton("Continue")
        self.continue_button.setToolTip("Run more finest-level iterations from the current map")
        self.continue_button.clicked.connect(self.continue_clicked.emit)
        for widget in (
            self.run_button,
            self.pause_button,
            self.more_iterations,
            self.continue_button,
        ):
            row.addWidget(widget)

    def set_running(self, running, can_continue=False):
        """Show the buttons of a running run, or of an idle panel (Continue if it can)."""
        self.run_button.setText("Cancel" if running else "Run")
        self.pause_button.setEnabled(running)
        self.set_paused(False)
        self.continue_button.setEnabled(not running and can_continue)

    def set_paused(self, paused):
        """Pause or Resume on the pause button."""
        self.pause_button.setText("Resume" if paused else "Pause")
