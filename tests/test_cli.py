"""The `mireg` command line end to end, with its exit codes and its outputs."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from testdata import write_sample_data

from napari_mireg import files
from napari_mireg.cli import main
from napari_mireg.cli.jobs import OUTPUT_FILES
from napari_mireg.engine.transforms import apply_transforms
from napari_mireg.options import OPTIONS
from napari_mireg.overlap import overlap_scores

MIREG = [str(Path(sys.executable).parent / "mireg")]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The sample pair at 4 mm (a quick registration), written as files."""
    return write_sample_data(tmp_path_factory.mktemp("pair"), zoom=4)


def run(*args, **options):
    return subprocess.run(MIREG + [str(a) for a in args], capture_output=True, text=True, **options)


@pytest.fixture(scope="module")
def registered(pair, tmp_path_factory):
    out = tmp_path_factory.mktemp("registered") / "out"
    done = run(
        "register",
        pair["fixed"],
        pair["moving"],
        "--fixed-labels",
        pair["fixed_labels"],
        "--moving-labels",
        pair["moving_labels"],
        "--iterations",
        "20,10",
        "--threads",
        "2",
        "--out",
        out,
    )
    assert done.returncode == 0, done.stderr
    return out, done


def test_register_writes_every_output_and_the_report(pair, registered):
    out, done = registered
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES.values())
    report = json.loads((out / "report.json").read_text())
    assert report["parameters"]["level_iters"] == [20, 10]
    assert report["parameters"]["threads"] == 2
    assert report["mi_after"] > report["mi_before"] + 0.1
    assert report["overlap"]["mean_dice"] > report["overlap_before"]["mean_dice"] + 0.1
    assert report["overlap"]["mean_dice"] > report["overlap_affine"]["mean_dice"] + 0.05
    assert report["overlap"]["whole_dice"] > 0.95
    assert report["folds"] == 0 and report["min_jacobian"] > 0
    assert set(report["timings"]) >= {"prealign", "syn", "total"}
    assert report["versions"]["napari_mireg"] and report["inputs"]["fixed"]["shape"]
    assert "level 2/2" in done.stderr and "MI" in done.stdout
    warp = nib.load(out / "warp.nii.gz")
    fixed = nib.load(pair["fixed"])
    assert warp.shape == fixed.shape + (1, 3) and int(warp.header["intent_code"]) == 1007
    np.testing.assert_allclose(warp.affine, fixed.affine, atol=1e-4)
    warped_labels = files.load_volume(out / "warped_labels.nii.gz", labels=True)
    assert warped_labels.data.dtype.kind == "i"
    rows = (out / "overlap.csv").read_text().splitlines()
    assert rows[0] == "label,name,dice,jaccard,fixed_voxels,warped_voxels"
    assert any(",Left-Cerebral-White-Matter," in row for row in rows)


def test_apply_reproduces_the_warped_outputs(pair, registered, tmp_path):
    out, _ = registered
    done = run(
        "apply",
        out / "warp.nii.gz",
        out / "affine.txt",
        "--to",
        pair["moving"],
        "--out",
        tmp_path / "again.nii.gz",
    )
    assert done.returncode == 0, done.stderr
    again = files.load_volume(tmp_path / "again.nii.gz").data
    np.testing.assert_allclose(again, files.load_volume(out / "warped.nii.gz").data, atol=1e-3)
    done = run(
        "apply",
        out / "warp.nii.gz",
        out / "affine.txt",
        "--to",
        pair["moving_labels"],
        "--labels",
        "--out",
        tmp_path / "labels.nii.gz",
    )
    assert done.returncode == 0, done.stderr
    assert np.array_equal(
        files.load_volume(tmp_path / "labels.nii.gz", labels=True).data,
        files.load_volume(out / "warped_labels.nii.gz", labels=True).data,
    )
    # The inverse pair takes the fixed labels to the moving grid, where they overlap the
    # moving labels better than the fixed labels resampled with no transform.
    done = run(
        "apply",
        f"[{out / 'affine.txt'},1]",
        out / "inverse_warp.nii.gz",
        "--to",
        pair["fixed_labels"],
        "--labels",
        "--reference",
        pair["moving"],
        "--out",
        tmp_path / "back.nii.gz",
    )
    assert done.returncode == 0, done.stderr
    moving_labels = files.load_volume(pair["moving_labels"], labels=True)
    back = files.load_volume(tmp_path / "back.nii.gz", labels=True).data
    unmoved = apply_transforms(
        files.load_volume(pair["fixed_labels"], labels=True), moving_labels, [], "nearest"
    )
    after = overlap_scores(moving_labels.data, back).mean_dice
    assert after > overlap_scores(moving_labels.data, unmoved).mean_dice + 0.2


def test_overlap_and_clean_labels_commands(pair, registered, tmp_path):
    out, _ = registered
    done = run(
        "overlap",
        pair["fixed_labels"],
        out / "warped_labels.nii.gz",
        "--csv",
        tmp_path / "scores.csv",
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "scores.csv").read_text() == (out / "overlap.csv").read_text()
    assert "whole brain Dice" in done.stdout
    done = run("clean-labels", out / "warped_labels.nii.gz", tmp_path / "clean.nii.gz")
    assert done.returncode == 0, done.stderr
    cleaned = files.load_volume(tmp_path / "clean.nii.gz", labels=True).data
    original = files.load_volume(out / "warped_labels.nii.gz", labels=True).data
    assert set(np.unique(cleaned)) == set(np.unique(original))
    assert "labels changed" in done.stdout


def bad_inputs(pair, folder):
    """Files each broken in one way, with the words the error message must contain."""
    truncated = folder / "truncated.nii.gz"
    truncated.write_bytes(Path(pair["moving"]).read_bytes()[:5000])
    several = folder / "several.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 2), np.float32), np.eye(4)), several)
    float_labels = folder / "float_labels.nii.gz"
    labels = nib.load(pair["moving_labels"])
    nib.save(nib.Nifti1Image(np.asarray(labels.dataobj) + 0.5, labels.affine), float_labels)
    other_grid = folder / "other_grid.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(labels.dataobj)[:-2], labels.affine), other_grid)
    return [
        ([folder / "missing.nii.gz", pair["moving"]], "missing.nii.gz: no such file"),
        ([pair["fixed"], truncated], "truncated.nii.gz: cannot be read"),
        ([pair["fixed"], several], "several.nii.gz: has shape (8, 8, 8, 2): 2 volumes"),
        (
            [
                pair["fixed"],
                pair["moving"],
                "--fixed-labels",
                pair["fixed_labels"],
                "--moving-labels",
                float_labels,
            ],
            "float_labels.nii.gz: label map holds non-integer",
        ),
        (
            [
                pair["fixed"],
                pair["moving"],
                "--fixed-labels",
                pair["fixed_labels"],
                "--moving-labels",
                other_grid,
            ],
            "other_grid.nii.gz: label map grid",
        ),
    ]


def test_bad_inputs_exit_2_with_one_line_and_leave_nothing(pair, tmp_path):
    for arguments, words in bad_inputs(pair, tmp_path):
        out = tmp_path / "out"
        code = main(["register", *map(str, arguments), "--out", str(out)])
        assert code == 2, words
        assert not out.exists(), words
    for arguments, words in bad_inputs(pair, tmp_path)[:2]:
        done = run("register", *arguments, "--out", tmp_path / "out")
        assert done.returncode == 2
        assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert run("register", "--help").returncode == 0
    assert run("register", pair["fixed"]).returncode == 2  # argparse: missing args


def test_ctrl_c_exits_130_and_leaves_no_partial_output(pair, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(
        MIREG
        + [
            "register",
            str(pair["fixed"]),
            str(pair["moving"]),
            "--iterations",
            "400,400",
            "--prealign",
            "none",
            "--out",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "level 1/2" in process.stderr.readline()  # registering now
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=60)  # the run would take far longer: the signal stopped it
    assert code == 130
    assert "interrupted" in process.stderr.read()
    assert not out.exists()


@pytest.mark.parametrize("command", ["register", "batch"])
def test_help_gives_every_option_of_the_table_with_its_default(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no wrapped words
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in OPTIONS:
        described = " ".join(option.describe().split())
        assert f"{described} (default: {option.show(option.default)})" in text, option.name
    assert "--bins BINS Bins per image" in text and "5 to 1024" in text
    assert "--iterations ITERATIONS" in text and "(default: 40x20x10)" in text
    assert "--symmetric, --no-symmetric" in text and "--winsorize LOW,HIGH" in text


def test_version_says_how_the_kernels_run(capsys, monkeypatch):
    monkeypatch.setattr("napari_mireg.engine.fields.openmp_threads", lambda: 2)
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.endswith("(kernels: OpenMP, 2 threads)\n")
    monkeypatch.setattr("napari_mireg.engine.fields.openmp_threads", lambda: 0)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "serial, built without OpenMP" in capsys.readouterr().out
