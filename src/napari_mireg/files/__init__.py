"""Files in and out: volumes (NIfTI, MGZ) and transforms in the ITK/ANTs conventions.

Every write goes to a temporary file in the target's folder first and is renamed into
place, so a reader never sees a half-written file and an interrupted write leaves nothing.

ITK works in LPS world coordinates, nibabel in RAS: ``F = diag(-1, -1, 1)`` converts
points, vectors and matrices between the two (``M_lps = F M_ras F``).
"""

import contextlib
import errno
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
import numpy.typing as npt
from scipy import io as scipy_io

from napari_mireg._typing import Matrix, PathLike
from napari_mireg.engine import _validate
from napari_mireg.engine._validate import affine_matrix
from napari_mireg.engine.transforms import (
    AffineMap,
    DiffeomorphicMap,
    DisplacementField,
    Volume,
    as_volume,
)
from napari_mireg.labels import label_values

__all__ = [
    "NIFTI_INTENT_VECTOR",
    "RAS_TO_LPS",
    "VOLUME_SUFFIXES",
    "FileAccessError",
    "InputError",
    "atomic_path",
    "check_transforms_fit",
    "check_output_file",
    "check_output_folder",
    "describe_os_error",
    "itk_affine_parameters",
    "load_transform",
    "load_volume",
    "resolved",
    "save_affine",
    "save_displacement",
    "save_field",
    "save_volume",
    "suffix_of",
    "write_text",
]

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh")
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
NIFTI_INTENT_VECTOR = 1007
FIELD_REACH = 10.0  # largest accepted displacement, in grid diagonals


class InputError(ValueError):
    """A bad input file; the message starts with the file's path."""

    def __init__(self, path: PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


class FileAccessError(OSError):
    """The file system refused a read or a write (permission, full disk, read-only, ...).

    An ``OSError`` (so callers can tell it from a bad input: trying again later may work)
    whose message is one line starting with the path.
    """

    def __init__(self, path: PathLike, problem: str, errno: int | None = None) -> None:
        super().__init__(errno, problem)
        self.path = Path(path)
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def describe_os_error(error: OSError, path: PathLike | None = None) -> str:
    """One line naming the path and the problem of an OSError (e.g. for a CLI message)."""
    if isinstance(error, FileAccessError):
        return str(error)
    name = error.filename if error.filename is not None else path
    problem = error.strerror or str(error) or type(error).__name__
    return f"{name}: {problem}" if name is not None else problem


def suffix_of(path: PathLike) -> str:
    """The format suffix of a path: ``.nii.gz`` counts as one."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def resolved(path: PathLike) -> Path:
    """`path` made absolute with symbolic links followed; as given (absolute) for a loop.

    A loop of links is not an error here: reading the file says so, naming it.
    """
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError):  # Python raises RuntimeError for a loop of links
        return Path(os.path.abspath(path))


def _check_file(path):
    """Refuse a path that is not a file to read: one line saying what it is instead."""
    if path.is_file():
        return
    if path.is_dir():
        raise InputError(path, "is a folder, not a file")
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InputError(path, "is a loop of symbolic links") from None
        if path.is_symlink():
            raise InputError(path, "is a symbolic link to a missing file") from None
    raise InputError(path, "no such file")


def _open_image(path):
    """Nibabel image of a volume file, with its voxels read (so truncation shows here)."""
    path = Path(path)
    _check_file(path)
    if suffix_of(path) not in VOLUME_SUFFIXES:
        raise InputError(
            path,
            f"unsupported format {suffix_of(path) or '(no suffix)'}; "
            f"expected one of {', '.join(VOLUME_SUFFIXES)}",
        )
    if not os.access(path, os.R_OK):
        raise FileAccessError(path, "cannot be read (permission denied)")
    try:
        image = nib.load(path)
        _check_declared_size(image, path)
        data = np.asanyarray(image.dataobj)
    except (nib.filebasedimages.ImageFileError, EOFError, zlib.error, OSError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(
            path, f"cannot be read ({error}); is the file truncated or not {suffix_of(path)}?"
        ) from error
    except MemoryError:
        raise InputError(
            path, f"shape {image.shape} is too large to read into this machine's memory"
        ) from None
    return image, data


# gzip (deflate) compresses at most about 1032:1: a smaller file cannot hold the voxels.
MOST_COMPRESSION = 1100


def _check_declared_size(image, path):
    """Refuse a header that declares more voxels than the file can hold, before reading."""
    declared = float(np.prod(image.shape, dtype=np.float64)) * image.get_data_dtype().itemsize
    size = os.path.getsize(path)
    compressed = suffix_of(path) in (".nii.gz", ".mgz")
    if declared > (MOST_COMPRESSION * size if compressed else size):
        raise InputError(
            path,
            f"the header declares shape {tuple(image.shape)} ({declared / 1e9:.3g} GB of "
            f"voxels) but the file has {size} bytes: a damaged header or a truncated file",
        )


def load_volume(
    path: PathLike, *, labels: bool = False, dtype: npt.DTypeLike = np.float32
) -> Volume:
    """Read a 2D/3D volume (or a 4D file holding one volume) with its voxel-to-world affine.

    Parameters
    ----------
    path : str or Path
        .nii, .nii.gz, .mgz or .mgh.
    labels : bool
        Read a label map: integer values kept (whole-number floats converted), any other
        value refused.
    dtype : numpy dtype or None
        Type of intensity data (None keeps the file's, e.g. to tell labels from images).

    Returns
    -------
    Volume
        float32 data (or integers for labels) and the file's RAS affine.

    Raises
    ------
    InputError
        Missing, unreadable or truncated file, several volumes, non-finite intensities,
        non-integer labels; the message names the file.
    """
    image, data = _open_image(path)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        raise InputError(
            path, f"has shape {data.shape}: {int(np.prod(data.shape[3:]))} volumes, expected one"
        )
    try:
        if labels:
            data = label_values(data, "data")
        volume = as_volume(
            data, image.affine, "data", dtype=None if labels else dtype, from_file=True
        )
    except ValueError as error:
        raise InputError(path, str(error).removeprefix("data: ").removeprefix("data ")) from error
    _check_voxel_size(volume, path)
    _check_values(volume, path, labels)
    return volume


# Label ids above int64's range cannot be indexed (numpy indexes with int64).
LARGEST_LABEL = np.iinfo(np.int64).max


def _check_values(volume, path, labels):
    """Label ids numpy can index (intensities are checked by ``as_volume``, before any cast)."""
    data = volume.data
    if labels and data.size and data.dtype == np.uint64 and int(data.max()) > LARGEST_LABEL:
        raise InputError(path, f"label id {int(data.max())} is too large (ids must be below 2**63)")


def input_error(problem: _validate.InputProblem, paths: dict) -> InputError:
    """An engine's refusal of an input as the command line says it: the file and the flag.

    Parameters
    ----------
    problem : InputProblem
        Naming the argument ("fixed", "moving") and the option by their API names.
    paths : dict of str
        The file of each argument.

    Returns
    -------
    InputError
        ``"{file}: {problem}"``, the option written as its command-line flag.
    """
    from napari_mireg.options import OPTIONS

    flags = {option.name: option.cli_flag for option in OPTIONS}
    argument = {"fixed_mask": "mask"}.get(problem.argument, problem.argument)  # --mask
    flag = None if problem.option is None else flags.get(problem.option, problem.option)
    return InputError(paths.get(argument, problem.argument), problem.describe(flag))


def _check_voxel_size(volume, path):
    try:
        _validate.voxel_sizes(volume.spacing, volume.ndim, str(path))
    except _validate.InputProblem as problem:
        raise InputError(path, problem.describe()) from None


def check_output_file(path: PathLike, inputs: dict[str, PathLike] | None = None) -> None:
    """Refuse an output path that cannot be written, or that is one of the inputs.

    Parameters
    ----------
    path : str or Path
    inputs : dict, optional
        The command's inputs by role (e.g. ``{"--to": ...}``); the output may not be any of
        them (symbolic and hard links followed).

    Raises
    ------
    FileAccessError
        Its folder is missing or not writable, or the path is a folder.
    InputError
        The output would overwrite an input.
    """
    if not str(path).strip():
        raise FileAccessError(path, "the output file name is empty")
    path = Path(path)
    _check_target(path)
    _check_writable(path.parent, path)
    for role, given in (inputs or {}).items():
        if given and _same_file(Path(given), path):
            raise InputError(
                path, f"is also the input {role} ({given}); write the output to another file"
            )


def _same_file(a, b):
    if resolved(a) == resolved(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def _check_target(path):
    """`path` can become a file: its folder exists and it is not a folder itself."""
    if path.is_dir():
        raise FileAccessError(path, "cannot be written: it is a folder")
    folder = path.parent
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise FileAccessError(path, f"cannot be written: the folder {folder} {problem}")


def check_output_folder(path: PathLike) -> None:
    """Refuse an output folder that is a file or cannot be created or written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileAccessError(path, "output folder is a file")
    existing = path
    while not existing.exists():  # the folder is made later, below its first existing parent
        existing = existing.parent
    if not existing.is_dir():
        raise FileAccessError(path, f"output folder cannot be made: {existing} is a file")
    _check_writable(existing, path)


def _check_writable(folder, path):
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FileAccessError(
            path, f"cannot be written: no write permission in {folder} (or read-only)"
        )


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix); rename it to `path` on success.

    Raises
    ------
    FileAccessError
        The folder is missing or not writable, the disk is full, `path` is a folder, ...:
        one line naming `path` (not the temporary name).
    """
    path = Path(path)
    _check_target(path)
    _remove_stale_temporaries(path)
    temporary = None
    try:
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=suffix_of(path), dir=path.parent
        )
        os.close(descriptor)
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp makes 0600; a finished file gets the usual mode
        os.chmod(temporary, 0o666 & ~umask)
        yield Path(temporary)
        os.replace(temporary, path)
    except FileAccessError:
        raise
    except OSError as error:
        raise FileAccessError(
            path, f"cannot be written ({error.strerror or error})", error.errno
        ) from error
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)


def _remove_stale_temporaries(path):
    """Remove the temporaries of `path` left by killed processes (SIGKILL, power loss).

    A temporary is named ``.NAME.PID.RANDOM<suffix>``: only those whose process is gone are
    removed, so a live writer of the same file keeps its own.
    """
    from napari_mireg.files.output_folder import process_alive

    prefix = f".{path.name}."
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            if not entry.name.startswith(prefix) or not entry.name.endswith(suffix_of(path)):
                continue
            pid, _, rest = entry.name[len(prefix) :].partition(".")
            if pid.isdigit() and rest and not process_alive(int(pid)) and entry.is_file():
                entry.unlink(missing_ok=True)


def write_text(path: PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def _save_image(image, path):
    with atomic_path(path) as temporary:
        nib.save(image, temporary)


def _nifti(data, affine, path):
    """A NIfTI or MGH image for `path`'s suffix, with sform and qform set to `affine`."""
    if suffix_of(path) in (".mgz", ".mgh"):
        return nib.MGHImage(data, affine)
    image = nib.Nifti1Image(data, affine, dtype=data.dtype)  # 64-bit labels stay 64-bit
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    return image


def save_volume(
    path: PathLike, data: npt.ArrayLike, affine: Matrix, *, labels: bool = False
) -> None:
    """Write a volume (float32, or integer labels) atomically; the suffix picks the format.

    Parameters
    ----------
    path : str or Path
    data : ndarray, 2D or 3D
    affine : ndarray (4, 4)
        Voxel-to-world (RAS) matrix.
    labels : bool
        Integer labels: written as int32 when every value fits (what most tools read), else
        in their own 64-bit type (NIfTI only: MGH has no 64-bit integers, an error then).

    Raises
    ------
    InputError
        An unsupported suffix, or labels that the format cannot hold unchanged.
    FileAccessError
        The file cannot be written.
    """
    path = Path(path)
    if suffix_of(path) not in VOLUME_SUFFIXES:
        raise InputError(
            path, f"unsupported output format; use one of {', '.join(VOLUME_SUFFIXES)}"
        )
    array = np.asarray(data)
    array = _label_array(array, path) if labels else array.astype(np.float32)
    _save_image(_nifti(array, np.asarray(affine, dtype=np.float64), path), path)


INT32_MAX = np.iinfo(np.int32).max


def _label_array(array, path):
    """Labels in the narrowest type that holds them unchanged and the format can store."""
    array = label_values(array, str(path))
    if array.dtype.itemsize < 4 or array.dtype == np.int32:
        return array
    if not array.size or int(array.max()) <= INT32_MAX:
        return array.astype(np.int32)  # lossless: labels are never negative
    if suffix_of(path) in (".mgz", ".mgh"):
        raise InputError(
            path,
            f"label {int(array.max())} does not fit MGH's 32-bit integers; write .nii.gz",
        )
    return array  # int64, uint32 or uint64: NIfTI holds each as it is


def save_displacement(
    mapping: DiffeomorphicMap,
    path: PathLike,
    which: Literal["forward", "inverse"] = "forward",
) -> None:
    """Write a map's displacement field as an ITK/ANTs warp on the fixed grid.

    The file is NIfTI, shape (X, Y, Z, 1, 3), float32, intent 1007 (vector), vectors in mm
    in ITK's LPS frame. "forward" is the warp that, followed by the affine, brings the moving
    image into fixed space (``-t warp -t affine``); "inverse" is the warp that follows the
    inverse affine (``-t [affine,1] -t inverse_warp``).

    Parameters
    ----------
    mapping : DiffeomorphicMap
    path : str or Path
    which : {"forward", "inverse"}
    """
    if which not in ("forward", "inverse"):
        raise ValueError(f"which must be 'forward' or 'inverse', got {which!r}")
    ras = mapping.forward if which == "forward" else mapping.backward
    save_field(DisplacementField(ras, mapping.fixed_grid), path)


def save_field(displacement: DisplacementField, path: PathLike) -> None:
    """Write a DisplacementField as an ITK/ANTs warp (see :func:`save_displacement`)."""
    if displacement.grid.ndim != 3:
        raise ValueError(f"{path}: ITK/ANTs warps are 3D, this registration is 2D")
    lps = np.asarray(displacement.field, dtype=np.float32) * np.array([-1, -1, 1], np.float32)
    image = _nifti(lps[:, :, :, None, :], displacement.grid.affine, path)
    image.header.set_intent(NIFTI_INTENT_VECTOR)
    _save_image(image, path)


# ITK's 2D world is the first two LPS axes of a file's world (ITK reads a 2D NIfTI with the
# upper-left 2x2 block of its direction): both have the opposite sign of RAS.
PLANE_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def itk_affine_parameters(
    affine_map: AffineMap | Matrix, ndim: int | None = None
) -> tuple[str, np.ndarray]:
    """The ITK transform type and parameters (LPS) of a RAS world affine.

    Parameters
    ----------
    affine_map : AffineMap or ndarray (4, 4)
        Fixed-to-moving world matrix; for a 2D registration the embedded matrix of its
        Volumes (the in-plane map in the lower-right 3x3 block, axis 0 untouched).
    ndim : {2, 3}, optional
        The images' dimensionality: 2 gives ITK's 2D transform of the slice's two world
        axes (``AffineTransform_double_2_2``, 6 parameters), which ANTs applies to 2D images.
        Default: the AffineMap's own ``ndim`` (3 for a matrix).

    Returns
    -------
    kind : str
        ``AffineTransform_double_3_3`` or ``AffineTransform_double_2_2``.
    parameters : ndarray
        The row-major matrix, then the translation (12 or 6 values), with fixed parameters
        (the centre) 0.

    Raises
    ------
    ValueError
        `ndim` is 2 and the matrix moves points out of the plane.
    """
    matrix = np.asarray(getattr(affine_map, "matrix", affine_map), dtype=np.float64)
    if ndim is None:  # an AffineMap's own (a numpy matrix's ndim is its array's: 2)
        ndim = affine_map.ndim if isinstance(affine_map, AffineMap) else 3
    if ndim == 2:
        if not np.allclose(matrix[0], [1, 0, 0, 0]) or not np.allclose(matrix[1:, 0], 0):
            raise ValueError("a 2D affine must leave the axis out of the plane alone")
        plane = PLANE_RAS_TO_LPS @ matrix[1:, 1:] @ PLANE_RAS_TO_LPS
        return "AffineTransform_double_2_2", np.concatenate([plane[:2, :2].ravel(), plane[:2, 2]])
    if ndim != 3:
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    lps = RAS_TO_LPS @ matrix @ RAS_TO_LPS
    return "AffineTransform_double_3_3", np.concatenate([lps[:3, :3].ravel(), lps[:3, 3]])


def save_affine(affine_map: AffineMap | Matrix, path: PathLike, ndim: int | None = None) -> None:
    """Write an AffineMap as an ITK affine (LPS), atomically.

    ``.txt`` or ``.tfm`` give ITK's text format, ``.mat`` the MATLAB v4 binary that
    ``antsRegistration`` writes (``*GenericAffine.mat``; ANTsPy inverts only .mat files).
    ANTs (``antsApplyTransforms -t affine.txt``), ANTsPy and SimpleITK read both. A 2D
    registration (`ndim` 2) writes ITK's 2D transform (``AffineTransform_double_2_2``) of
    the slice's world axes, as ANTs registers 2D images (see :func:`itk_affine_parameters`).
    """
    kind, parameters = itk_affine_parameters(affine_map, ndim)
    ndim = 2 if kind.endswith("_2_2") else 3
    if suffix_of(path) == ".mat":
        with atomic_path(path) as temporary:
            scipy_io.savemat(
                temporary,
                {kind: parameters[:, None], "fixed": np.zeros((ndim, 1))},
                format="4",
            )
        return
    text = (
        f"#Insight Transform File V1.0\n#Transform 0\nTransform: {kind}\n"
        f"Parameters: {' '.join(repr(float(p)) for p in parameters)}\n"
        f"FixedParameters: {' '.join(['0'] * ndim)}\n"
    )
    write_text(path, text)


AFFINE_KINDS = ("AffineTransform", "MatrixOffsetTransformBase")


def _transform_ndim(kind, path):
    """2 or 3 from an ITK affine's type name (``AffineTransform_double_3_3``)."""
    for ndim in (3, 2):
        if kind.startswith(AFFINE_KINDS) and kind.endswith(f"_{ndim}_{ndim}"):
            return ndim
    raise InputError(
        path, f"unsupported transform type {kind or '(none)'}; expected a 2D or 3D AffineTransform"
    )


def _affine_from_itk(parameters, centre, path):
    """RAS world matrix of ITK's ``y = A (x - c) + c + t`` (LPS) parameters.

    A 2D transform gives the embedded 4x4 matrix of 2D Volumes (axis 0 untouched).
    """
    parameters = np.asarray(parameters, dtype=np.float64).ravel()
    centre = np.asarray(centre, dtype=np.float64).ravel()
    ndim = centre.size
    if ndim not in (2, 3) or parameters.size != ndim * (ndim + 1):
        raise InputError(
            path,
            f"affine transform needs {ndim * (ndim + 1)} parameters and {ndim} fixed parameters"
            f" (found {parameters.size} and {centre.size})",
        )
    linear = parameters[: ndim * ndim].reshape(ndim, ndim)
    matrix = np.eye(ndim + 1)
    matrix[:ndim, :ndim] = linear
    matrix[:ndim, ndim] = parameters[ndim * ndim :] + centre - linear @ centre
    if ndim == 2:
        plane = PLANE_RAS_TO_LPS @ matrix @ PLANE_RAS_TO_LPS
        embedded = np.eye(4)
        embedded[1:, 1:] = plane
        return embedded
    return RAS_TO_LPS @ matrix @ RAS_TO_LPS


def _read_itk_text(path):
    """The RAS matrix and dimensionality of an ITK text affine."""
    fields = {}
    lines = Path(path).read_text().splitlines()
    # A composite file (ANTs' --write-composite-transform) lists its transforms one after
    # the other; applying only the first would be silently wrong.
    lines = [line for line in lines if "CompositeTransform" not in line]
    count = sum(line.partition(":")[0].strip() == "Transform" for line in lines)
    if count > 1:
        raise InputError(
            path,
            f"holds {count} transforms (a composite transform); mireg applies one affine per "
            "file: give each transform as its own file",
        )
    for line in lines:
        key, _, value = line.partition(":")
        if value and not key.startswith("#"):
            fields.setdefault(key.strip(), value.strip())
    ndim = _transform_ndim(fields.get("Transform", ""), path)
    parameters = [float(p) for p in fields.get("Parameters", "").split()]
    centre = [float(c) for c in fields.get("FixedParameters", " ".join(["0"] * ndim)).split()]
    if len(centre) != ndim:
        raise InputError(path, f"a {ndim}D affine needs {ndim} fixed parameters")
    return _affine_from_itk(parameters, centre, path), ndim


def _read_ants_mat(path):
    """The RAS matrix and dimensionality of an ANTs/ITK MATLAB affine."""
    try:
        contents = scipy_io.loadmat(path)
    except (ValueError, TypeError, IndexError, KeyError, scipy_io.matlab.MatReadError) as error:
        # scipy reports a text or damaged file in many ways (IndexError for a text file)
        raise InputError(path, "cannot be read as a MATLAB (.mat) affine transform") from error
    keys = [k for k in contents if k.startswith(AFFINE_KINDS)]
    if not keys or "fixed" not in contents:
        raise InputError(path, "not a 2D or 3D ANTs/ITK affine transform (.mat)")
    ndim = _transform_ndim(keys[0], path)
    parameters, centre = np.ravel(contents[keys[0]]), np.ravel(contents["fixed"])
    if centre.size != ndim:
        raise InputError(path, f"a {ndim}D affine needs {ndim} fixed parameters")
    return _affine_from_itk(parameters, centre, path), ndim


def check_transforms_fit(transforms: dict[str, object], image: Volume) -> None:
    """Refuse an affine read from a file whose dimensionality is not the image's.

    A 2D ITK affine acts on a slice's two world axes and a 3D one on the three: either on
    the other kind of image would move the wrong axes.

    Parameters
    ----------
    transforms : dict
        {name as given: AffineMap or DisplacementField from :func:`load_transform`}.
    image : Volume
        The image they are applied to.

    Raises
    ------
    InputError
        Naming the transform, its dimensionality and the image's.
    """
    for name, transform in transforms.items():
        ndim = getattr(transform, "ndim", None)
        if isinstance(transform, AffineMap) and ndim != image.ndim:
            raise InputError(
                name,
                f"is a {ndim}D affine (ITK *_{ndim}_{ndim}) but the image is {image.ndim}D: "
                f"use the transforms of a {image.ndim}D registration",
            )


def _checked_matrix(matrix, path):
    """Refuse an affine that would map every point to NaN, or fold space flat."""
    try:
        return affine_matrix(matrix, "matrix")
    except ValueError as error:
        raise InputError(path, str(error).removeprefix("matrix: ")) from error


def _read_field(path):
    image, data = _open_image(path)
    # Only the ITK/ANTs layout says what its numbers are: a plain (X, Y, Z, 3) image could
    # hold three volumes, or vectors in voxels, and would silently scramble the image.
    intent = int(image.header.get("intent_code", 0)) if hasattr(image.header, "get") else 0
    if data.ndim != 5 or data.shape[3:] != (1, 3) or intent != NIFTI_INTENT_VECTOR:
        raise InputError(
            path,
            f"is not an ITK/ANTs displacement field: found shape {data.shape} and NIfTI "
            f"intent {intent}; a 3D warp is a 5D (X, Y, Z, 1, 3) vector image with intent "
            f"{NIFTI_INTENT_VECTOR} (vector)",
        )
    data = data[:, :, :, 0, :]
    ras = np.ascontiguousarray(data * np.float32([-1, -1, 1]), dtype=np.float32)
    if not np.all(np.isfinite(ras)):
        raise InputError(path, "displacement field has NaN or infinite values")
    try:
        grid = as_volume(np.zeros(data.shape[:3], np.float32), image.affine, str(path))
    except ValueError as error:
        raise InputError(path, str(error).removeprefix(f"{path} ")) from error
    # A displacement many times the grid's own extent sends every point off the image.
    extent = float(np.linalg.norm(grid.spacing * np.array(grid.shape)))
    largest = float(np.sqrt((ras.astype(np.float64) ** 2).sum(axis=-1)).max())
    if largest > FIELD_REACH * extent:
        raise InputError(
            path,
            f"displacements reach {largest:.3g} mm, {largest / extent:.0f} times the grid's "
            f"size ({extent:.0f} mm); is this a displacement field in mm?",
        )
    return DisplacementField(ras, grid)


def load_transform(path: PathLike, *, invert: bool = False) -> AffineMap | DisplacementField:
    """Read a transform written by this project, ANTs or ITK.

    Parameters
    ----------
    path : str or Path
        An ITK text affine (.txt, .tfm), an ANTs/ITK MATLAB affine (.mat), or a displacement
        field (.nii, .nii.gz) in the ITK/ANTs convention.
    invert : bool
        Return the inverse (affines only, as ``antsApplyTransforms -t [file,1]``).

    Returns
    -------
    AffineMap or DisplacementField
        In RAS world coordinates, mapping reference points towards the image to sample. A
        2D ITK affine (``*_2_2``) gives an AffineMap of ``ndim`` 2 for 2D images (the
        embedded matrix of :func:`itk_affine_parameters`).
    """
    path = Path(path)
    _check_file(path)
    suffix = suffix_of(path)
    if suffix in (".nii", ".nii.gz"):
        if invert:
            raise InputError(
                path,
                "a displacement field cannot be inverted on the fly; use the inverse warp file",
            )
        return _read_field(path)
    try:
        if suffix in (".txt", ".tfm"):
            matrix, ndim = _read_itk_text(path)
        elif suffix == ".mat":
            matrix, ndim = _read_ants_mat(path)
        else:
            raise InputError(path, f"unsupported transform format {suffix or '(no suffix)'}")
    except (UnicodeDecodeError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(path, f"cannot be read as a transform ({error})") from error
    except OSError as error:
        raise FileAccessError(path, f"cannot be read ({error.strerror or error})") from error
    matrix = _checked_matrix(matrix, path)
    return AffineMap(np.linalg.inv(matrix) if invert else matrix, ndim)
