"""Dense MI gradient: napari-mireg against ITK's Mattes v4, same data, same run.

Data: the 1 mm MNI ICBM152 2009a T1 template (nilearn; a skull-stripped brain, about 78 %
of the grid background at zero) against a smoothly deformed, T2-like remapped copy. For 1
and 2 threads, the shortest wall time of `--repeats` calls of the full two-pass dense
gradient (ranges, histogram, MI, per-voxel update) is printed in Mvox/s next to the shortest
of ITK's ``GetDerivative`` after ``Initialize``, with the ratio. Both are timed in the same
run, one after the other; the load average is printed before and after (on a busy machine
the shortest time is the least disturbed one).

Usage: python benchmarks/bench_metric.py [--zoom 1] [--repeats 7] [--itk-repeats 3]
"""

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # testdata, peers

import numpy as np
from peers import cosine_similarity, itk_mattes_derivative
from testdata import deformed_pair

from napari_mireg import MutualInformation


def shortest_seconds(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def load_average():
    """The 1-minute load average, or nan where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoom", type=int, default=1, help="1 for 1 mm, 2 for 2 mm")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--itk-repeats", type=int, default=3)
    parser.add_argument("--bins", type=int, default=32)
    args = parser.parse_args()

    fixed, moving, _, _ = deformed_pair(zoom=args.zoom, peak=6.0)
    megavoxels = fixed.size / 1e6
    background = float(np.mean(fixed == 0))
    print(
        f"MNI T1 brain vs deformed T2-like copy: shape {fixed.shape}, {megavoxels:.2f} Mvox "
        f"({background:.0%} background), {args.bins} bins; load average {load_average():.2f}"
    )
    print(
        f"{'threads':>7} {'mireg s':>9} {'mireg Mvox/s':>13} {'ITK s':>8} "
        f"{'ITK Mvox/s':>11} {'speed-up':>9} {'cosine':>9}"
    )
    for threads in (1, 2):
        metric = MutualInformation(args.bins, threads=threads)
        out = np.empty(fixed.shape + (3,), dtype=np.float32)
        _, ours = metric.dense_gradient(fixed, moving, out=out)
        mireg = shortest_seconds(
            partial(metric.dense_gradient, fixed, moving, out=out), args.repeats
        )
        itk_times = []
        for _ in range(args.itk_repeats):
            _, reference, seconds = itk_mattes_derivative(
                fixed, moving, bins=args.bins, threads=threads
            )
            itk_times.append(seconds)
        itk = min(itk_times)
        inner = (slice(1, -1),) * 3
        cosine = cosine_similarity(ours[inner], reference[inner])
        print(
            f"{threads:>7} {mireg:>9.3f} {megavoxels / mireg:>13.1f} {itk:>8.2f} "
            f"{megavoxels / itk:>11.2f} {itk / mireg:>8.1f}x {cosine:>9.6f}"
        )
    print(f"load average after: {load_average():.2f}")


if __name__ == "__main__":
    main()
