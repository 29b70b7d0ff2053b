"""Work for the window's thread spread over turns of the event loop.

Making a napari layer takes 0.1-0.4 s, a table or a plot tens of ms: done in one go at the
end of a 1 mm run they held the window for seconds. Queued here, the steps run in turns of
the event loop, each turn followed by the repaint of what it changed and by whatever else
the window has to do (mouse, keys). A turn takes steps until `TURN_SECONDS` have passed:
cheap steps share a turn, and with it a repaint (each re-composes the window, 50-100 ms
with software OpenGL at 1 mm).
"""

import time
from collections import deque

from qtpy.QtCore import QObject, QTimer

# Main-thread time after which a turn takes no more steps (the step that passes it ends).
TURN_SECONDS = 0.015


class Turns(QObject):
    """A queue of steps (callables), run in turns of the event loop, as many a turn as
    fit in `TURN_SECONDS` (at least one).

    A zero-interval timer drains it; Qt never re-enters a timer's slot, so a step that
    processes pending events (napari's activity bar does) does not start the next one.

    Parameters
    ----------
    parent : QObject, optional
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self._steps = deque()
        self._timer = QTimer(self)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._next)

    @property
    def pending(self):
        """Number of steps still to run."""
        return len(self._steps)

    def add(self, *steps):
        """Queue `steps`, after those already queued."""
        self._steps.extend(steps)
        if self._steps and not self._timer.isActive():
            self._timer.start()

    def clear(self):
        """Drop the steps not yet run."""
        self._steps.clear()
        self._timer.stop()

    def _next(self):
        began = time.perf_counter()
        while self._steps:
            step = self._steps.popleft()
            step()  # an error reaches napari's handler; the later steps run in later turns
            if time.perf_counter() - began >= TURN_SECONDS:
                break
        if not self._steps:
            self._timer.stop()
