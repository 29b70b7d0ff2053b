"""The live-view generator (no Qt): frame order, pacing, the Result, thread priority."""

import inspect
import math
import os
import sys
import threading
import time

import numpy as np
import pytest
from scipy import ndimage
from testdata import blobs

from napari_mireg.engine.buffers import kept_bytes, open_scopes
from napari_mireg.engine.registration import Result
from napari_mireg.engine.transforms import as_volume
from napari_mireg.gui import frames as frames_module
from napari_mireg.gui.frames import (
    Frame,
    LiveRun,
    Pacing,
    live_frames,
    lower_thread_priority,
    run_and_summarise,
    until_stopped,
)
from napari_mireg.options import RegistrationOptions


@pytest.fixture(scope="module")
def live_run():
    fixed = blobs((20, 22, 18), seed=31).astype(np.float32)
    moving = ndimage.shift(fixed, (1.0, 0.5, -1.0), order=1, mode="nearest")
    labels = (moving > 0.6).astype(np.int16) * 3
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    return LiveRun(
        as_volume(fixed, affine),
        as_volume(moving, affine),
        as_volume(labels, affine, dtype=None),
        RegistrationOptions(prealign="rigid", level_iters=(3, 2)),
    )


def run_all(run, pacing):
    frames, steps = [], live_frames(run, pacing)
    while True:
        try:
            frames.append(next(steps))
        except StopIteration as finished:
            return frames, finished.value


def test_views_come_first_then_one_frame_per_syn_iteration(live_run):
    frames, result = run_all(live_run, Pacing(min_interval=math.inf))
    assert isinstance(result, Result) and all(isinstance(f, Frame) for f in frames)
    stages = [f.stage for f in frames]
    views = [f for f in frames if f.stage in ("start", "prealigned")]
    assert stages[0] == "start" and [f.stage for f in views] == ["start", "prealigned"]
    # between the two views only light progress frames, their share done never falling
    progress = frames[1 : stages.index("prealigned")]
    assert all(f.stage == "prealigning" and f.warped is None for f in progress)
    shares = [f.prealigned for f in progress]
    assert shares == sorted(shares) and all(0 <= s <= 1 for s in shares)
    for frame in views:  # heavy: the moving image and labels on the fixed grid
        assert frame.warped.shape == live_run.fixed.shape
        assert set(np.unique(frame.warped_labels)) <= {0, 3}
    syn = [f for f in frames if f.stage == "syn"]
    assert stages[stages.index("prealigned") + 1 :] == ["syn"] * len(syn) + ["scoring"] * (
        stages[-1] == "scoring"
    )
    assert [f.stage for f in syn] == ["syn"] * len(result.energies)
    assert [f.energy for f in syn] == result.energies
    assert all(f.warped is None for f in syn)  # no heavy frame with an infinite interval
    assert result.timings["prealign"] > 0


@pytest.mark.parametrize("frames", [live_frames, run_and_summarise])
def test_closing_the_frames_closes_the_engine_at_once(monkeypatch, live_run, frames):
    engines, register_steps = [], frames_module.register_steps

    def kept_register_steps(*args, **kwargs):
        engines.append(register_steps(*args, **kwargs))
        return engines[-1]

    monkeypatch.setattr(frames_module, "register_steps", kept_register_steps)
    steps = frames(live_run, Pacing(min_interval=math.inf))
    assert [next(steps).stage for _ in range(2)] == ["start", "prealigning"]
    assert engines[0].gi_frame is not None  # running, held here so never collected
    steps.close()
    assert engines[0].gi_frame is None  # closed by the frames' close, not by collection


def test_closing_the_live_view_closes_the_engine_and_its_buffer_scope(live_run, monkeypatch):
    from napari_mireg.gui import frames

    engines = []  # held here, as a traceback or a worker would hold them

    def recorded(*args, **kwargs):
        engines.append(frames.register_steps.__wrapped__(*args, **kwargs))
        return engines[-1]

    recorded.__wrapped__ = frames.register_steps
    monkeypatch.setattr(frames, "register_steps", recorded)
    steps = live_frames(live_run, Pacing(min_interval=math.inf))
    while next(steps).stage != "syn":
        pass
    assert open_scopes() == 1  # the SyN reuses its buffers while it iterates
    steps.close()
    assert inspect.getgeneratorstate(engines[0]) == inspect.GEN_CLOSED
    assert open_scopes() == 0 and kept_bytes() == 0


def test_a_stopped_run_ends_at_its_next_step_and_closes_the_engine(live_run):
    stop = threading.Event()
    live = live_frames(live_run, Pacing(min_interval=math.inf))  # held here, as by a worker
    steps = until_stopped(live, stop)
    stages = []
    while True:
        try:
            frame = next(steps)
        except StopIteration as finished:
            assert finished.value is None  # a stopped run has no Result
            break
        stages.append(frame.stage)
        if frame.stage == "syn":
            assert open_scopes() == 1
            stop.set()
    assert stages.count("syn") == 1 and stages[-1] == "syn"
    assert inspect.getgeneratorstate(live) == inspect.GEN_CLOSED
    assert open_scopes() == 0 and kept_bytes() == 0
    # Not stopped, it hands over the run's Result.
    _, result = run_all(live_run, Pacing(min_interval=math.inf))
    steps = until_stopped(live_frames(live_run, Pacing(min_interval=math.inf)), threading.Event())
    with pytest.raises(StopIteration) as finished:
        while True:
            next(steps)
    assert finished.value.value.energies == pytest.approx(result.energies)


def test_heavy_syn_frames_carry_the_update_on_the_fixed_grid(live_run):
    frames, _ = run_all(live_run, Pacing(share=0.99, min_interval=0.0))
    heavy = [f for f in frames if f.stage == "syn" and f.warped is not None]
    assert heavy
    assert all(f.update_magnitude.shape == live_run.fixed.shape for f in heavy)
    assert all(f.update_magnitude.min() >= 0 for f in heavy)


def test_pacing_waits_in_proportion_to_the_cost_of_a_frame():
    pacing = Pacing(share=0.1, min_interval=0.0)
    assert pacing.due()  # nothing shown yet
    pacing.frame_made(time.perf_counter() - 100.0)  # a frame that took 100 s to compute
    assert not pacing.due()  # it must wait 9 x 100 s
    for seconds in (1.0, 2.0, 3.0, 4.0):
        pacing.drawn(seconds)
    assert pacing._drawing == [2.0, 3.0, 4.0]  # the last three drawing times
    assert not Pacing(min_interval=math.inf).due()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_the_engine_thread_lowers_only_its_own_priority():
    seen = {}

    def worker():
        lower_thread_priority(7)
        seen["worker"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["worker"] >= 7
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_a_head_against_a_brain_is_warned_once_per_run():
    import warnings

    from napari_mireg.engine import masks

    grid = np.indices((40, 45, 40), dtype=float)
    radius = np.sqrt(((grid - np.array([20, 22, 20])[:, None, None, None]) ** 2).sum(0))
    head = ((radius < 19) * 100.0 + (radius < 10) * 50.0).astype(np.float32)
    brain = ((radius < 10) * 100.0).astype(np.float32)
    affine = np.diag([6.0, 6.0, 6.0, 1.0])
    run = LiveRun(
        as_volume(brain, affine),
        as_volume(head, affine),
        options=RegistrationOptions(prealign="none", level_iters=(1,)),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_all(run, Pacing(min_interval=math.inf))
    mismatches = [w for w in caught if issubclass(w.category, masks.HeadBrainMismatchWarning)]
    assert len(mismatches) == 1
