"""A catalogue of bad and unusual inputs: each is refused with one line naming the file or the
option (exit code 2 on the command line, ValueError/InputError in the API), before any work,
leaving nothing behind; the unusual but valid ones (64-bit labels, ids near 2**31, 2D files)
give the right output.
"""

import argparse
import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from testdata import blobs_for_check, write_sample_data

from napari_mireg import files, register
from napari_mireg.cli import main
from napari_mireg.cli.batch import all_pairs, read_pairs, register_pair, run_cohort
from napari_mireg.cli.jobs import load_inputs
from napari_mireg.engine.metric import MutualInformation
from napari_mireg.engine.transforms import AffineMap, apply_transforms
from napari_mireg.labels import clean_labels, label_values
from napari_mireg.options import OptionError, RegistrationOptions, add_arguments

BIG_LABEL = 8589934594  # 2**33 + 2: an int64 label that int32 would turn into 2
MIREG = [str(Path(sys.executable).parent / "mireg")]


def write(path, data, affine, **header):
    image = nib.Nifti1Image(np.asarray(data), affine, dtype=np.asarray(data).dtype)
    nib.save(image, path)
    return path


def warp_file(path, grid_path, value):
    """A warp in the ITK layout (X, Y, Z, 1, 3) on a file's grid, every vector `value`."""
    grid = nib.load(grid_path)
    field = np.full(grid.shape + (1, 3), value, dtype=np.float32)
    image = nib.Nifti1Image(field, grid.affine)
    image.header.set_intent(files.NIFTI_INTENT_VECTOR)
    nib.save(image, path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The 4 mm sample pair and files each unusual or broken in one way."""
    folder = tmp_path_factory.mktemp("inputs")
    pair = write_sample_data(folder, zoom=4)
    fixed = nib.load(pair["fixed"])
    labels = np.asarray(nib.load(pair["moving_labels"]).dataobj)
    moving_affine = nib.load(pair["moving"]).affine
    paths = dict(pair)
    paths["zeros"] = write(folder / "zeros.nii.gz", np.zeros(fixed.shape, np.float32), fixed.affine)
    corner = np.zeros(fixed.shape, np.uint8)
    corner[:3, :3, :3] = 1  # air only: the image is 0 there
    paths["background_mask"] = write(folder / "background_mask.nii.gz", corner, fixed.affine)
    flat = np.asarray(fixed.dataobj)[:, :, fixed.shape[2] // 2].astype(np.float32)
    plane = np.array([[1.0, 0, 0, 10.0], [0, 3.0, 0, -40.0], [0, 0, 2.0, -88.0], [0, 0, 0, 1]])
    paths["image2d"] = write(folder / "image2d.nii.gz", flat, plane)
    big = labels.astype(np.int64)
    big[big == 2] = BIG_LABEL
    paths["labels_int64"] = write(folder / "labels_int64.nii.gz", big, moving_affine)
    paths["labels_3e9"] = write(
        folder / "labels_3e9.nii.gz", np.where(labels > 0, 3e9, 0.0), moving_affine
    )
    near = np.where(labels > 0, np.int32(2**31 - 2), 0).astype(np.int32)
    near[labels == 3] = 2**31 - 5
    paths["labels_near_2_31"] = write(folder / "labels_near_2_31.nii.gz", near, moving_affine)
    paths["labels_negative"] = write(
        folder / "labels_negative.nii.gz", labels.astype(np.int16) - 1, moving_affine
    )
    paths["identity"] = folder / "identity.txt"
    files.save_affine(np.eye(4), paths["identity"])
    paths["identity2d"] = folder / "identity2d.txt"
    files.save_affine(np.eye(4), paths["identity2d"], ndim=2)
    paths["nan_affine"] = folder / "nan_affine.txt"
    text = paths["identity"].read_text().replace("Parameters: 1.0", "Parameters: nan", 1)
    paths["nan_affine"].write_text(text)
    paths["zero_affine"] = folder / "zero_affine.txt"
    paths["zero_affine"].write_text(
        "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
        "Parameters: " + " ".join(["0"] * 12) + "\nFixedParameters: 0 0 0\n"
    )
    paths["singular_mat"] = folder / "singular.mat"
    files.save_affine(np.diag([1.0, 1.0, 0.0, 1.0]), paths["singular_mat"])
    paths["text_mat"] = folder / "text.mat"
    paths["text_mat"].write_text(paths["identity"].read_text())
    paths["huge_warp"] = warp_file(folder / "huge_warp.nii.gz", pair["fixed"], 1e30)
    paths["nan_warp"] = warp_file(folder / "nan_warp.nii.gz", pair["fixed"], np.nan)
    paths["one_subject"] = folder / "one_subject.csv"
    paths["one_subject"].write_text(f"image\n{Path(pair['fixed']).name}\n")
    paths["latin1"] = folder / "latin1.csv"
    paths["latin1"].write_bytes(
        f"fixed,moving\n{Path(pair['fixed']).name},r\xe9sum\xe9.nii.gz\n".encode("latin-1")
    )
    paths["bom"] = folder / "bom.csv"
    paths["bom"].write_bytes(
        f"\ufefffixed,moving\n{Path(pair['fixed']).name},{Path(pair['moving']).name}\n".encode()
    )
    paths["no_header"] = folder / "no_header.csv"
    paths["no_header"].write_text(f"{pair['fixed']},{pair['moving']}\n")
    rng = np.random.default_rng(2)
    for name in ("tiny_fixed", "tiny_moving"):  # 2 x 2 x 2 voxels, not constant
        paths[name] = write(folder / f"{name}.nii.gz", rng.random((2, 2, 2)), np.eye(4))
    paths["folder"] = folder
    return SimpleNamespace(**{k: str(v) for k, v in paths.items()})


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


# (case id, arguments from (inputs, tmp folder), words the one line must contain)
FAILING = [
    ("bins-32768", lambda f, t: ["register", f.fixed, f.moving, "--bins", "32768"], "--bins"),
    ("bins-23171", lambda f, t: ["register", f.fixed, f.moving, "--bins", "23171"], "--bins"),
    ("bins-100000", lambda f, t: ["register", f.fixed, f.moving, "--bins", "100000"], "--bins"),
    ("bins-4", lambda f, t: ["register", f.fixed, f.moving, "--bins", "4"], "--bins"),
    ("bins-text", lambda f, t: ["register", f.fixed, f.moving, "--bins", "many"], "--bins"),
    (
        "step-inf",
        lambda f, t: ["register", f.fixed, f.moving, "--step-length", "inf"],
        "--step-length",
    ),
    (
        "step-zero",
        lambda f, t: ["register", f.fixed, f.moving, "--step-length", "0"],
        "--step-length",
    ),
    (
        "winsorize-reversed",
        lambda f, t: ["register", f.fixed, f.moving, "--winsorize", "0.99,0.01"],
        "--winsorize",
    ),
    (
        "winsorize-one",
        lambda f, t: ["register", f.fixed, f.moving, "--winsorize", "0.01"],
        "--winsorize",
    ),
    (
        "sigma-inf",
        lambda f, t: ["register", f.fixed, f.moving, "--update-sigma", "inf"],
        "--update-sigma",
    ),
    (
        "sigma-nan",
        lambda f, t: ["register", f.fixed, f.moving, "--update-sigma", "nan"],
        "--update-sigma",
    ),
    (
        "field-sigma-negative",
        lambda f, t: ["register", f.fixed, f.moving, "--field-sigma", "-1"],
        "--field-sigma",
    ),
    (
        "moving-mask-empty",
        lambda f, t: ["register", f.fixed, f.moving, "--moving-mask", f.zeros],
        "zeros.nii.gz: the mask selects no voxel of the moving image",
    ),
    (
        "iterations-negative",
        lambda f, t: ["register", f.fixed, f.moving, "--iterations", "40x-1"],
        "--iterations",
    ),
    (
        "iterations-words",
        lambda f, t: ["register", f.fixed, f.moving, "--iterations", "forty"],
        "--iterations",
    ),
    ("threads-0", lambda f, t: ["register", f.fixed, f.moving, "--threads", "0"], "--threads"),
    (
        "missing-input",
        lambda f, t: ["register", f.fixed, f"{f.folder}/absent.nii.gz"],
        "absent.nii.gz: no such file",
    ),
    (
        "constant-fixed",
        lambda f, t: ["register", f.zeros, f.moving],
        "zeros.nii.gz: image is constant",
    ),
    (
        "constant-moving",
        lambda f, t: ["register", f.fixed, f.zeros],
        "zeros.nii.gz: image is constant",
    ),
    ("2d-against-3d", lambda f, t: ["register", f.fixed, f.image2d], "image2d.nii.gz: is 2D"),
    (
        "too-small-for-the-levels",
        lambda f, t: ["register", f.tiny_fixed, f.tiny_moving, "--iterations", "x".join("1" * 12)],
        "tiny_fixed.nii.gz: 2 x 2 x 2 voxels is too small for 12 levels of --iterations: level "
        "1 shrinks it 2048 times to a single voxel; give at most 1 level",
    ),
    (
        "too-small-for-the-prealignment",
        lambda f, t: ["register", f.tiny_fixed, f.tiny_moving, "--iterations", "5"],
        "tiny_fixed.nii.gz: 2 x 2 x 2 voxels is too small for the MI prealignment, whose "
        "levels shrink it 4 times to a single voxel: use --prealign none",
    ),
    (
        "winsorize-clips-everything",
        lambda f, t: ["register", f.fixed, f.moving, "--winsorize", "0.01,0.3"],
        "fixed_t1.nii.gz: --winsorize 0.01,0.3 clips every voxel to 0",
    ),
    (
        "mask-on-the-background",
        lambda f, t: ["register", f.fixed, f.moving, "--mask", f.background_mask],
        "background_mask.nii.gz: every voxel of the fixed image inside this mask is 0: the "
        "mask does not lie on the image's anatomy",
    ),
    (
        "labels-one-side",
        lambda f, t: ["register", f.fixed, f.moving, "--fixed-labels", f.fixed_labels],
        "fixed_synthseg.nii.gz: labels need both sides",
    ),
    (
        "mask-empty",
        lambda f, t: ["register", f.fixed, f.moving, "--mask", f.zeros],
        "zeros.nii.gz: the mask selects no voxel",
    ),
    (
        "labels-negative",
        lambda f, t: [
            "register",
            f.fixed,
            f.moving,
            "--fixed-labels",
            f.fixed_labels,
            "--moving-labels",
            f.labels_negative,
        ],
        "labels_negative.nii.gz: label map has negative labels",
    ),
    (
        "apply-nan-affine",
        lambda f, t: ["apply", f.nan_affine, "--to", f.moving, "--reference", f.fixed],
        "nan_affine.txt: affine transform has NaN",
    ),
    (
        "apply-zero-affine",
        lambda f, t: ["apply", f.zero_affine, "--to", f.moving, "--reference", f.fixed],
        "zero_affine.txt: affine matrix is singular",
    ),
    (
        "apply-singular-mat-inverted",
        lambda f, t: ["apply", f"[{f.singular_mat},1]", "--to", f.moving, "--reference", f.fixed],
        "singular.mat: affine matrix is singular",
    ),
    (
        "apply-text-named-mat",
        lambda f, t: ["apply", f.text_mat, "--to", f.moving, "--reference", f.fixed],
        "text.mat: cannot be read as a MATLAB",
    ),
    (
        "apply-huge-warp",
        lambda f, t: ["apply", f.huge_warp, "--to", f.moving],
        "huge_warp.nii.gz: displacements reach",
    ),
    (
        "apply-nan-warp",
        lambda f, t: ["apply", f.nan_warp, "--to", f.moving],
        "nan_warp.nii.gz: displacement field has NaN",
    ),
    (
        "apply-bad-flag",
        lambda f, t: ["apply", f"[{f.identity},2]", "--to", f.moving],
        "expected [FILE,0] or [FILE,1]",
    ),
    (
        "apply-affine-only",
        lambda f, t: ["apply", f.identity, "--to", f.moving],
        "--reference",
    ),
    (
        "apply-out-missing-folder",
        lambda f, t: [
            "apply",
            f.identity,
            "--to",
            f.moving,
            "--reference",
            f.fixed,
            "--out",
            f"{t}/no/such/w.nii.gz",
        ],
        "w.nii.gz: cannot be written: the folder",
    ),
    (
        "apply-out-is-folder",
        lambda f, t: [
            "apply",
            f.identity,
            "--to",
            f.moving,
            "--reference",
            f.fixed,
            "--out",
            _folder(t / "w.nii.gz"),
        ],
        "w.nii.gz: cannot be written: it is a folder",
    ),
    (
        "apply-out-format",
        lambda f, t: [
            "apply",
            f.identity,
            "--to",
            f.moving,
            "--reference",
            f.fixed,
            "--out",
            f"{t}/w.png",
        ],
        "w.png: unsupported output format",
    ),
    (
        "overlap-csv-missing-folder",
        lambda f, t: ["overlap", f.fixed_labels, f.fixed_labels, "--csv", f"{t}/no/s.csv"],
        "s.csv: cannot be written: the folder",
    ),
    (
        "overlap-other-grid",
        lambda f, t: ["overlap", f.fixed_labels, f.moving_labels],
        "moving_synthseg.nii.gz: not on the grid of",
    ),
    (
        "overlap-negative-labels",
        lambda f, t: ["overlap", f.fixed_labels, f.labels_negative],
        "labels_negative.nii.gz: label map has negative labels",
    ),
    (
        "clean-labels-missing-folder",
        lambda f, t: ["clean-labels", f.fixed_labels, f"{t}/no/c.nii.gz"],
        "c.nii.gz: cannot be written: the folder",
    ),
    (
        "clean-labels-mgz-int64",
        lambda f, t: ["clean-labels", f.labels_int64, f"{t}/c.mgz"],
        "c.mgz: label 8589934594 does not fit MGH",
    ),
    (
        "register-out-is-file",
        lambda f, t: ["register", f.fixed, f.moving, "--out", _file(t / "out")],
        "out: output folder is a file",
    ),
    (
        "register-out-below-file",
        lambda f, t: ["register", f.fixed, f.moving, "--out", _file(t / "x") + "/out"],
        "output folder cannot be made",
    ),
    (
        "batch-one-subject",
        lambda f, t: ["batch", f.one_subject, "--all-pairs"],
        "one_subject.csv: lists one subject",
    ),
    (
        "batch-latin-1",
        lambda f, t: ["batch", f.latin1],
        "latin1.csv: is not UTF-8 text",
    ),
    (
        "batch-no-header",
        lambda f, t: ["batch", f.no_header],
        "no_header.csv: header must have columns fixed, moving",
    ),
    (
        "batch-threads-0",
        lambda f, t: ["batch", f.bom, "--threads-per-task", "0"],
        "--threads-per-task",
    ),
    ("batch-workers-0", lambda f, t: ["batch", f.bom, "--workers", "0"], "--workers"),
    (
        "batch-step-inf",
        lambda f, t: ["batch", f.bom, "--step-length", "inf"],
        "--step-length",
    ),
]


def _folder(path):
    path.mkdir()
    return str(path)


def _file(path):
    path.write_text("not a folder")
    return str(path)


def with_out(arguments, tmp):
    """Give register and batch an --out in the test's folder unless the case has one."""
    if arguments[0] in ("register", "batch") and "--out" not in arguments:
        arguments = [*arguments, "--out", str(tmp / "out")]
    if arguments[0] == "apply" and "--out" not in arguments:
        arguments = [*arguments, "--out", str(tmp / "w.nii.gz")]
    return arguments


@pytest.mark.parametrize(
    ("make", "words"), [case[1:] for case in FAILING], ids=[case[0] for case in FAILING]
)
def test_command_line_refuses_with_one_line_and_leaves_nothing(
    inputs, tmp_path, capsys, make, words
):
    arguments = with_out([str(a) for a in make(inputs, tmp_path)], tmp_path)
    before, inputs_before = listing(tmp_path), listing(inputs.folder)
    assert main(arguments) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert words in lines[0], err
    assert "Traceback" not in err and lines[0].startswith(f"mireg {arguments[0]}: error: ")
    assert listing(tmp_path) == before  # no output, no .partial-*, no temporary file
    assert listing(inputs.folder) == inputs_before


@pytest.mark.parametrize("case", ["bins-32768", "apply-out-missing-folder", "batch-one-subject"])
def test_in_a_process_of_its_own_too(inputs, tmp_path, case):
    """The real exit path: no crash (the 32768 bins were a SIGFPE), no traceback."""
    make, words = {c[0]: c[1:] for c in FAILING}[case]
    arguments = with_out([str(a) for a in make(inputs, tmp_path)], tmp_path)
    done = subprocess.run(MIREG + arguments, capture_output=True, text=True)
    assert done.returncode == 2
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert listing(tmp_path) == []


def test_every_free_valued_registration_option_has_a_refusal_case():
    # Options with choices or on/off switches are refused by argparse itself; every other
    # one needs a bad value in the catalogue, so a new option comes with its case.
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    free = {
        action.option_strings[0]
        for action in parser._actions
        if action.option_strings
        and action.choices is None
        and action.nargs != 0
        and not isinstance(action, argparse.BooleanOptionalAction)
        and action.dest != "help"
    }
    assert "--iterations" in free and "--winsorize" in free
    covered = {words for _, _, words in FAILING}
    assert sorted(option for option in free if not any(option in w for w in covered)) == []


@pytest.mark.parametrize("text, levels", [("40x0", (40, 0)), ("0x20x10", (0, 20, 10))])
def test_a_zero_skips_a_level(text, levels):
    # ANTs' 40x20x0: the level is skipped, the others run.
    assert RegistrationOptions(level_iters=text).level_iters == levels


def test_all_zero_iterations_run_the_prealignment_only():
    # "0x0" is the affine-only registration: the prealignment, then a zero field.
    assert RegistrationOptions(level_iters="0x0").level_iters == (0, 0)
    fixed, moving = blobs_for_check()
    result = register(fixed, moving, prealign="rigid", level_iters="0x0", threads=1)
    assert not result.mapping.forward.any()
    assert result.mi_after > result.mi_before


def test_apply_keeps_64_bit_labels(inputs, tmp_path, capsys):
    out = tmp_path / "w.nii.gz"
    code = main(
        ["apply", inputs.identity, "--to", inputs.labels_int64, "--labels", "--reference",
         inputs.moving, "--out", str(out)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    written = np.asarray(nib.load(out).dataobj)
    source = np.asarray(nib.load(inputs.labels_int64).dataobj)
    assert written.dtype == np.int64
    np.testing.assert_array_equal(written, source)
    assert (written == BIG_LABEL).any()


@pytest.mark.parametrize("name", ["labels_near_2_31", "labels_3e9"])
def test_clean_labels_takes_large_ids(inputs, tmp_path, capsys, name):
    out = tmp_path / "c.nii.gz"
    assert main(["clean-labels", getattr(inputs, name), str(out)]) == 0, capsys.readouterr()
    source = files.load_volume(getattr(inputs, name), labels=True).data
    cleaned = np.asarray(nib.load(out).dataobj)
    assert set(np.unique(cleaned)) == set(np.unique(source))
    assert int(source.max()) > 2**31 - 10 and int(cleaned.max()) == int(source.max())
    # what moved between labels is a handful of voxels, not a relabelling
    assert np.count_nonzero(cleaned != source) < 0.01 * source.size


def test_2d_file_keeps_its_geometry(inputs, tmp_path, capsys):
    volume = files.load_volume(inputs.image2d)
    np.testing.assert_allclose(volume.spacing[1:], [1.0, 3.0])
    out = tmp_path / "w.nii.gz"
    code = main(
        ["apply", inputs.identity2d, "--to", inputs.image2d, "--reference", inputs.image2d,
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    written, source = nib.load(out), nib.load(inputs.image2d)
    np.testing.assert_allclose(written.affine, source.affine)  # origin 10, -40, -88 kept
    np.testing.assert_allclose(np.asarray(written.dataobj), np.asarray(source.dataobj), atol=1e-3)


def test_filesystem_errors_are_one_line_naming_the_path(inputs, tmp_path, capsys, monkeypatch):
    """A full disk and a refused permission (simulated: the tests may run as root)."""
    out = tmp_path / "c.nii.gz"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "replace", full)
    assert main(["clean-labels", inputs.fixed_labels, str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mireg clean-labels: error: {out}: cannot be written (No space left on device)"
    monkeypatch.undo()

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(files.tempfile, "mkstemp", refused)
    assert main(["overlap", inputs.fixed_labels, inputs.fixed_labels, "--csv", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mireg overlap: error: {out}: cannot be written (Permission denied)"
    monkeypatch.undo()
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # a read-only folder
    assert main(["register", inputs.fixed, inputs.moving, "--out", str(tmp_path / "o")]) == 2
    assert "no write permission" in capsys.readouterr().err
    assert listing(tmp_path) == []


def test_batch_records_only_failures_caused_by_the_inputs(inputs, tmp_path, monkeypatch):
    from napari_mireg.cli import jobs

    pair = read_pairs(inputs.bom)[0]
    options = RegistrationOptions(level_iters=(2,), prealign="none")
    full_disk = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "warp.nii.gz")

    def fail(*args, **kwargs):
        raise full_disk

    monkeypatch.setattr(jobs, "run_job", fail)
    row, _ = register_pair(pair, tmp_path / "a", 1, options)
    assert row["status"] == "failed" and "No space left on device" in row["error"]
    assert not (tmp_path / "a" / "failed.json").exists()  # tried again by the next run
    broken = pair.__class__(pair.name, pair.fixed, inputs.zeros)
    row, _ = register_pair(broken, tmp_path / "b", 1, options)
    assert "image is constant" in row["error"]
    assert "image is constant" in json.loads((tmp_path / "b" / "failed.json").read_text())["error"]


# (case id, call, exception type, words)
API_FAILING = [
    ("mi-bins-32768", lambda f: MutualInformation(bins=32768), ValueError, "bins"),
    ("mi-bins-4", lambda f: MutualInformation(bins=4), ValueError, "bins"),
    ("mi-bins-float", lambda f: MutualInformation(bins=32.5), ValueError, "bins"),
    (
        "options-step-inf",
        lambda f: RegistrationOptions(step_length=float("inf")),
        OptionError,
        "step_length",
    ),
    (
        "options-sigma-inf",
        lambda f: RegistrationOptions(update_sigma=float("inf")),
        OptionError,
        "update_sigma",
    ),
    ("options-bins", lambda f: RegistrationOptions(bins=100000), OptionError, "bins"),
    (
        "options-unknown",
        lambda f: RegistrationOptions.build(bin=32),
        OptionError,
        "bin: not a registration option",
    ),
    (
        "nan-affine",
        lambda f: files.load_transform(f.nan_affine),
        files.InputError,
        "nan_affine.txt: affine transform has NaN",
    ),
    (
        "singular-inverse",
        lambda f: files.load_transform(f.singular_mat, invert=True),
        files.InputError,
        "singular.mat: affine matrix is singular",
    ),
    (
        "text-mat",
        lambda f: files.load_transform(f.text_mat),
        files.InputError,
        "text.mat: cannot be read",
    ),
    (
        "huge-warp",
        lambda f: files.load_transform(f.huge_warp),
        files.InputError,
        "huge_warp.nii.gz: displacements reach",
    ),
    (
        "nan-affine-map",
        lambda f: apply_transforms(
            np.ones((4, 4, 4)), files.load_volume(f.fixed), [AffineMap(np.full((4, 4), np.nan))]
        ),
        ValueError,
        "transform 0: affine matrix must be a finite 4x4 matrix",
    ),
    (
        "negative-float-labels",
        lambda f: label_values(np.array([[-1.0, 2.0]])),
        ValueError,
        "negative labels",
    ),
    (
        "mgz-int64",
        lambda f: files.save_volume(
            Path(f.folder) / "x.mgz", np.array([[[BIG_LABEL]]]), np.eye(4), labels=True
        ),
        files.InputError,
        "x.mgz: label 8589934594 does not fit MGH",
    ),
    (
        "save-missing-folder",
        lambda f: files.save_volume(
            Path(f.folder) / "no" / "x.nii.gz", np.ones((2, 2, 2)), np.eye(4)
        ),
        files.FileAccessError,
        "x.nii.gz: cannot be written: the folder",
    ),
    (
        "constant-image",
        lambda f: load_inputs(f.zeros, f.moving),
        files.InputError,
        "zeros.nii.gz: image is constant",
    ),
    (
        "latin-1-table",
        lambda f: read_pairs(f.latin1),
        files.InputError,
        "latin1.csv: is not UTF-8 text",
    ),
    (
        "one-subject",
        lambda f: all_pairs(f.one_subject),
        files.InputError,
        "one_subject.csv: lists one subject",
    ),
    (
        "cohort-threads-0",
        lambda f: run_cohort(read_pairs(f.bom), Path(f.folder) / "c", threads_per_task=0),
        OptionError,
        "threads_per_task",
    ),
]


@pytest.mark.parametrize(
    ("call", "kind", "words"), [case[1:] for case in API_FAILING], ids=[c[0] for c in API_FAILING]
)
def test_api_refuses_with_a_message_naming_the_problem(inputs, call, kind, words):
    before = listing(inputs.folder)
    with pytest.raises(kind) as raised:
        call(inputs)
    assert words in str(raised.value)
    assert "\n" not in str(raised.value)
    assert listing(inputs.folder) == before


def test_largest_bins_count_the_samples_exactly():
    """1024 bins: the histogram's index arithmetic (4 * bins**2 cells per chunk) stays exact."""
    rng = np.random.default_rng(0)
    fixed = rng.random((24, 24, 24))
    moving = fixed + 0.1 * rng.random(fixed.shape)
    metric = MutualInformation(bins=1024, threads=1)
    value = metric.value(fixed, moving)
    histogram = metric.joint_histogram
    assert histogram.shape == (1024, 1024)
    assert histogram.sum() == pytest.approx(1.0)
    assert value > MutualInformation(bins=32, threads=1).value(fixed, moving)


def test_unusual_but_valid_values_are_read_exactly(inputs):
    values = label_values(np.array([[0.0, 3e9]]))
    assert values.dtype == np.int64 and int(values[0, 1]) == 3_000_000_000
    labels = np.zeros((6, 6, 6), np.int64)
    labels[1:3, 1:3, 1:3] = 2**31 - 2
    labels[4, 4, 4] = 2**31 - 2  # an island
    cleaned, changes = clean_labels(labels)
    assert [(c.label, c.islands_removed, c.island_voxels) for c in changes] == [(2**31 - 2, 1, 1)]
    assert cleaned[4, 4, 4] == 0 and cleaned.dtype == np.int64
    pairs = read_pairs(inputs.bom)  # a spreadsheet's byte-order mark is not part of "fixed"
    assert [Path(p.fixed).name for p in pairs] == ["fixed_t1.nii.gz"]


def test_a_plain_4d_image_is_refused_as_a_displacement_field(inputs, tmp_path, capsys):
    grid = nib.load(inputs.fixed)
    plain = tmp_path / "plain.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(grid.shape + (3,), np.float32), grid.affine), plain)
    no_intent = tmp_path / "no_intent.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(grid.shape + (1, 3), np.float32), grid.affine), no_intent)
    for path, shape, intent in ((plain, grid.shape + (3,), 0), (no_intent, grid.shape + (1, 3), 0)):
        out = tmp_path / "out.nii.gz"
        assert main(["apply", str(path), "--to", str(inputs.moving), "--out", str(out)]) == 2
        assert capsys.readouterr().err.strip() == (
            f"mireg apply: error: {path}: is not an ITK/ANTs displacement field: found shape "
            f"{shape} and NIfTI intent {intent}; a 3D warp is a 5D (X, Y, Z, 1, 3) vector "
            f"image with intent 1007 (vector)"
        )
        assert not out.exists()


def test_an_itk_file_with_two_transforms_is_refused(inputs, tmp_path):
    one = Path(inputs.identity).read_text().splitlines()
    body = [line for line in one if not line.startswith("#")]
    composite = tmp_path / "composite.txt"
    composite.write_text(
        "\n".join(
            ["#Insight Transform File V1.0", "#Transform 0"]
            + ["Transform: CompositeTransform_double_3_3"]
            + ["#Transform 1", *body, "#Transform 2", *body]
        )
        + "\n"
    )
    with pytest.raises(files.InputError) as refused:
        files.load_transform(composite)
    assert str(refused.value) == (
        f"{composite}: holds 2 transforms (a composite transform); mireg applies one affine "
        "per file: give each transform as its own file"
    )
    # A composite holding one affine is that affine.
    single = tmp_path / "single.txt"
    single.write_text(
        "\n".join(["#Transform 0", "Transform: CompositeTransform_double_3_3", "#Transform 1"])
        + "\n"
        + "\n".join(body)
        + "\n"
    )
    np.testing.assert_allclose(files.load_transform(single).matrix, np.eye(4))


def test_the_api_refuses_labels_and_matrices_as_the_command_line_does(inputs):
    from napari_mireg.engine.registration import register_steps

    fixed, moving = nib.load(inputs.fixed), nib.load(inputs.moving)
    labels = np.asarray(nib.load(inputs.fixed_labels).dataobj).astype(np.float32)
    fractional = labels * 0.5 + 0.25  # what a resampled (linear) label map looks like
    cases = [
        (
            {"fixed_labels": fractional},
            "fixed_labels: label map holds non-integer values (e.g. 0.25); is this an "
            "intensity image?",
        ),
        (
            {"moving_labels": labels[:-2]},
            f"moving_labels: label map of shape {labels[:-2].shape} is not on the grid of its "
            f"image (shape {moving.shape})",
        ),
        (
            {"fixed_labels": np.zeros(fixed.shape, np.int16)},
            "fixed_labels: the label map has no labelled voxel: no brain mask can be made",
        ),
        (
            {"prealign": np.diag([1.0, 1.0, 0.0, 1.0])},
            "prealign: affine matrix is singular (it maps space onto a plane or a point)",
        ),
    ]
    for settings, message in cases:
        steps = register_steps(fixed, moving, level_iters=(1,), **settings)
        with pytest.raises(ValueError) as refused:
            next(steps)
        assert str(refused.value) == message


def test_an_all_zero_label_file_is_named(inputs, tmp_path, capsys):
    zeros = write(
        tmp_path / "zero_labels.nii.gz",
        np.zeros(nib.load(inputs.fixed).shape, np.int16),
        nib.load(inputs.fixed).affine,
    )
    arguments = ["register", inputs.fixed, inputs.moving, "--fixed-labels", str(zeros)]
    arguments += ["--moving-labels", inputs.moving_labels, "--out", str(tmp_path / "out")]
    assert main(arguments) == 2
    assert capsys.readouterr().err.strip() == (
        f"mireg register: error: {zeros}: the label map has no labelled voxel (every voxel is 0)"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("voxel_mm", [1e-3, 1e3])
def test_a_header_in_the_wrong_unit_is_named_with_its_voxel_size(inputs, tmp_path, voxel_mm):
    data = np.asarray(nib.load(inputs.fixed).dataobj)
    path = write(tmp_path / "unit.nii.gz", data, np.diag([voxel_mm] * 3 + [1.0]))
    with pytest.raises(files.InputError) as refused:
        files.load_volume(path)
    shown = f"{voxel_mm:.3g}"
    assert str(refused.value) == (
        f"{path}: voxel size {shown} x {shown} x {shown} mm is outside 0.01 to 20 mm; is the "
        "header in another unit (metres, micrometres)?"
    )


def test_a_loop_of_links_or_a_folder_as_an_input_is_one_line(inputs, tmp_path, capsys):
    loop = tmp_path / "loop.nii.gz"
    loop.symlink_to(tmp_path / "loop2.nii.gz")
    (tmp_path / "loop2.nii.gz").symlink_to(loop)
    folder = tmp_path / "folder.nii.gz"
    folder.mkdir()
    dangling = tmp_path / "dangling.nii.gz"
    dangling.symlink_to(tmp_path / "gone.nii.gz")
    problems = {
        loop: "is a loop of symbolic links",
        folder: "is a folder, not a file",
        dangling: "is a symbolic link to a missing file",
    }
    for path, problem in problems.items():
        out = tmp_path / "out"
        assert main(["register", inputs.fixed, str(path), "--out", str(out)]) == 2
        assert capsys.readouterr().err.strip() == f"mireg register: error: {path}: {problem}"
        assert main(["apply", str(path), "--to", inputs.moving, "--out", str(out) + ".nii"]) == 2
        assert capsys.readouterr().err.strip() == f"mireg apply: error: {path}: {problem}"
        assert not out.exists()
    # In a cohort table, the row with the loop is a pair like any other (it fails alone).
    table = tmp_path / "pairs.csv"
    table.write_text(f"fixed,moving\n{inputs.fixed},{loop}\n{inputs.fixed},{inputs.moving}\n")
    assert [p.moving for p in read_pairs(table)] == [str(loop), inputs.moving]


def test_command_line_numbers_out_of_range_are_one_line(inputs, tmp_path, capsys):
    out = str(tmp_path / "out")
    cases = [
        (
            ["clean-labels", inputs.fixed_labels, str(tmp_path / "c.nii.gz"), "--min-island", "-5"],
            "mireg clean-labels: error: --min-island: must be a whole number >= 1, got -5",
        ),
        (
            ["register", inputs.fixed, inputs.moving, "--out", out, "--winsorize", "-0.1,0.9"],
            "mireg register: error: --winsorize: must be >= 0 and <= 1, got '-0.1'",
        ),
    ]
    for arguments, line in cases:
        assert main(arguments) == 2
        assert capsys.readouterr().err.strip() == line
    assert list(tmp_path.iterdir()) == []


def test_a_header_declaring_more_voxels_than_the_file_holds_is_named(tmp_path, capsys):
    header = nib.Nifti1Header()
    header.set_data_shape((32767, 32767, 32767))
    header.set_data_dtype(np.float32)
    path = tmp_path / "huge_header.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 4000)
    assert main(["apply", str(path), "--to", str(path), "--out", str(tmp_path / "o.nii")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"mireg apply: error: {path}: the header declares shape (32767, 32767, 32767) "
        f"(1.41e+05 GB of voxels) but the file has 4352 bytes: a damaged header or a "
        f"truncated file"
    )


def test_batch_threads_per_task_beyond_the_limit_is_refused_before_a_cluster(tmp_path, capsys):
    table = tmp_path / "pairs.csv"
    table.write_text("fixed,moving\na.nii.gz,b.nii.gz\n")
    arguments = ["batch", str(table), "--out", str(tmp_path / "out")]
    assert main([*arguments, "--threads-per-task", "5000"]) == 2
    assert capsys.readouterr().err.strip() == (
        "mireg batch: error: --threads-per-task: must be at most 4096, got 5000"
    )
    assert not (tmp_path / "out").exists()


def test_huge_intensities_and_label_ids_are_named(inputs, tmp_path):
    fixed = nib.load(inputs.fixed)
    data = np.asarray(fixed.dataobj).astype(np.float32)
    data[0, 0, 0] = 3e38  # finite, yet beyond what float32 differences can hold
    huge = write(tmp_path / "huge.nii.gz", data, fixed.affine)
    with pytest.raises(files.InputError) as refused:
        files.load_volume(huge)
    assert str(refused.value) == (
        f"{huge}: intensities reach 3e+38, too large to register (above 1e+30); rescale the image"
    )
    ids = np.zeros(fixed.shape, np.uint64)
    ids[1, 1, 1] = 2**63 + 5
    big = write(tmp_path / "big_ids.nii.gz", ids, fixed.affine)
    with pytest.raises(files.InputError) as refused:
        files.load_volume(big, labels=True)
    assert str(refused.value) == (
        f"{big}: label id {2**63 + 5} is too large (ids must be below 2**63)"
    )


def test_the_api_names_the_real_cause_before_any_step(inputs):
    """The real cause, before the first step: not "image is constant" or "NaN or infinite"
    once the prealignment has started.
    """
    from napari_mireg.engine.metric import MutualInformation
    from napari_mireg.engine.registration import register_steps

    rng = np.random.default_rng(4)
    tiny = rng.random((2, 2, 2))
    cube = rng.random((20, 20, 20)).astype(np.float32)
    huge = cube.copy()
    huge[0, 0, 0] = 3e38  # finite
    beyond = cube.astype(np.float64)
    beyond[0, 0, 0] = 1e39  # finite in float64, infinite once float32
    fixed = nib.load(inputs.fixed)
    corner = np.zeros(fixed.shape, bool)
    corner[:3, :3, :3] = True
    cases = [
        (
            (tiny, tiny, {"level_iters": (1,) * 12}),
            "fixed: 2 x 2 x 2 voxels is too small for 12 levels of level_iters: level 1 "
            "shrinks it 2048 times to a single voxel; give at most 1 level",
        ),
        (
            (cube, cube, {"level_iters": (1,) * 12, "prealign": "none"}),
            "fixed: 20 x 20 x 20 voxels is too small for 12 levels of level_iters: level 1 "
            "shrinks it 2048 times to a single voxel; give at most 5 levels",
        ),
        (
            (cube, tiny, {"level_iters": (1, 1), "prealign": "none"}),
            "moving: 2 x 2 x 2 voxels is too small for 2 levels of level_iters: level 1 "
            "shrinks it 2 times to a single voxel; give at most 1 level",
        ),
        (
            (tiny, tiny, {"level_iters": (5,)}),
            "fixed: 2 x 2 x 2 voxels is too small for the MI prealignment, whose levels shrink "
            "it 4 times to a single voxel: use prealign none or give a prealignment matrix",
        ),
        (
            (cube, cube, {"fixed_affine": np.diag([1e-3] * 3 + [1.0])}),
            "fixed: voxel size 0.001 x 0.001 x 0.001 mm is outside 0.01 to 20 mm; is the "
            "header in another unit (metres, micrometres)?",
        ),
        (
            (fixed, nib.load(inputs.moving), {"winsorize": (0.01, 0.3)}),
            "fixed: winsorize 0.01,0.3 clips every voxel to 0 (the image has that value from "
            "its 0.01 to its 0.3 quantile); give a wider range, e.g. 0.005,0.995, or none",
        ),
        (
            (fixed, nib.load(inputs.moving), {"fixed_mask": corner}),
            "fixed_mask: every voxel of the fixed image inside this mask is 0: the mask "
            "does not lie on the image's anatomy",
        ),
        (
            (fixed, nib.load(inputs.moving), {"fixed_labels": corner.astype(np.int16)}),
            "fixed_labels: every voxel of the fixed image inside the brain of these labels is "
            "0: the mask does not lie on the image's anatomy",
        ),
        (
            (huge, cube, {}),
            "fixed: intensities reach 3e+38, too large to register (above 1e+30); rescale "
            "the image",
        ),
        (
            (cube, beyond, {}),
            "moving: intensities reach 1e+39, too large to register (above 1e+30); rescale "
            "the image",
        ),
    ]
    for (first, second, settings), message in cases:
        steps = register_steps(first, second, **{"level_iters": (1,), **settings})
        with pytest.raises(ValueError) as refused:
            next(steps)  # no step is ever made
        assert str(refused.value) == message
    with pytest.raises(ValueError, match=r"^moving image: intensities reach 3e\+38"):
        MutualInformation(threads=1).value(cube, huge)
    # A float64 file beyond float32's range is named for its size, not as infinite.
    path = write(Path(inputs.folder) / "beyond.nii.gz", beyond, np.eye(4))
    try:
        with pytest.raises(files.InputError) as refused:
            files.load_volume(path)
        assert str(refused.value) == (
            f"{path}: intensities reach 1e+39, too large to register (above 1e+30); rescale "
            "the image"
        )
    finally:
        path.unlink()
