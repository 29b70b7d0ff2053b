"""Honest feedback of a run: progress by expected work, brain extraction as a stage that
Cancel stops, its masks as layers, and level markers on the MI curve.
"""

import os

import numpy as np
import pytest
import testdata

pytest.importorskip("napari")

from napari_mireg.engine import cost, masks  # noqa: E402
from napari_mireg.engine.registration import register_steps  # noqa: E402
from napari_mireg.engine.transforms import as_volume  # noqa: E402
from napari_mireg.gui.frames import LiveRun, Pacing, planned_stages, run_and_summarise  # noqa: E402
from napari_mireg.gui.plots import LivePlots  # noqa: E402
from napari_mireg.gui.progress import PROGRESS_STEPS, ProgressReporter  # noqa: E402
from napari_mireg.gui.sample import sample_pair  # noqa: E402
from napari_mireg.gui.widget import RegistrationWidget  # noqa: E402
from napari_mireg.options import RegistrationOptions  # noqa: E402

RUN_TIMEOUT_MS = 120_000
MNI_1MM = (197, 233, 189)


@pytest.fixture(scope="module")
def small_run_frames():
    """Every Frame of a real run with the default levels (40x20x10) on the 4 mm pair, its
    scores included.
    """
    fixed, moving, affine, _ = testdata.deformed_pair(zoom=4)
    run = LiveRun(as_volume(fixed, affine), as_volume(moving, affine))
    frames = list(run_and_summarise(run, Pacing(min_interval=np.inf)))
    return run, frames


def _group_members(group):
    """Process ids of the live processes in a process group (Linux's /proc)."""
    members = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):  # ended meanwhile
            continue
        state, process_group = fields[0], int(fields[2])
        if process_group == group and state != "Z":
            members.append(int(entry))
    return members


def test_progress_is_below_half_when_the_finest_level_of_a_1mm_run_starts(qtbot, small_run_frames):
    run, frames = small_run_frames
    options = RegistrationOptions()
    reporter = ProgressReporter(LivePlots())
    qtbot.addWidget(reporter)
    # The frames of a real run, the stages of a 1 mm run with the same options.
    stages = cost.run_costs(options, MNI_1MM)
    reporter.begin(options, False, stages)
    values = []
    for frame in frames:
        reporter.count(frame)
        reporter.show(frame)
        values.append(reporter.bar.value())
    finest = next(i for i, f in enumerate(frames) if f.stage == "syn" and f.level == 2)
    assert values[finest] < PROGRESS_STEPS / 2
    # The prealignment is a few percent; the bar never goes back, ends below full until
    # the result is shown, then full.
    prealigned = next(i for i, f in enumerate(frames) if f.stage == "prealigned")
    assert 0 < values[prealigned] < 0.1 * PROGRESS_STEPS
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    finest_share = stages[3].units / sum(stage.units for stage in stages)
    scoring = sum(stage.units for stage in stages[:-1]) / sum(stage.units for stage in stages)
    assert values[-1] == round(PROGRESS_STEPS * scoring) < PROGRESS_STEPS
    # The finest level's ten iterations move the bar by its share of the work.
    last_syn = max(i for i, f in enumerate(frames) if f.stage == "syn")
    moved = (values[last_syn] - values[finest]) / PROGRESS_STEPS
    assert moved == pytest.approx(finest_share * 0.9, abs=0.01)
    reporter.finish()
    assert reporter.bar.value() == PROGRESS_STEPS


def test_the_plan_of_a_live_run_follows_its_grid_labels_and_continuation(small_run_frames):
    run, _ = small_run_frames
    stages = planned_stages(run)
    assert [stage.phase for stage in stages][:2] == ["prealignment", "syn"]
    assert stages == cost.run_costs(run.options, run.fixed.data.shape)
    extracting = LiveRun(
        run.fixed,
        run.moving,
        moving_labels=run.fixed,  # any labels: the moving side is not extracted
        options=RegistrationOptions(brain_extraction="both"),
    )
    sides = [stage.side for stage in planned_stages(extracting) if stage.side]
    assert sides == ["fixed"]
    extracting.initial = object()  # a continued run has no prealignment
    assert planned_stages(extracting)[1].units == 0.0


def test_the_mi_curve_marks_where_the_syn_and_each_level_start(qtbot, small_run_frames):
    _, frames = small_run_frames
    plots = LivePlots()
    qtbot.addWidget(plots)
    reporter = ProgressReporter(plots)
    options = RegistrationOptions()
    reporter.begin(options, False)
    syn = [frame for frame in frames if frame.energy is not None]
    for frame in frames:
        reporter.count(frame)
    reporter.draw_plots(syn[-1].joint_histogram)
    per_level = [sum(1 for f in syn if f.level == level) for level in range(3)]
    assert min(per_level) > 0
    starts = [0, per_level[0], per_level[0] + per_level[1]]
    assert plots.markers == [
        (starts[0] + 0.5, "SyN"),
        (starts[1] + 0.5, "level 2"),
        (starts[2] + 0.5, "level 3"),
    ]
    # A continued run's iterations follow on the curve, marked where they start.
    reporter.begin(options.replace(level_iters=(3,)), True)
    for frame in syn[-3:]:
        reporter.count(frame)
    reporter.draw_plots(syn[-1].joint_histogram)
    assert plots.markers[-1] == (len(syn) + 0.5, "continued")
    assert plots.values.size == len(syn) + 3
    # The markers are drawn: dashed grey pixels in the curve's panel, none without them.
    plots.resize(600, 240)
    marked = plots.grab().toImage()
    plots.markers = []
    plain = plots.grab().toImage()
    differing = sum(
        marked.pixel(x, y) != plain.pixel(x, y) for x in range(300, 600) for y in range(240)
    )
    assert differing > 50


def test_brain_extraction_is_a_stage_of_the_steps_with_its_masks(monkeypatch):
    monkeypatch.setattr(masks, "brain_mask_by_robex", testdata.thresholded_brain_mask)
    fixed, moving, affine, _ = testdata.deformed_pair(zoom=4)
    steps = register_steps(
        fixed,
        moving,
        fixed_affine=affine,
        moving_affine=affine,
        brain_extraction="both",
        level_iters=(2,),
        prealign="none",
    )
    extraction = []
    for step in steps:
        if step.phase != "brain extraction":
            break
        extraction.append(step)
    sides = [step.side for step in extraction]
    assert sides[0] == "fixed" and sides[-1] == "moving" and sides == sorted(sides)
    # Each side: at once a step without its mask, and last one with it.
    for side, data in (("fixed", fixed), ("moving", moving)):
        mine = [step for step in extraction if step.side == side]
        assert mine[0].mask is None and mine[0].seconds == 0.0
        assert all(step.mask is None for step in mine[1:-1])
        expected = testdata.thresholded_brain_mask(as_volume(data, affine))
        assert np.array_equal(mine[-1].mask, expected) and expected.any()
    steps.close()


def test_a_failed_extraction_names_the_side(monkeypatch):
    monkeypatch.setattr(masks, "brain_mask_by_robex", testdata.brain_mask_failing)
    fixed, moving, affine, _ = testdata.deformed_pair(zoom=4)
    steps = register_steps(
        fixed, moving, fixed_affine=affine, moving_affine=affine, brain_extraction="moving"
    )
    with pytest.raises(ValueError, match="brain extraction of the moving image: ROBEX found"):
        for _ in steps:
            pass


def _never_ending_extractions(monkeypatch):
    """Brain extractions that never end (a stand-in for ROBEX's minute); returns the list
    their process ids are appended to as they start.
    """
    monkeypatch.setattr(masks, "brain_mask_by_robex", testdata.brain_mask_never_made)
    started = []
    original = masks.BrainExtraction.__init__

    def record(self, *args, **kwargs):
        original(self, *args, **kwargs)
        started.append(self.process.pid)

    monkeypatch.setattr(masks.BrainExtraction, "__init__", record)
    return started


def test_closing_the_steps_ends_the_extraction_and_its_programs(monkeypatch):
    started = _never_ending_extractions(monkeypatch)
    fixed, moving, affine, _ = testdata.deformed_pair(zoom=4)
    steps = register_steps(
        fixed, moving, fixed_affine=affine, moving_affine=affine, brain_extraction="fixed"
    )
    first = next(steps)
    assert first.phase == "brain extraction" and first.side == "fixed"
    # Until the child and the program it started both run (a step every 0.1 s).
    for step in steps:
        assert step.phase == "brain extraction" and step.mask is None
        if len(_group_members(started[0])) == 2:
            break
    steps.close()
    assert _group_members(started[0]) == []


def _viewer_without_fixed_labels(make_napari_viewer):
    viewer = make_napari_viewer()
    for data, kwargs, kind in sample_pair():
        if kwargs["name"] != "fixed_synthseg":
            getattr(viewer, f"add_{kind}")(data, **kwargs)
    return viewer


def _extracting_widget(viewer):
    widget = RegistrationWidget(viewer)
    widget.options_form.control("level_iters").setText("3,2")
    widget.options_form.control("prealign").setCurrentText("rigid")
    widget.options_form.control("brain_extraction").setCurrentText("both")
    widget.inputs.fixed_labels_choice.setCurrentText("(none)")
    widget.inputs.moving_labels_choice.setCurrentText("moving_synthseg")
    viewer.window.add_dock_widget(widget)
    return widget


def test_cancel_during_brain_extraction_ends_the_run_and_its_process(
    make_napari_viewer, qtbot, monkeypatch
):
    started = _never_ending_extractions(monkeypatch)
    widget = _extracting_widget(_viewer_without_fixed_labels(make_napari_viewer))
    assert widget.start() is not None
    status = widget.reporter.status
    qtbot.waitUntil(lambda: status.text().startswith("Extracting the brain (fixed)"))
    # The child and the program it started (as ROBEX's script does) both run.
    qtbot.waitUntil(lambda: len(_group_members(started[0])) == 2)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.runner.running)
    assert status.text() == "Cancelled" and widget.result is None
    assert len(started) == 1 and _group_members(started[0]) == []


def test_brain_masks_are_shown_as_layers(make_napari_viewer, qtbot, monkeypatch):
    monkeypatch.setattr(masks, "brain_mask_by_robex", testdata.thresholded_brain_mask)
    viewer = _viewer_without_fixed_labels(make_napari_viewer)
    widget = _extracting_widget(viewer)
    frames = []
    widget.runner.frame_arrived.connect(frames.append)
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=RUN_TIMEOUT_MS)
    assert widget.reporter.status.text() == "Done"
    # Only the fixed side is extracted: the moving side's labels make its mask.
    assert [f.side for f in frames if f.mask is not None] == ["fixed"]
    layer = viewer.layers[widget.run_layers.name("fixed brain mask")]
    fixed = viewer.layers["fixed_t1"]
    assert layer.data.shape == fixed.data.shape
    np.testing.assert_allclose(layer.scale, fixed.scale)
    expected = testdata.thresholded_brain_mask(widget.job.fixed)
    assert np.array_equal(layer.data > 0, expected) and expected.any()
    assert not widget.run_layers.has("moving brain mask")
