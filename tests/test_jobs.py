"""One job from files to an output folder: inputs checked, outputs complete, report."""

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from testdata import blobs

from napari_mireg import files
from napari_mireg.cli.jobs import OUTPUT_FILES, load_inputs, read_report, run_job, run_job_steps

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def write(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(data, affine), path)
    return str(path)


@pytest.fixture(scope="module")
def job_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("job")
    fixed = blobs((22, 24, 20), seed=21).astype(np.float32)
    moving = ndimage.shift(fixed, (1.0, -1.0, 0.5), order=1, mode="nearest").astype(np.float32)
    return {
        "fixed": write(folder / "fixed.nii.gz", fixed),
        "moving": write(folder / "moving.nii.gz", moving),
        "fixed_labels": write(folder / "fixed_seg.nii.gz", (fixed > 0.5).astype(np.int16) * 2),
        "moving_labels": write(folder / "moving_seg.nii.gz", (moving > 0.5).astype(np.int16) * 2),
    }


def test_a_job_writes_every_output_and_a_report_that_lists_them(job_files, tmp_path):
    inputs = load_inputs(**job_files)
    assert inputs.fixed.shape == (22, 24, 20) and inputs.fixed_labels.data.dtype.kind == "i"
    steps = run_job_steps(inputs, tmp_path / "out", prealign="rigid", level_iters=(3, 2))
    phases = []
    while True:
        try:
            phases.append(next(steps).phase)
        except StopIteration as finished:
            report = finished.value
            break
    snapshots = phases.count("syn")
    assert 0 < snapshots <= 5 and phases[-snapshots:] == ["syn"] * snapshots
    assert phases.count("prealigned") == 1 and phases.count("prealignment") > 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES.values())
    assert read_report(out) == report == json.loads((out / "report.json").read_text())
    warped = files.load_volume(out / OUTPUT_FILES["warped_labels"], labels=True)
    np.testing.assert_array_equal(np.unique(warped.data), [0, 2])
    # With label maps and no mask, each side's brain (from its labels) is the metric's mask.
    brain = "labels (brain, dilated)"
    assert report["metric_masks"] == {"fixed": brain, "moving": brain}


def test_mask_files_go_to_their_own_side_and_an_empty_one_is_refused(job_files, tmp_path):
    fixed = nib.load(job_files["fixed"])
    half = np.zeros(fixed.shape, np.uint8)
    half[: fixed.shape[0] // 2] = 1
    # the moving mask lies on a coarser grid: it is resampled onto the moving image's grid
    coarse = write(tmp_path / "coarse.nii.gz", half[::2, ::2, ::2], AFFINE @ np.diag([2, 2, 2, 1]))
    inputs = load_inputs(job_files["fixed"], job_files["moving"], moving_mask=coarse)
    assert inputs.mask is None and inputs.moving_mask.shape == fixed.shape
    assert 0.4 < inputs.moving_mask.mean() < 0.6
    report = run_job(inputs, tmp_path / "out", prealign="none", level_iters=(2,))
    assert report["metric_masks"] == {"fixed": None, "moving": "mask file"}
    empty = write(tmp_path / "empty.nii.gz", np.zeros(fixed.shape, np.uint8))
    with pytest.raises(files.InputError, match="empty.nii.gz.*no voxel of the moving image"):
        load_inputs(job_files["fixed"], job_files["moving"], moving_mask=empty)


def test_an_incomplete_folder_has_no_report(job_files, tmp_path):
    assert read_report(tmp_path) is None
    report = run_job(
        load_inputs(job_files["fixed"], job_files["moving"]),
        tmp_path,
        prealign="none",
        level_iters=(2,),
    )
    assert set(report["outputs"]) <= {p.name for p in tmp_path.iterdir()}
    (tmp_path / report["outputs"][0]).write_bytes(b"")
    assert read_report(tmp_path) is None


def test_a_failed_job_leaves_nothing_behind(job_files, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(files, "save_volume", fail)
    inputs = load_inputs(job_files["fixed"], job_files["moving"])
    with pytest.raises(RuntimeError, match="disk full"):
        run_job(inputs, tmp_path, prealign="none", level_iters=(1,))
    assert list(tmp_path.iterdir()) == []


def test_labels_must_come_in_pairs_and_lie_on_their_image(job_files, tmp_path):
    with pytest.raises(files.InputError, match="both sides"):
        load_inputs(job_files["fixed"], job_files["moving"], fixed_labels=job_files["fixed_labels"])
    elsewhere = write(tmp_path / "seg.nii.gz", np.zeros((22, 24, 20), np.int16) + 2, np.eye(4))
    with pytest.raises(files.InputError, match="does not match"):
        load_inputs(
            job_files["fixed"],
            job_files["moving"],
            fixed_labels=elsewhere,
            moving_labels=job_files["moving_labels"],
        )
    empty = write(tmp_path / "mask.nii.gz", np.zeros((22, 24, 20), np.uint8))
    with pytest.raises(files.InputError, match="no voxel"):
        load_inputs(job_files["fixed"], job_files["moving"], mask=empty)


def test_a_stop_signal_during_the_output_swap_waits_for_its_end():
    import signal

    from napari_mireg.cli import jobs

    done = []
    # Python's own handler, whatever an earlier test in the run left (the held signal goes
    # to the handler that was there before the swap)
    earlier = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with jobs._stop_signals_held():
                # raise() sends it to this thread: os.kill could reach an OpenMP worker
                signal.raise_signal(signal.SIGINT)
                done.append("swap finished")
        assert done == ["swap finished"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, earlier)
