"""Names for the types of the public API: what may be passed as an image, a matrix or a path.

Annotations only: nothing here is checked at run time (the functions validate their inputs
themselves), and nothing imports nibabel, which the engine does not need.
"""

import os
from typing import Literal, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt


class SpatialImage(Protocol):
    """What the engine reads from a nibabel image (Nifti1Image, MGHImage): voxels and affine."""

    @property
    def dataobj(self) -> npt.ArrayLike:
        """The voxel array (possibly a lazy proxy)."""
        ...

    @property
    def affine(self) -> np.ndarray:
        """The voxel-to-world (RAS, mm) matrix."""
        ...


# An image argument: an array (with its affine given separately) or a nibabel image.
Image: TypeAlias = npt.ArrayLike | SpatialImage
# A homogeneous (ndim + 1)-square matrix: a voxel-to-world matrix or a world transform.
Matrix: TypeAlias = npt.ArrayLike
PathLike: TypeAlias = str | os.PathLike[str]
Interpolation: TypeAlias = Literal["linear", "nearest"]
