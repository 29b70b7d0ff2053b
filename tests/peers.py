"""Drivers of peer implementations (ITK, ANTs, DIPY), for cross-checks and benchmarks.

Not part of the package: the tests import it as ``peers``, the benchmarks after putting
``tests/`` on ``sys.path``.

Each peer is imported only inside the function that uses it: none is a dependency of the
engine. Arrays use this project's convention (array axes, C order); ITK's index order is
the reverse, which these functions take care of.
"""

import time

import numpy as np


def itk_mattes_derivative(fixed, moving, spacing=None, bins=32, threads=1):
    """ITK's MattesMutualInformationImageToImageMetricv4 on a zero displacement field.

    The moving transform is a zero ``DisplacementFieldTransform``, so the metric's
    derivative is the dense per-voxel field. Gradient filters are off (ITK then uses
    central differences of the moving image, like this project).

    Parameters
    ----------
    fixed, moving : ndarray
        2D or 3D images of one shape.
    spacing : sequence of float, optional
        Voxel size along each array axis.
    bins : int
    threads : int
        ITK work units and global default threads.

    Returns
    -------
    value : float
        ITK's metric value (that is, -MI).
    derivative : ndarray of float64, shape ``fixed.shape + (ndim,)``
        Components in array-axis order.
    seconds : float
        Wall time of ``GetDerivative`` alone (after ``Initialize``).
    """
    import itk

    ndim = fixed.ndim
    spacing = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=float)
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(threads)
    image_type = itk.Image[itk.F, ndim]

    def to_itk(array):
        image = itk.image_from_array(np.ascontiguousarray(array, dtype=np.float32))
        image.SetSpacing([float(s) for s in spacing[::-1]])
        return image

    fixed_image, moving_image = to_itk(fixed), to_itk(moving)
    field = itk.Image[itk.Vector[itk.D, ndim], ndim].New()
    field.CopyInformation(fixed_image)
    field.SetRegions(fixed_image.GetLargestPossibleRegion())
    field.Allocate()
    zero = itk.Vector[itk.D, ndim]()
    zero.Fill(0.0)
    field.FillBuffer(zero)
    transform = itk.DisplacementFieldTransform[itk.D, ndim].New()
    transform.SetDisplacementField(field)

    metric = itk.MattesMutualInformationImageToImageMetricv4[image_type, image_type].New()
    metric.SetFixedImage(fixed_image)
    metric.SetMovingImage(moving_image)
    metric.SetMovingTransform(transform)
    metric.SetNumberOfHistogramBins(bins)
    metric.SetUseMovingImageGradientFilter(False)
    metric.SetUseFixedImageGradientFilter(False)
    metric.SetMaximumNumberOfWorkUnits(threads)
    metric.Initialize()
    value = metric.GetValue()
    derivative = itk.Array[itk.D](transform.GetNumberOfParameters())
    start = time.perf_counter()
    metric.GetDerivative(derivative)
    seconds = time.perf_counter() - start
    flat = np.asarray(itk.array_from_vnl_vector(derivative), dtype=np.float64)
    return value, flat.reshape(fixed.shape + (ndim,))[..., ::-1], seconds


def cosine_similarity(a, b):
    """Cosine of the angle between two arrays seen as vectors."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
