"""The live-view generator the widget runs in a worker thread (no Qt, no napari here).

It drives the engine through :func:`register_steps` and turns its steps into Frames. Every
SyN iteration gives a light Frame (level, iteration, energy, joint histogram), and the
prealignment light "prealigning" Frames (its share done) so that progress moves; the heavy
views (warped image and labels at full resolution, update magnitude) are computed in the
worker only when `Pacing` says so, which keeps their cost (computing and drawing) under a
fixed share of the engine's time. Stopping the generator stops the engine at once.
"""

import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from napari_mireg.engine.cost import run_costs
from napari_mireg.engine.masks import extracted_sides
from napari_mireg.engine.registration import register_steps
from napari_mireg.engine.transforms import AffineMap
from napari_mireg.gui.display import on_grid
from napari_mireg.gui.summary import summarise
from napari_mireg.options import RegistrationOptions

# The engine's CPU priority in the widget: with every core busy, the viewer's drawing
# (software OpenGL included) then gets a core when it needs one. Measured on 2 cores with
# llvmpipe, 1 mm pair: largest event-loop gaps 116-231 ms against 285-320 ms at normal
# priority. Nice 19 was worse (the engine's thread holds the GIL that the viewer needs).
# The price: the engine yields to anything else that runs; in the widget on that machine
# it took 20 % longer than register() (6 % at normal priority).
ENGINE_NICENESS = 10


@dataclass
class Frame:
    """One live update.

    Attributes
    ----------
    stage : {"start", "brain extraction", "prealigning", "prealigned", "syn", "scoring"}
        "brain extraction": a side's brain mask is being made (ROBEX), or is made (`mask`);
        "scoring": the registration has ended, the end-of-run work is under way.
    level, iteration : int
        SyN position (-1 before SyN).
    energy : float or None
        -MI of the iteration.
    joint_histogram : ndarray or None
    warped, warped_labels : ndarray or None
        Moving image / labels on the fixed grid (heavy frames only).
    update_magnitude : ndarray or None
        Length (mm) of the iteration's update, interpolated from the level grid onto the
        fixed grid so that the layer keeps its shape and place at every level (heavy frames
        only).
    prealigned : float
        Share of the prealignment done (0 to 1; 1 from "prealigned" on).
    side : str
        The side of a "brain extraction" frame: "fixed" or "moving".
    seconds : float
        Time since a brain extraction started.
    mask : ndarray of bool or None
        A brain mask just made, on the side's grid (`LiveRun.fixed` or `LiveRun.moving`).
    """

    stage: str
    level: int = -1
    iteration: int = -1
    energy: float | None = None
    joint_histogram: np.ndarray | None = None
    warped: np.ndarray | None = None
    warped_labels: np.ndarray | None = None
    update_magnitude: np.ndarray | None = None
    prealigned: float = 0.0
    side: str = ""
    seconds: float = 0.0
    mask: np.ndarray | None = None


@dataclass
class Pacing:
    """Decides when a heavy frame is due, so that showing frames costs at most `share`.

    A heavy frame costs its computation in the worker (measured here) and its drawing,
    which the viewer reports with :meth:`drawn`: the time from putting the frame into the
    layers to the end of the repaint that shows it. The last frame's computing and the
    median drawing time of the last three frames set the wait before the next one (the
    first frame's drawing also pays one-off costs, such as compiling the layers' shaders).

    Attributes
    ----------
    share : float
        Largest fraction of the engine's time spent on showing frames.
    min_interval : float
        Seconds between heavy frames at least (``inf``: none during SyN).
    """

    share: float = 0.1
    min_interval: float = 1.0
    _last_end: float = field(default=-np.inf, repr=False)
    _computing: float = field(default=0.0, repr=False)
    _drawing: list = field(default_factory=list, repr=False)

    def due(self):
        """True when a heavy frame may be made now."""
        drawing = float(np.median(self._drawing)) if self._drawing else 0.0
        cost = self._computing + drawing
        waited = time.perf_counter() - self._last_end
        wait = max(self.min_interval, cost * (1 - self.share) / self.share)
        return wait < np.inf and waited >= wait

    def frame_made(self, started):
        """Record a heavy frame computed from `started` (perf_counter seconds) to now."""
        self._last_end = time.perf_counter()
        self._computing = self._last_end - started

    def drawn(self, seconds):
        """Record how long the last heavy frame took to draw (seconds)."""
        self._drawing = self._drawing[-2:] + [seconds]


@dataclass
class LiveRun:
    """What the widget asks for: volumes on display grids and registration options."""

    fixed: object
    moving: object
    moving_labels: object = None
    options: RegistrationOptions = field(default_factory=RegistrationOptions)
    initial: object = None
    fixed_labels: object = None  # on the fixed image's grid, for the end-of-run scores
    export_grid: object = None  # the fixed file's own grid, for exports
    fixed_mask: object = None  # bool array on the fixed grid: where the metric counts
    moving_mask: object = None  # bool array on the moving grid


def planned_stages(run):
    """The expected work of a LiveRun's stages (:func:`napari_mireg.engine.cost.run_costs`).

    A side with labels or a mask is not brain-extracted, and a continued
    run has no prealignment.

    Parameters
    ----------
    run : LiveRun

    Returns
    -------
    list of StageCost
    """
    options = RegistrationOptions.build(run.options)
    extracted = extracted_sides(
        options.brain_extraction,
        run.fixed_labels is not None or run.fixed_mask is not None,
        run.moving_labels is not None or run.moving_mask is not None,
    )
    return run_costs(
        options, run.fixed.data.shape, extracted=extracted, continued=run.initial is not None
    )


# Seconds between two "prealigning" frames at least (its iterations take milliseconds at
# the coarse level: a frame for each would only load the event loop).
PREALIGNING_SECONDS = 0.2


def _share(step, stages):
    """Share of the prealignment done at an AffineStep: levels count alike, and the
    stages within a level; iterations within a stage are counted against 50 (a stage
    often converges sooner, and the share then jumps to the next stage).
    """
    stage = 1 if step.stage == "affine" else 0
    within = min(step.iteration / 50.0, 1.0)
    return min((step.level + (stage + within) / stages) / step.levels, 1.0)


def live_frames(run, pacing=None):
    """Register `run`, yielding Frames; returns the engine's Result.

    The first Frame (the moving image as it lies, resampled on the fixed grid) comes before
    any registration work, so the view reacts at once. Closing this generator closes the
    engine's.
    """
    pacing = pacing or Pacing()
    lower_thread_priority(ENGINE_NICENESS)
    options = RegistrationOptions.build(run.options)

    def heavy_frame(stage, transform, update=None, level_affine=None, **light):
        """A Frame with the moving image and labels resampled by `transform`."""
        started = time.perf_counter()
        labels = None if run.moving_labels is None else transform(run.moving_labels, "nearest")
        frame = Frame(stage, warped=transform(run.moving, "linear"), warped_labels=labels, **light)
        if update is not None:
            frame.update_magnitude = on_grid(
                np.sqrt((update**2).sum(axis=-1)), level_affine, run.fixed
            )
        pacing.frame_made(started)
        return frame

    if run.initial is None:  # a continued run has neither prealignment nor its views
        yield heavy_frame("start", _resampler(AffineMap(np.eye(4)), run.fixed))
    # As in the engine's own runs: a side's mask, else its label map's brain, is where the
    # metric counts.
    steps = register_steps(
        run.fixed,
        run.moving,
        options,
        initial=run.initial,
        fixed_mask=run.fixed_mask,
        moving_mask=run.moving_mask,
        fixed_labels=None if run.fixed_labels is None else run.fixed_labels.data,
        moving_labels=None if run.moving_labels is None else run.moving_labels.data,
    )
    stages = 2 if options.prealign == "affine" else 1
    shown = -math.inf
    try:
        while True:
            try:
                step = next(steps)
            except StopIteration as finished:
                return finished.value
            if step.phase == "brain extraction":
                yield Frame(step.phase, side=step.side, seconds=step.seconds, mask=step.mask)
                continue
            if step.phase == "prealignment":
                now = time.perf_counter()
                if now - shown >= PREALIGNING_SECONDS:
                    shown = now
                    yield Frame("prealigning", prealigned=_share(step, stages))
                continue
            if step.phase == "prealigned":
                transform = _resampler(step.prealignment, run.fixed)
                yield heavy_frame("prealigned", transform, prealigned=1.0)
                continue
            light = {
                "prealigned": 1.0,
                "level": step.level,
                "iteration": step.iteration,
                "energy": step.energy,
                "joint_histogram": step.joint_histogram,
            }
            if not pacing.due():
                yield Frame("syn", **light)
                continue
            yield heavy_frame(
                "syn", step.warp, update=step.update, level_affine=step.level_affine, **light
            )
    finally:
        steps.close()  # at once, not when the generator is collected


def _resampler(affine_map, grid):
    """``(image, interpolation) -> image on grid`` through an AffineMap (a heavy frame's)."""
    return lambda image, interpolation: affine_map.transform(image, grid, interpolation)


def run_and_summarise(run, pacing=None):
    """:func:`live_frames`, then the end-of-run work (det J, scores, exports' map) in the
    same worker thread, announced by a "scoring" Frame; returns a RunSummary.
    """
    result = yield from live_frames(run, pacing)
    yield Frame("scoring", prealigned=1.0)
    return summarise(run, result)


def until_stopped(steps, stop):
    """Yield from the generator `steps` until it ends or `stop` is set; returns its value
    (None when stopped).

    `steps` is closed on the way out, in the thread that ran it, so that the engine's
    scopes (the SyN's reused buffers) end where they began; a worker that is merely told to
    quit leaves its generator suspended, and whatever the engine holds with it.

    Parameters
    ----------
    steps : generator
    stop : threading.Event
        Looked at before each step.
    """
    try:
        while not stop.is_set():
            try:
                item = next(steps)
            except StopIteration as finished:
                return finished.value
            yield item
        return None
    finally:
        steps.close()


def lower_thread_priority(niceness):
    """Raise the calling thread's nice value to at least `niceness` (Linux only).

    On Linux each thread has its own nice value, and the OpenMP threads that the engine
    starts from this thread inherit it. Elsewhere, or if the system refuses, nothing
    changes. A thread cannot lower it again without privileges, so the pool thread that ran
    the engine keeps it, which only matters to the engine's later runs.
    """
    if not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        if current < niceness:
            os.setpriority(os.PRIO_PROCESS, thread, niceness)
    except OSError:
        pass
