"""Transforms a user carries and applies: AffineMap and DiffeomorphicMap.

Conventions (those of ITK and ANTs): a transform maps points of the fixed space to points of
the moving space, and resampling the moving image "into fixed space" samples it at those
points. World coordinates are in mm. A DiffeomorphicMap holds world displacement fields on
the fixed grid; the moving point of fixed point p is ``prealign(p + forward(p))``.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from napari_mireg._typing import Image, Interpolation, Matrix, SpatialImage
from napari_mireg.engine import _validate, fields


@dataclass(frozen=True)
class Volume:
    """A 3D array with its voxel-to-world matrix (a 2D image is stored as (1, n1, n2)).

    Attributes
    ----------
    data : ndarray, 3D
    affine : ndarray (4, 4)
        Voxel-to-world matrix of `data` (for 2D, the in-plane matrix in the lower-right
        block: axis 0 is the singleton axis).
    ndim : int
        2 or 3: the dimensionality the user gave.
    source_affine : ndarray (4, 4) or None
        For a 2D image read from a file: the file's own 4x4 matrix (with the slice's
        position out of the plane), so that outputs on this grid keep it.
    """

    data: np.ndarray
    affine: np.ndarray
    ndim: int
    source_affine: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def file_affine(self) -> np.ndarray:
        """The 4x4 matrix to write with an array of the user's dimensionality.

        3D: `affine`. 2D: the file's matrix when the grid came from a file, else the
        in-plane matrix with world axes x and y.
        """
        if self.ndim == 3:
            return self.affine
        if self.source_affine is not None:
            return self.source_affine
        matrix = np.eye(4)
        matrix[:2, :2] = self.affine[1:3, 1:3]
        matrix[:2, 3] = self.affine[1:3, 3]
        return matrix

    @property
    def shape(self) -> tuple[int, ...]:
        """The data's shape."""
        return self.data.shape

    @property
    def spacing(self) -> np.ndarray:
        """Voxel sizes (mm) along the three array axes."""
        return fields.voxel_sizes(self.affine)

    def user_array(self, array: np.ndarray) -> np.ndarray:
        """Give `array` (3D grid + optional channels) the dimensionality the user gave."""
        return array[0] if self.ndim == 2 else array


def as_volume(
    image: "Image | Volume",
    affine: Matrix | None = None,
    name: str = "image",
    dtype: npt.DTypeLike = np.float32,
    *,
    from_file: bool = False,
) -> "Volume":
    """A Volume from a numpy array (identity affine by default) or a nibabel image.

    A Volume is returned as it is. For a 2D array, `affine` is 3x3, or 4x4 with the
    in-plane matrix in its lower-right block (``Volume.affine`` of a 2D Volume); a 2D
    nibabel image, or `from_file`, means a file's 4x4 matrix instead, whose columns 0 and 1
    are the array's axes (see :func:`_in_plane`).

    Raises
    ------
    ValueError
        For anything but a numeric 2D/3D image (4D with one volume is accepted), non-finite
        values, or an affine that is not an invertible 4x4 (3x3 for 2D) matrix.
    """
    if isinstance(image, Volume):
        return image
    if hasattr(image, "affine") and hasattr(image, "dataobj"):
        data = np.asanyarray(image.dataobj)
        from_file = from_file or affine is None
        affine = image.affine if affine is None else affine
    else:
        data = np.asarray(image)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {data.dtype}")
    if data.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2D or 3D image, got shape {data.shape}")
    if min(data.shape) < 1:
        raise ValueError(f"{name} is empty (shape {data.shape})")
    ndim = data.ndim
    size = ndim + 1
    affine = np.eye(size) if affine is None else np.asarray(affine, dtype=np.float64)
    source_affine = None
    if ndim == 2 and affine.shape == (4, 4) and np.all(np.isfinite(affine)):
        if from_file:
            source_affine = affine
            affine = _in_plane(affine)
        else:
            affine = np.delete(np.delete(affine, 0, axis=0), 0, axis=1)  # an embedded matrix
    if affine.shape != (size, size) or not np.all(np.isfinite(affine)):
        raise ValueError(
            f"{name} affine must be a finite {size}x{size} matrix, got shape {affine.shape}"
        )
    if abs(np.linalg.det(affine[:ndim, :ndim])) < 1e-12:
        raise ValueError(f"{name} affine is singular")
    _validate.intensities(data, name)  # before a cast to float32 makes 1e39 infinite
    data = np.ascontiguousarray(data, dtype=dtype)
    if ndim == 2:
        data = data[None]
        affine = fields.embed_matrix(affine, 4)
    return Volume(data, affine, ndim, source_affine)


def _in_plane(affine):
    """The 3x3 in-plane matrix of a 2D image stored with a file's 4x4 matrix.

    A 2D array's axes are the matrix's columns 0 and 1 (column 2 is the missing slice
    axis); the world axis they leave out is the row they touch least (z for an axial
    slice), and the other two rows are kept, in order.
    """
    reach = np.abs(affine[:3, :2]).sum(axis=1)
    rows = sorted(np.argsort(reach, kind="stable")[1:])
    return affine[np.ix_([*rows, 3], [0, 1, 3])]


@dataclass
class AffineMap:
    """A world-to-world affine transform from fixed points to moving points.

    Attributes
    ----------
    matrix : ndarray (4, 4)
        ``y = matrix @ [x; 1]`` maps a fixed world point x to a moving world point y.
    ndim : int
        3, or 2 for an affine read from a 2D ITK transform: it acts in the plane of 2D
        images (`matrix` is then embedded as their Volumes' matrices are).
    """

    matrix: np.ndarray
    ndim: int = 3

    def transform(
        self,
        moving: "Image | Volume",
        fixed_grid: Volume,
        interpolation: Interpolation = "linear",
        moving_affine: Matrix | None = None,
    ) -> np.ndarray:
        """Resample `moving` (array with `moving_affine`, or nibabel image) on `fixed_grid`."""
        volume = as_volume(moving, moving_affine, "moving", dtype=_dtype_for(interpolation))
        result = fields.resample(
            volume.data,
            volume.affine,
            fixed_grid.shape,
            fixed_grid.affine,
            prealign=self.matrix,
            interpolation=interpolation,
        )
        return fixed_grid.user_array(result)

    def inverse(self) -> "AffineMap":
        """The AffineMap from moving points to fixed points."""
        return AffineMap(np.linalg.inv(self.matrix), self.ndim)


@dataclass
class DiffeomorphicMap:
    """A diffeomorphic fixed-to-moving map: displacement fields on the fixed grid, then affine.

    Attributes
    ----------
    fixed_grid, moving_grid : Volume
        Grids (shape and voxel-to-world matrix); their data is not used.
    prealign : ndarray (4, 4)
        World affine applied after the displacement (fixed space -> moving space).
    forward : ndarray (n0, n1, n2, 3) float32
        World displacement (mm) on the fixed grid: p -> p + forward(p).
    backward : ndarray (n0, n1, n2, 3) float32
        Its inverse on the same grid: q -> q + backward(q).
    """

    fixed_grid: Volume
    moving_grid: Volume
    prealign: np.ndarray
    forward: np.ndarray
    backward: np.ndarray

    def transforms(self) -> list["DisplacementField | AffineMap"]:
        """The map as a transform chain in ANTs order: the forward field, then the affine."""
        return [DisplacementField(self.forward, self.fixed_grid), AffineMap(self.prealign)]

    def inverse_transforms(self) -> list["AffineMap | DisplacementField"]:
        """The inverse map in ANTs order: the inverse affine, then the backward field."""
        return [
            AffineMap(np.linalg.inv(self.prealign)),
            DisplacementField(self.backward, self.fixed_grid),
        ]

    def transform(
        self,
        moving: "Image | Volume",
        interpolation: Interpolation = "linear",
        moving_affine: Matrix | None = None,
    ) -> np.ndarray:
        """Resample a moving-space image into fixed space.

        Parameters
        ----------
        moving : ndarray or nibabel image
            An image of the moving space, on the moving grid or any other grid (give its
            affine, or a nibabel image); labels with ``interpolation="nearest"``.
        interpolation : {"linear", "nearest"}
        moving_affine : ndarray, optional
            Voxel-to-world matrix of `moving` (default: the moving grid's).

        Returns
        -------
        ndarray on the fixed grid (float32, or the input dtype for "nearest")
        """
        if moving_affine is None and not hasattr(moving, "affine"):
            moving_affine = self.moving_grid.affine
        return apply_transforms(
            moving, self.fixed_grid, self.transforms(), interpolation, image_affine=moving_affine
        )

    def transform_inverse(
        self,
        fixed: Image,
        interpolation: Interpolation = "linear",
        fixed_affine: Matrix | None = None,
    ) -> np.ndarray:
        """Resample a fixed-space image into moving space (the moving grid)."""
        return self.inverse().transform(
            fixed, interpolation=interpolation, moving_affine=fixed_affine
        )

    def inverse(self) -> "DiffeomorphicMap":
        """The moving-to-fixed DiffeomorphicMap, its fields resampled on the moving grid.

        The inverse maps a moving point q to ``P^-1 q + backward(P^-1 q)``; written in this
        class's form it is ``P^-1 (q + e(q))`` with ``e(q) = P_lin backward(P^-1 q)``.
        """
        inverse_prealign = np.linalg.inv(self.prealign)
        linear = self.prealign[:3, :3]

        def on_moving_grid(field):
            sampled = fields.resample(
                field,
                self.fixed_grid.affine,
                self.moving_grid.shape,
                self.moving_grid.affine,
                prealign=inverse_prealign,
                clamp=True,
            )
            return np.ascontiguousarray(sampled @ linear.T.astype(np.float32))

        return DiffeomorphicMap(
            self.moving_grid,
            self.fixed_grid,
            inverse_prealign,
            on_moving_grid(self.backward),
            on_moving_grid(self.forward),
        )

    def displacement(self) -> npt.NDArray[np.float32]:
        """Full world displacement of each fixed voxel, prealignment included (mm).

        ``prealign(p + forward(p)) - p`` on the fixed grid, shape ``grid + (3,)``.
        """
        grid = self.fixed_grid
        index = np.indices(grid.shape, dtype=np.float64).reshape(3, -1).T
        points = index @ grid.affine[:3, :3].T + grid.affine[:3, 3]
        moved = points + self.forward.reshape(-1, 3)
        mapped = moved @ self.prealign[:3, :3].T + self.prealign[:3, 3]
        return (mapped - points).reshape(grid.shape + (3,)).astype(np.float32)

    def jacobian_determinant(self) -> np.ndarray:
        """Det of the Jacobian of p -> p + forward(p) on the fixed grid (the affine aside)."""
        return self.fixed_grid.user_array(
            fields.jacobian_determinant(self.forward, self.fixed_grid.affine)
        )

    def inversion_error(self) -> tuple[float, float]:
        """Mean and max |phi(phi^-1(x)) - x| over the fixed grid, in voxels."""
        residual = fields.compose(self.backward, self.forward, self.fixed_grid.affine)
        lengths = np.square(residual, out=residual).sum(axis=-1)
        del residual  # in place from here: these are whole-grid arrays
        np.sqrt(lengths, out=lengths)
        voxel = self.fixed_grid.spacing.min()
        return float(lengths.mean(dtype=np.float64) / voxel), float(lengths.max() / voxel)


@dataclass
class DisplacementField:
    """A dense transform ``p -> p + field(p)`` given on a grid (zero displacement outside it).

    Attributes
    ----------
    field : ndarray (n0, n1, n2, 3) float32
        World displacement (mm, RAS world of the grid's affine) at each grid voxel.
    grid : Volume
        The grid (shape and voxel-to-world matrix); its data is not used.
    """

    field: np.ndarray
    grid: Volume


def chain_displacement(
    transforms: Iterable["AffineMap | DisplacementField"], reference: Volume
) -> tuple[np.ndarray | None, npt.NDArray[np.float64]]:
    """Reduce a chain of transforms to ``p -> M (p + d(p))`` on a reference grid.

    Parameters
    ----------
    transforms : sequence of AffineMap or DisplacementField
        Point transforms from reference space towards the image to sample, the first one
        applied first to each point: the order of ``antsApplyTransforms -t ... -t ...``.
    reference : Volume
        The output grid.

    Returns
    -------
    displacement : ndarray ``reference.shape + (3,)`` float32, or None when no field is involved
    matrix : ndarray (4, 4)
    """
    displacement = None
    matrix = np.eye(4)
    for number, transform in enumerate(transforms):
        if isinstance(transform, AffineMap):
            step = np.asarray(transform.matrix, dtype=np.float64)
            if step.shape != (4, 4) or not np.all(np.isfinite(step)):
                # a NaN would spread to every output voxel without a word
                raise ValueError(
                    f"transform {number}: affine matrix must be a finite 4x4 matrix "
                    f"(shape {step.shape}, NaN or inf: {not np.all(np.isfinite(step))})"
                )
            matrix = step @ matrix
        elif isinstance(transform, DisplacementField):
            if (
                displacement is None
                and same_grid(transform.grid, reference)
                and np.array_equal(matrix, np.eye(4))
            ):
                displacement = np.asarray(transform.field, dtype=np.float32)
                continue
            # y = M (p + d) moves to y + F(y) = M (p + d + M_lin^-1 F(y)).
            sampled = fields.resample(
                transform.field,
                transform.grid.affine,
                reference.shape,
                reference.affine,
                field=displacement,
                prealign=matrix,
            )
            step = sampled @ np.linalg.inv(matrix[:3, :3]).T.astype(np.float32)
            displacement = step if displacement is None else displacement + step
        else:
            raise TypeError(f"expected AffineMap or DisplacementField, got {type(transform)}")
    return displacement, matrix


def apply_transforms(
    image: "Image | Volume",
    reference: "Volume | SpatialImage",
    transforms: Sequence["AffineMap | DisplacementField"],
    interpolation: Interpolation = "linear",
    image_affine: Matrix | None = None,
) -> np.ndarray:
    """Resample `image` on the `reference` grid through a chain of transforms.

    Parameters
    ----------
    image : ndarray, Volume or nibabel image
    reference : Volume or nibabel image
        The output grid.
    transforms : sequence of AffineMap or DisplacementField
        As for :func:`chain_displacement` (ANTs order).
    interpolation : {"linear", "nearest"}
    image_affine : ndarray, optional
        Voxel-to-world matrix of an array `image`.

    Returns
    -------
    ndarray on the reference grid
    """
    reference = as_volume(reference, name="reference", dtype=None)
    volume = as_volume(image, image_affine, "image", dtype=_dtype_for(interpolation))
    displacement, matrix = chain_displacement(transforms, reference)
    result = fields.resample(
        volume.data,
        volume.affine,
        reference.shape,
        reference.affine,
        field=displacement,
        prealign=matrix,
        interpolation=interpolation,
    )
    return reference.user_array(result)


def same_grid(first: Volume, second: Volume, tolerance: float = 1e-3) -> bool:
    """True when two Volumes share shape and voxel-to-world matrix (to `tolerance` mm)."""
    return first.shape == second.shape and np.allclose(first.affine, second.affine, atol=tolerance)


def _dtype_for(interpolation):
    """Linear resampling works on float32; nearest keeps the input dtype (labels)."""
    return np.float32 if interpolation == "linear" else None
