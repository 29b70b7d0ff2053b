"""The widget's responsiveness, first-frame latency and drawing overhead.

xvfb-run -a python benchmarks/bench_widget.py
- 1 mm pair (MNI T1 vs deformed T2-like, 197 x 233 x 189): a 10 ms QTimer probes the event
  loop while the widget registers for `--seconds`, with the window filling the screen;
  prints the largest gap between ticks, with the live images off (the engine's own effect)
  and on, and with frames replayed without the engine (the drawing's own effect).
- 2 mm sample pair: time from Run to the first live frame, and the SyN time of a full run
  in the widget against `register()` with the same prealignment and iterations (what drawing
  costs the engine), with napari's activity-dock progress off and on.
- 1 mm pair, a whole run with the panel's defaults (affine prealignment, 40x20x10, live
  images and activity-dock progress on): the largest event-loop gaps during the run (the
  first frame's drawing aside, which makes the layers) and at its end (the result's layers
  and tables), each with the stage it fell in, the main-thread time of each turn the
  window's steps ran in (`gui.turns.Turns`) and the pauses of Python's full garbage
  collections. `--full-run` measures only this; `--iterations 3,2,2` shortens the
  registration (the same start and end, fewer frames between).
"""

import argparse
import gc
import itertools
import os
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # testdata, peers

import napari
import numpy as np
from qtpy.QtCore import QEventLoop, QTimer
from qtpy.QtWidgets import QApplication
from testdata import deformed_pair, synthseg_tissue_labels, warp_linear

from napari_mireg import register
from napari_mireg.gui import run_controller
from napari_mireg.gui.display import labels_colormap, layer_kwargs, layer_volume, to_display
from napari_mireg.gui.frames import Frame
from napari_mireg.gui.sample import sample_pair
from napari_mireg.gui.turns import Turns
from napari_mireg.gui.widget import RegistrationWidget


def wait(seconds=None, until=None):
    """Run the Qt event loop for `seconds`, or until `until()` is true."""
    loop = QEventLoop()
    started = time.perf_counter()

    def check():
        timed_out = seconds is not None and time.perf_counter() - started > seconds
        if timed_out or (until is not None and until()):
            loop.quit()

    timer = QTimer()
    timer.timeout.connect(check)
    timer.start(100)
    loop.exec()
    timer.stop()


def add_volume(viewer, data, affine, name, labels=False):
    display, display_affine = to_display(data, affine)
    kwargs = layer_kwargs(display_affine, name, affine=affine, shape=data.shape)
    if labels:
        viewer.add_labels(display, colormap=labels_colormap(np.unique(display)), **kwargs)
    else:
        viewer.add_image(display, **kwargs)


def fill_screen(viewer):
    """Give the viewer's window the whole screen (under software OpenGL the cost of a
    repaint grows with the window's area, so the figures name it); returns "W x H".
    """
    window = viewer.window._qt_window
    window.setGeometry(QApplication.primaryScreen().availableGeometry())
    wait(0.5)
    return f"{window.width()} x {window.height()}"


def replayed_frames(job, pacing):
    """Frames like the engine's at 1 mm, with no engine running (the drawing alone): a
    heavy frame (warped image and labels shifted a voxel each time, an update magnitude)
    every 1.2 s, light frames every 0.3 s in between.
    """
    rng = np.random.default_rng(0)
    histogram = rng.random((32, 32))
    for iteration in itertools.count():
        time.sleep(0.3)
        if iteration % 4:
            yield Frame("syn", 0, iteration, -0.5, histogram)
            continue
        shift = iteration // 4 % 8
        yield Frame(
            "syn",
            0,
            iteration,
            -0.5,
            histogram,
            warped=np.roll(job.moving.data, shift, axis=0).astype(np.float32),
            warped_labels=np.roll(job.moving_labels.data, shift, axis=0),
            update_magnitude=rng.random(job.fixed.data.shape, dtype=np.float32),
        )


def responsiveness(seconds, live=True, engine=True):
    """Probe the event loop while the widget registers the 1 mm pair.

    `live` False turns the live images off, which leaves the engine's own effect on the
    loop; `engine` False replays frames without registering, which leaves the drawing's.
    """
    if not engine:
        with mock.patch.object(run_controller, "run_and_summarise", replayed_frames):
            return _probe_while_running(seconds, live, "frames replayed, no engine")
    return _probe_while_running(seconds, live, f"live images {'on' if live else 'off'}")


def viewer_with_1mm_pair():
    """A shown viewer with the 1 mm pair and both label maps; returns it and the pair's
    shape.
    """
    viewer = napari.Viewer(show=True)
    fixed, moving, affine, displacement = deformed_pair(zoom=1, peak=6.0)
    labels = synthseg_tissue_labels(1)
    add_volume(viewer, fixed, affine, "fixed")
    add_volume(viewer, moving, affine, "moving")
    add_volume(viewer, labels, affine, "fixed labels", labels=True)
    add_volume(
        viewer,
        warp_linear(labels, displacement, order=0).astype(np.int16),
        affine,
        "moving labels",
        labels=True,
    )
    return viewer, fixed.shape


def _event_loop_probe(ticks):
    """A 10 ms timer appending the time of each tick to `ticks`, started and settled for a
    second (the ticks of that second dropped): a gap between ticks is the event loop held.
    """
    probe = QTimer()
    probe.timeout.connect(lambda: ticks.append(time.perf_counter()))
    probe.start(10)
    wait(1.0)
    ticks.clear()
    return probe


def _probe_while_running(seconds, live, what):
    """The probe of `responsiveness`; `what` names the case in the printed line."""
    viewer, shape = viewer_with_1mm_pair()
    widget = RegistrationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.options_form.control("prealign").setCurrentText("none")
    widget.activity_progress.setChecked(False)
    widget.live_images.setChecked(live)
    window_size = fill_screen(viewer)
    ticks = []
    probe = _event_loop_probe(ticks)
    started = time.perf_counter()
    widget.start()  # creates the live layers (its own time is printed apart)
    run_handler = time.perf_counter() - started
    wait(seconds)
    frames = widget.scheduler.frames_seen
    cancelled = len(ticks)
    widget.cancel()
    wait(until=lambda: not widget.runner.running)
    wait(0.5)
    probe.stop()
    gaps = np.diff(ticks[:cancelled]) * 1000
    after = np.diff(ticks[cancelled - 1 :]) * 1000
    responsiveness.ticks = ticks[:cancelled]
    print(
        f"1 mm pair {shape}, window {window_size}, {what}: {frames} frames in "
        f"{seconds:.0f} s; event-loop gaps: max {gaps.max():.0f} ms, 99th percentile "
        f"{np.percentile(gaps, 99):.0f} ms, median {np.median(gaps):.0f} ms ({len(gaps)} "
        f"ticks); the Run handler itself (making the live layers) took "
        f"{run_handler * 1000:.0f} ms; the largest gap once cancelled (thumbnails, "
        f"garbage collection) {after.max():.0f} ms"
    )
    viewer.close()


class _StepClock:
    """Times each turn of `Turns` (its first step named, with the number of steps that
    shared it) and each full garbage collection (generation 2), in the main thread:
    [(start, name, ms)] in `steps` and `collections`.
    """

    def __init__(self):
        self.steps, self.collections = [], []
        self._run_step = Turns._next
        self._collection_started = None

    def __enter__(self):
        clock = self

        def timed(turns):
            step = turns._steps[0] if turns._steps else None
            pending = turns.pending
            started = time.perf_counter()
            clock._run_step(turns)
            if step is not None:
                name = getattr(step, "__qualname__", type(step).__name__)
                code = getattr(step, "__code__", None)
                name += f" (line {code.co_firstlineno})" if code is not None else ""
                more = pending - turns.pending - 1  # the steps that shared the turn
                name += f" and {more} more" if more > 0 else ""
                clock.steps.append((started, name, (time.perf_counter() - started) * 1000))

        self._patch = mock.patch.object(Turns, "_next", timed)
        self._patch.start()
        gc.callbacks.append(self._collected)
        return self

    def __exit__(self, *_):
        self._patch.stop()
        gc.callbacks.remove(self._collected)

    def _collected(self, phase, info):
        if info["generation"] != 2:
            return
        if phase == "start":
            self._collection_started = time.perf_counter()
        elif self._collection_started is not None:
            elapsed = (time.perf_counter() - self._collection_started) * 1000
            self.collections.append((self._collection_started, "full collection", elapsed))


def whole_run_gaps(after_seconds=3.0, largest=5, iterations=None):
    """Probe the event loop through a whole 1 mm run with the panel's defaults and
    `after_seconds` past its end; print the largest gaps during the run (after its first
    frame is drawn) and at its end, each with the stage under way when it began, then the
    main-thread time of each turn of the window's steps and of each full garbage
    collection. `iterations` (e.g. (3, 2, 2)) replaces the default iterations.
    """
    clock = _StepClock().__enter__()  # before the widget connects its turns' timer
    viewer, shape = viewer_with_1mm_pair()
    widget = RegistrationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    if iterations is not None:
        widget.options_form.control("level_iters").setText(",".join(map(str, iterations)))
    window_size = fill_screen(viewer)
    ticks, stages = [], []  # (time, stage) of each frame as it arrives
    widget.runner.frame_arrived.connect(
        lambda frame: stages.append((time.perf_counter(), frame.stage))
    )
    probe = _event_loop_probe(ticks)
    started = time.perf_counter()
    widget.start()
    run_handler = time.perf_counter() - started
    wait(until=lambda: not widget.runner.running)
    wait(after_seconds)
    probe.stop()
    clock.__exit__()
    first_drawn = started + widget.scheduler.first_frame_seconds
    # The registration's end: the "scoring" frame (det J and the scores are computed in
    # the worker, then the result's layers and tables are made in the main thread).
    registered = next(arrived for arrived, stage in stages if stage == "scoring")
    ticks = np.array(ticks)
    gaps = np.diff(ticks) * 1000
    begins = ticks[:-1]

    def stage_at(moment):
        under_way = [stage for arrived, stage in stages if arrived <= moment]
        return under_way[-1] if under_way else "before the first frame"

    def report(name, chosen):
        order = np.argsort(gaps[chosen])[::-1][:largest]
        shown = ", ".join(
            f"{gaps[chosen][i]:.0f} ms at {begins[chosen][i] - started:.1f} s "
            f"({stage_at(begins[chosen][i])})"
            for i in order
        )
        above = int((gaps[chosen] > 100).sum())
        print(f"  {name}: {above} gaps above 100 ms of {chosen.sum()}; largest: {shown}")

    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"1 mm pair {shape}, window {window_size}, a whole run with the defaults"
        f"{'' if iterations is None else f' but iterations {iterations}'} "
        f"({registered - started:.1f} s to the end of the registration, first frame drawn at "
        f"{first_drawn - started:.1f} s; {widget.scheduler.frames_seen} frames; Run handler "
        f"{run_handler * 1000:.0f} ms; load average {load}):"
    )
    report("during the run (first frame aside)", (begins > first_drawn) & (begins < registered))
    report(f"at its end (to {after_seconds:.0f} s after the result)", begins >= registered)
    print("  main-thread time of the window's turns and of full collections (ms):")
    for moment, name, milliseconds in sorted(clock.steps + clock.collections):
        if moment >= started:
            print(f"    {moment - started:6.2f} s {milliseconds:6.0f} {name}")
    viewer.close()


def first_frame_and_overhead(iterations, activity, repeats):
    """Run the widget `repeats` times, each against `register()` right after it (the same
    prealignment and iterations), and print the median and range of the slowdown.
    """
    viewer = napari.Viewer(show=True)
    for data, kwargs, kind in sample_pair():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = RegistrationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.options_form.control("level_iters").setText(",".join(map(str, iterations)))
    widget.activity_progress.setChecked(activity)
    fixed = layer_volume(viewer.layers["fixed_t1"])
    moving = layer_volume(viewer.layers["moving_t2"])
    first_frames, slowdowns = [], []
    for _ in range(repeats):
        widget.start()
        wait(until=lambda: not widget.runner.running)
        in_widget = widget.result.timings["syn"]
        plain = register(
            fixed, moving, prealign=widget.result.prealignment.matrix, level_iters=tuple(iterations)
        ).timings["syn"]
        first_frames.append(widget.scheduler.first_frame_seconds * 1000)
        slowdowns.append(100 * (in_widget / plain - 1))
    print(
        f"2 mm sample pair, activity-dock progress {'on' if activity else 'off'}, "
        f"{repeats} runs: first live frame {np.median(first_frames):.0f} ms after Run "
        f"(max {max(first_frames):.0f}); drawing costs the engine "
        f"{np.median(slowdowns):+.1f} % (median; {min(slowdowns):+.1f} to "
        f"{max(slowdowns):+.1f} %), {widget.scheduler.frames_seen} frames a run"
    )
    viewer.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="widget runs for the overhead figures (this machine's timing noise is about 10 %%)",
    )
    parser.add_argument(
        "--full-run", action="store_true", help="only the event-loop gaps of a whole 1 mm run"
    )
    parser.add_argument(
        "--iterations",
        help="the whole run's iterations per level, e.g. 3,2,2 (default: the panel's)",
    )
    args = parser.parse_args()
    iterations = None if args.iterations is None else tuple(map(int, args.iterations.split(",")))
    if args.full_run:
        whole_run_gaps(iterations=iterations)
        return
    for activity in (False, True):
        first_frame_and_overhead((40, 20, 10), activity, args.repeats)
    for live in (False, True):
        responsiveness(args.seconds, live)
    responsiveness(args.seconds, engine=False)
    whole_run_gaps(iterations=iterations)


if __name__ == "__main__":
    main()
