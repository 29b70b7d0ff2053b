"""One registration job from files to an output folder: what `mireg register` and the cohort
runner do for each pair.

The outputs are written into a hidden staging folder (``.partial-*``) inside the output
folder. Only when every one of them is there does the output folder change, as one set: the
earlier ``report.json`` goes first (the folder stops being a complete job), earlier outputs
that this run does not make are removed, the new files move in, and the new ``report.json``
moves last, so its presence marks a complete job. An error or an interruption (Ctrl-C,
SIGTERM) removes the staging folder; one left by a killed process (SIGKILL) is removed by
the next run into the same folder.

Only files a mireg run wrote are ever replaced or removed (see
:mod:`napari_mireg.files.output_folder`): the folder is locked for the run, and a file named
like an output that mireg did not write, or an input the swap would replace, is refused
before any work.
"""

import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_mireg import __version__, files
from napari_mireg.engine import masks
from napari_mireg.engine.quality import evaluate
from napari_mireg.engine.registration import register_steps
from napari_mireg.engine.steps import run_to_end
from napari_mireg.engine.transforms import Volume, apply_transforms, same_grid
from napari_mireg.files import output_folder
from napari_mireg.options import RegistrationOptions

OUTPUT_FILES = {
    "warped": "warped.nii.gz",
    "warped_labels": "warped_labels.nii.gz",
    "affine": "affine.txt",
    "affine_mat": "affine.mat",
    "warp": "warp.nii.gz",
    "inverse_warp": "inverse_warp.nii.gz",
    "overlap": "overlap.csv",
    "report": "report.json",
}


@dataclass
class JobInputs:
    """The volumes of one job, checked against each other.

    Attributes
    ----------
    fixed, moving : Volume
    fixed_labels, moving_labels : Volume or None
        On the grid of their image.
    mask : ndarray of bool or None
        On the fixed grid: where the metric counts.
    paths : dict of str
    moving_mask : ndarray of bool or None
        On the moving grid.
    stamps : dict
        :func:`file_stamp` of each input when it was read (written in the report).
    """

    fixed: Volume
    moving: Volume
    fixed_labels: Volume | None = None
    moving_labels: Volume | None = None
    mask: np.ndarray | None = None
    paths: dict[str, str] | None = None
    moving_mask: np.ndarray | None = None
    stamps: dict[str, dict | None] | None = None


def load_inputs(fixed, moving, fixed_labels=None, moving_labels=None, mask=None, moving_mask=None):
    """Read and check the files of one job.

    Masks may lie on any grid: they are resampled (nearest neighbour) onto their image's.

    Raises
    ------
    files.InputError
        A file is missing or bad, the images differ in dimensionality, a label map is not on
        the grid of its image, or labels are given for one side only.
    """
    paths = {
        "fixed": fixed,
        "moving": moving,
        "fixed_labels": fixed_labels,
        "moving_labels": moving_labels,
        "mask": mask,
        "moving_mask": moving_mask,
    }
    paths = {key: str(files.resolved(value)) for key, value in paths.items() if value}
    stamps = {key: file_stamp(path) for key, path in paths.items()}  # before reading them
    fixed_volume = files.load_volume(fixed)
    moving_volume = files.load_volume(moving)
    for path, volume in ((fixed, fixed_volume), (moving, moving_volume)):
        low, high = float(volume.data.min()), float(volume.data.max())
        if low == high:
            raise files.InputError(
                path, f"image is constant (every voxel is {low:g}): there is nothing to align"
            )
    if fixed_volume.ndim != moving_volume.ndim:
        raise files.InputError(
            moving, f"is {moving_volume.ndim}D but the fixed image {fixed} is {fixed_volume.ndim}D"
        )
    if bool(fixed_labels) != bool(moving_labels):
        given = fixed_labels or moving_labels
        raise files.InputError(given, "labels need both sides: give fixed and moving labels")
    labels = [
        _labels_on(path, image, image_path)
        for path, image, image_path in (
            (fixed_labels, fixed_volume, fixed),
            (moving_labels, moving_volume, moving),
        )
    ]
    return JobInputs(
        fixed_volume,
        moving_volume,
        labels[0],
        labels[1],
        _mask_on(mask, fixed_volume, "fixed"),
        paths,
        _mask_on(moving_mask, moving_volume, "moving"),
        stamps,
    )


def file_stamp(path):
    """Size and modification time (ns) of a file, or None: tells a changed input."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns}


def mask_source(mask, labels, extracted):
    """Where a side's metric mask came from, for the report.

    Parameters
    ----------
    mask : object or None
        The side's mask (file or array), if one was given.
    labels : object or None
        The side's label map, if one was given.
    extracted : bool
        Whether ROBEX made the side's brain mask.

    Returns
    -------
    str or None
    """
    if mask is not None:
        return "mask file"
    if labels is not None:
        return "labels (brain, dilated)"
    return "ROBEX brain extraction (dilated)" if extracted else None


def _data(volume):
    """A Volume's voxels on its 3D grid, or None (labels give each side's brain mask)."""
    return None if volume is None else volume.data


def _mask_on(path, image, side):
    """A mask file resampled onto its image's grid, as booleans (None without a path)."""
    if not path:
        return None
    mask = apply_transforms(files.load_volume(path, labels=True), image, [], "nearest") > 0
    if not mask.any():
        raise files.InputError(path, f"the mask selects no voxel of the {side} image")
    return mask


def _labels_on(path, image, image_path):
    """Load a label map and check that it lies on its image's grid."""
    if not path:
        return None
    labels = files.load_volume(path, labels=True)
    if not same_grid(labels, image):
        raise files.InputError(
            path,
            f"label map grid (shape {labels.shape[-image.ndim :]}) does "
            f"not match its image {image_path} (shape "
            f"{image.shape[-image.ndim :]}) or its affine differs",
        )
    if not labels.data.any():
        raise files.InputError(path, "the label map has no labelled voxel (every voxel is 0)")
    return labels


def run_job_steps(inputs, out_dir, options=None, **settings):
    """Register one job and write its outputs, yielding the registration's steps.

    The steps are :func:`~napari_mireg.engine.registration.register_steps`' (each says its
    ``phase``: "brain extraction" (ROBEX masking a side, with ``brain_extraction``),
    "prealignment", "prealigned" or "syn").

    Parameters
    ----------
    inputs : JobInputs
    out_dir : str or Path
        Created if missing; the outputs (`OUTPUT_FILES`) are written there.
    options : RegistrationOptions or dict, optional
    **settings
        Single options overriding `options` (see :class:`RegistrationOptions`).

    Returns
    -------
    dict
        The report (also written as ``report.json``).
    """
    options = RegistrationOptions.build(options, **settings)
    with locked_output_folder(out_dir, inputs.paths) as out_dir:
        return (yield from _run_in(inputs, out_dir, options))


def _run_in(inputs, out_dir, options):
    """:func:`run_job_steps` in its locked output folder, through a staging folder."""
    with _staged(out_dir) as staging:
        _pause_for_tests("prealign")
        result = yield from _paused_after_first(
            register_steps(
                inputs.fixed,
                inputs.moving,
                options,
                fixed_mask=inputs.mask,
                moving_mask=inputs.moving_mask,
                fixed_labels=_data(inputs.fixed_labels),
                moving_labels=_data(inputs.moving_labels),
            )
        )
        report = _write_job(result, inputs, staging, options)
        _swap_in(staging, out_dir)
        return report


def save_output_set(out_dir, fixed, result, quality, report, inputs=None):
    """Write a registration's output set into `out_dir` as `mireg register` does.

    The folder is locked and checked (:func:`locked_output_folder`), the files are written
    into a staging folder by :func:`write_outputs` and swapped in as one set, so the same
    files are never touched and the same promises hold as for a job.

    Parameters
    ----------
    out_dir : str or Path
    fixed, result, quality, report
        As for :func:`write_outputs`.
    inputs : dict of str, optional
        Input files by role: none may be a file the outputs would replace.

    Returns
    -------
    dict
        The report written.
    """
    with locked_output_folder(out_dir, inputs) as folder, _staged(folder) as staging:
        report = write_outputs(staging, fixed, result, quality, report)
        _swap_in(staging, folder)
        return report


@contextlib.contextmanager
def _staged(out_dir):
    """A staging folder in `out_dir` for the ``with`` block, removed after it."""
    staging = _staging_folder(out_dir)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging, out_dir):
    """Swap the staged outputs in, stop signals held (see :func:`_stop_signals_held`)."""
    with _stop_signals_held():
        _replace_outputs(staging, out_dir)


STAGING_PREFIX = ".partial-"
TEST_PAUSE = "MIREG_TEST_PAUSE"  # for the interruption tests only: see _pause_for_tests


def _pause_for_tests(phase):
    """Wait while the interruption tests send a signal (only with MIREG_TEST_PAUSE set).

    ``MIREG_TEST_PAUSE=prealign|prealignment|syn|write`` makes a job print
    ``mireg test pause: PHASE`` on standard error and sleep 60 s at that point (before the
    prealignment, after its first MI iteration (its progress line printed), after the first
    SyN iteration, after the first output file is written), so a test can stop it
    in that phase however loaded the machine is; ``mireg test pause: PHASE over`` after
    the sleep tells a test that its signal came too late. Unset, this does nothing.
    """
    if os.environ.get(TEST_PAUSE) == phase:
        print(f"mireg test pause: {phase}", file=sys.stderr, flush=True)
        time.sleep(60)
        print(f"mireg test pause: {phase} over", file=sys.stderr, flush=True)


def _paused_after_first(steps):
    """Pass the registration's steps on, with the "prealignment" and "syn" test pauses
    after the first step of each phase.
    """
    paused = set()
    try:
        while True:
            step = next(steps)
            yield step
            if step.phase in ("prealignment", "syn") and step.phase not in paused:
                paused.add(step.phase)
                _pause_for_tests(step.phase)
    except StopIteration as finished:
        return finished.value
    finally:
        steps.close()


@contextlib.contextmanager
def locked_output_folder(out_dir, inputs=None):
    """Create, check and lock the output folder for one job; remove stale staging folders.

    A staging folder is left only by a process that was killed outright (SIGKILL, power
    loss): the folder's lock shows no live run uses it, so it is removed. The lock is held
    while the ``with`` block runs.

    Parameters
    ----------
    out_dir : str or Path
    inputs : dict of str, optional
        The job's input paths: none may be a file the outputs would replace.

    Yields
    ------
    Path
        The output folder.

    Raises
    ------
    files.FileAccessError
        `out_dir` is empty, a file, cannot be created or written, or holds a file named
        like an output that mireg did not write: one line naming it.
    output_folder.FolderInUseError
        Another live run writes into `out_dir`.
    files.InputError
        An input is one of the files this run would replace.
    """
    if not str(out_dir).strip():
        raise files.FileAccessError(out_dir, "the output folder is empty: name a folder")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise files.FileAccessError(out_dir, "output folder is a file")
    names = set(OUTPUT_FILES.values())
    output_folder.check_inputs_apart(inputs or {}, out_dir, names)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise files.FileAccessError(
            out_dir, f"output folder cannot be used ({error.strerror or error})", error.errno
        ) from error
    with output_folder.folder_lock(out_dir):
        try:
            output_folder.check_outputs_free(out_dir, names)
            remove_staging(out_dir)
        except files.FileAccessError:
            raise
        except OSError as error:
            raise files.FileAccessError(
                out_dir, f"output folder cannot be used ({error.strerror or error})", error.errno
            ) from error
        yield out_dir


def _is_staging(path):
    """A staging folder: a real folder holding only outputs and their hidden temporaries."""
    if not path.is_dir() or path.is_symlink():
        return False
    names = set(OUTPUT_FILES.values())
    return all(
        entry.name in names or (entry.name.startswith(".") and entry.is_file())
        for entry in path.iterdir()
    )


def remove_staging(out_dir):
    """Remove the staging folders (``.partial-*``) of unfinished jobs from `out_dir`.

    Nothing is removed while another live process holds the folder's lock (its job may
    still be writing), nor anything that does not look like a staging folder. A lock left
    by a process that is gone goes too.
    """
    folder = Path(out_dir)
    if not folder.is_dir():
        return
    owner = output_folder.lock_owner(folder)
    if owner is not None and owner != os.getpid():
        return
    if owner is None:
        (folder / output_folder.LOCK_FILE).unlink(missing_ok=True)
    for stale in folder.glob(STAGING_PREFIX + "*"):
        if _is_staging(stale):
            shutil.rmtree(stale)


def _staging_folder(out_dir):
    try:
        return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    except OSError as error:
        raise files.FileAccessError(
            out_dir, f"output folder cannot be written ({error.strerror or error})", error.errno
        ) from error


# Held while the outputs are swapped in (a few renames): see output_folder.stop_signals_held.
_stop_signals_held = output_folder.stop_signals_held


def _replace_outputs(staging, out_dir):
    """Swap the staged outputs in as one set, ``report.json`` last (see the module notes).

    Only outputs an earlier mireg run wrote (those its report lists) are replaced or
    removed. While the swap runs, a record of written files covers the old and the new set,
    so a swap cut short (SIGKILL) leaves nothing unrecorded; the new report takes over.
    """
    report = OUTPUT_FILES["report"]
    names = set(OUTPUT_FILES.values())
    new = sorted(p.name for p in staging.iterdir() if p.name != report)
    try:
        output_folder.check_outputs_free(out_dir, names)  # again: minutes have passed
        earlier = output_folder.written_files(out_dir) & names
        output_folder.record_written(out_dir, earlier | set(new) | {report})
        (out_dir / report).unlink(missing_ok=True)
        for name in sorted(earlier - set(new) - {report}):
            (out_dir / name).unlink(missing_ok=True)  # an earlier run's, not made this time
        for name in new:
            (staging / name).replace(out_dir / name)
        (staging / report).replace(out_dir / report)
        # The new report lists what is there now: the swap's record has done its job.
        (out_dir / output_folder.WRITTEN_FILE).unlink(missing_ok=True)
    except files.FileAccessError:
        raise
    except OSError as error:
        raise files.FileAccessError(
            out_dir, f"outputs cannot be moved into place ({error.strerror or error})", error.errno
        ) from error


def run_job(inputs, out_dir, options=None, **settings):
    """:func:`run_job_steps` run to the end; returns the report."""
    return run_to_end(run_job_steps(inputs, out_dir, options, **settings))


def _write_job(result, inputs, folder, options):
    """Evaluate a job's result and write its outputs into `folder`; returns the report."""
    fixed = inputs.fixed
    fixed_labels = inputs.fixed_labels
    quality = evaluate(
        result,
        None if fixed_labels is None else fixed.user_array(fixed_labels.data),
        inputs.moving_labels,
        inverse_consistency=True,
    )
    extracted = masks.extraction_sides(options.brain_extraction)
    report = {
        "inputs": {
            key: {"path": path, **((inputs.stamps or {}).get(key) or {})}
            for key, path in inputs.paths.items()
        },
        "parameters": options.as_dict(),
        "metric_masks": {
            "fixed": mask_source(inputs.mask, inputs.fixed_labels, extracted[0]),
            "moving": mask_source(inputs.moving_mask, inputs.moving_labels, extracted[1]),
        },
    }
    for key, volume in (("fixed", fixed), ("moving", inputs.moving)):
        report["inputs"][key].update(
            shape=list(volume.shape[-volume.ndim :]),
            voxel_size=[round(float(v), 6) for v in volume.spacing[-volume.ndim :]],
        )
    return write_outputs(folder, fixed, result, quality, report)


def write_outputs(folder, fixed, result, quality, report):
    """Write the output set of a registration into `folder` (`OUTPUT_FILES`), report last.

    The one writer of the set, for `mireg register`, cohorts and the widget's "Export all".
    Each file is written atomically; :func:`save_output_set` puts a set in place.

    Parameters
    ----------
    folder : Path
        Where the files go (a staging folder: see the module notes).
    fixed : Volume
        The fixed image's grid (its file's): the grid of the warped images and the warps.
    result : Result
        The registration's result, its warped image on `fixed` and its mapping's fields on
        `fixed` (3D).
    quality : Quality
        Its evaluation, the warped labels on `fixed`.
    report : dict
        What is known of the inputs ("inputs", "parameters", "metric_masks"); the figures
        of the result, the versions and the list of outputs are added.

    Returns
    -------
    dict
        The report, also written as ``report.json``.
    """
    started = time.perf_counter()
    outputs = [
        OUTPUT_FILES["warped"],
        OUTPUT_FILES["affine"],
        OUTPUT_FILES["affine_mat"],
        OUTPUT_FILES["report"],
    ]
    files.save_volume(folder / OUTPUT_FILES["warped"], result.warped, fixed.file_affine)
    _pause_for_tests("write")
    for name in ("affine", "affine_mat"):
        files.save_affine(result.prealignment, folder / OUTPUT_FILES[name], fixed.ndim)
    if fixed.ndim == 3:
        files.save_displacement(result.mapping, folder / OUTPUT_FILES["warp"], "forward")
        files.save_displacement(result.mapping, folder / OUTPUT_FILES["inverse_warp"], "inverse")
        outputs += [OUTPUT_FILES["warp"], OUTPUT_FILES["inverse_warp"]]
    overlap = overlap_affine = overlap_before = None
    if quality.overlap is not None:
        overlap = quality.overlap.summary()
        overlap_affine = quality.overlap_affine.summary()
        overlap_before = quality.overlap_before.summary()
        files.save_volume(
            folder / OUTPUT_FILES["warped_labels"],
            quality.warped_labels,
            fixed.file_affine,
            labels=True,
        )
        files.write_text(folder / OUTPUT_FILES["overlap"], quality.overlap.to_csv_text())
        outputs += [OUTPUT_FILES["warped_labels"], OUTPUT_FILES["overlap"]]
    consistency = quality.inverse_consistency
    report = {
        **report,
        "versions": _versions(),
        "timings": dict(result.timings, write=time.perf_counter() - started),
        "mi_before": result.mi_before,
        "mi_after": result.mi_after,
        "folds": quality.folds,
        "min_jacobian": quality.jacobian_range[0],
        "inverse_consistency_voxels": None if consistency is None else consistency[0],
        "overlap_before": overlap_before,
        "overlap_affine": overlap_affine,
        "overlap": overlap,
        "outputs": sorted(outputs),
    }
    files.write_text(folder / OUTPUT_FILES["report"], json.dumps(report, indent=2) + "\n")
    return report


def _versions():
    import nibabel

    return {
        "napari_mireg": __version__,
        "numpy": np.__version__,
        "nibabel": nibabel.__version__,
        "python": platform.python_version(),
    }


def read_report(out_dir):
    """The report of a complete job in `out_dir`, or None if the job is missing or partial.

    Complete means: ``report.json`` parses and every output it lists exists and is not empty.
    """
    path = Path(out_dir) / OUTPUT_FILES["report"]
    try:
        report = json.loads(path.read_text())
        outputs = report["outputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if all(
        (Path(out_dir) / name).is_file() and (Path(out_dir) / name).stat().st_size > 0
        for name in outputs
    ):
        return report
    return None
