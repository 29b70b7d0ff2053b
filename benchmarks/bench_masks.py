"""Brain masks from label maps of one shape at 1, 0.2 and 0.1 mm: time and peak memory.

The brain-mask dilation (4 mm) is a distance transform in mm on the brain's box, so its cost
depends on the number of voxels, not on their size: the three voxel sizes should take about
the same time and memory (the acceptance of issue 26: within 1.5x of each other). The test
suite checks the memory (tests/test_masks.py, tracemalloc); the time is measured here only.

Data: an ellipsoidal "brain" filling a 92 x 90 x 96 label map, as a SynthSeg map's does.
Prints, per voxel size, the median wall time over the repeats and the tracemalloc peak, and
the largest/smallest ratio of each.

Usage: python benchmarks/bench_masks.py [--repeats 5]
"""

import argparse
import statistics
import time
import tracemalloc

import numpy as np

from napari_mireg.engine.masks import brain_mask_from_labels

SHAPE = (92, 90, 96)
VOXEL_MM = (1.0, 0.2, 0.1)


def brain_labels(shape=SHAPE):
    """An ellipsoid of label 3 reaching 84% of the grid along each axis."""
    axes = np.ogrid[tuple(slice(0, n) for n in shape)]
    radii = sum(((a - n / 2) / (0.42 * n)) ** 2 for a, n in zip(axes, shape, strict=True))
    return (radii <= 1).astype(np.int16) * 3


def measure(labels, voxel_mm, repeats):
    """(median seconds, peak bytes) of one brain mask on `voxel_mm` voxels."""
    affine = np.diag([voxel_mm] * 3 + [1.0])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        brain_mask_from_labels(labels, affine)
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    try:
        brain_mask_from_labels(labels, affine)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return statistics.median(times), peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    labels = brain_labels()
    results = {mm: measure(labels, mm, args.repeats) for mm in VOXEL_MM}
    print(f"brain masks of a {' x '.join(map(str, SHAPE))} label map (dilation 4 mm)")
    for mm, (seconds, peak) in results.items():
        print(f"  {mm:4.1f} mm voxels: {seconds * 1000:7.1f} ms, peak {peak / 1e6:6.1f} MB")
    times = [seconds for seconds, _ in results.values()]
    peaks = [peak for _, peak in results.values()]
    print(
        f"  ratio largest/smallest: time {max(times) / min(times):.2f}, "
        f"memory {max(peaks) / min(peaks):.2f}"
    )


if __name__ == "__main__":
    main()
