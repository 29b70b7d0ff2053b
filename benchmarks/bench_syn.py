"""MI-SyN: napari-mireg against ANTsPy (SyNOnly, Mattes MI) and DIPY, same data, same run.

Pairs: the MNI T1 template against a known smooth deformation (6 mm peak) of itself with
T2-like contrast (at 2 mm and, with --zoom 1, 1 mm), and a same-contrast pair for DIPY's
SyN with CCMetric. All engines run the same level iterations without prealignment and on
the same thread count. Printed: wall time, peak memory of the process for each engine
(run in a fresh subprocess), GM/WM Dice after warping the moving tissue labels, mean
displacement error inside the brain, and ratios against ANTs.

Usage: python benchmarks/bench_syn.py [--zoom 2] [--iterations 40 20 10] [--threads 2] [--extra]
(--extra adds two other T2-like pairs, other deformations: 9 mm and 4 mm peaks.)
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # testdata, peers

import numpy as np

ENGINES = ("mireg", "ants", "dipy-cc")


def dice(a, b, label):
    a, b = a == label, b == label
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def run_engine(engine, zoom, iterations, threads, contrast, peak=6.0, seed=0):
    """Register the pair with one engine; returns a dict of figures (in this process)."""
    from testdata import deformed_pair, tissue_labels, warp_linear

    from napari_mireg.engine import fields

    fixed, moving, affine, displacement = deformed_pair(
        zoom=zoom, peak=peak, seed=seed, contrast=contrast
    )
    labels = tissue_labels(zoom)
    moving_labels = warp_linear(labels, displacement, order=0).astype(np.uint8)
    start = time.perf_counter()
    if engine == "mireg":
        from napari_mireg import register

        result = register(
            fixed,
            moving,
            fixed_affine=affine,
            moving_affine=affine,
            prealign="none",
            level_iters=tuple(iterations),
            threads=threads,
        )
        seconds = time.perf_counter() - start
        warped_labels = result.mapping.transform(moving_labels, interpolation="nearest")
        estimated = result.mapping.displacement()
    elif engine == "ants":
        import ants

        def to_ants(a):
            return ants.from_numpy(a.astype(np.float32), spacing=(float(zoom),) * 3)

        out = ants.registration(
            to_ants(fixed),
            to_ants(moving),
            type_of_transform="SyNOnly",
            syn_metric="mattes",
            syn_sampling=32,
            reg_iterations=tuple(iterations),
        )
        seconds = time.perf_counter() - start
        warped_labels = ants.apply_transforms(
            to_ants(fixed),
            to_ants(moving_labels.astype(np.float32)),
            out["fwdtransforms"],
            interpolator="nearestNeighbor",
        ).numpy()
        field = ants.image_read(out["fwdtransforms"][0]).numpy()  # (x, y, z, 3), LPS = index here
        estimated = field.astype(np.float32)
    else:
        from dipy.align.imwarp import SymmetricDiffeomorphicRegistration
        from dipy.align.metrics import CCMetric

        syn = SymmetricDiffeomorphicRegistration(CCMetric(3), level_iters=list(iterations))
        mapping = syn.optimize(fixed, moving, static_grid2world=affine, moving_grid2world=affine)
        seconds = time.perf_counter() - start
        warped_labels = mapping.transform(moving_labels.astype(np.float64), interpolation="nearest")
        estimated = mapping.get_forward_field().astype(np.float32)
    truth, _ = fields.invert((displacement * zoom).astype(np.float32), affine)
    brain = labels > 0
    error = float(np.sqrt(((estimated - truth) ** 2).sum(axis=-1))[brain].mean())
    before = float(np.sqrt((truth**2).sum(axis=-1))[brain].mean())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {
        "engine": engine,
        "seconds": seconds,
        "peak_mb": peak_mb,
        "dice_gm": dice(labels, warped_labels, 1),
        "dice_wm": dice(labels, warped_labels, 2),
        "dice_gm_before": dice(labels, moving_labels, 1),
        "dice_wm_before": dice(labels, moving_labels, 2),
        "error_mm": error,
        "error_before_mm": before,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoom", type=int, default=2)
    parser.add_argument("--iterations", type=int, nargs="+", default=[40, 20, 10])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--contrast", default="t2", help=argparse.SUPPRESS)
    parser.add_argument("--peak", type=float, default=6.0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--extra",
        action="store_true",
        help="also two other T2-like pairs: 9 mm peak (seed 3), 4 mm (seed 7)",
    )
    args = parser.parse_args()
    if args.engine:
        print(
            json.dumps(
                run_engine(
                    args.engine,
                    args.zoom,
                    args.iterations,
                    args.threads,
                    args.contrast,
                    args.peak,
                    args.seed,
                )
            )
        )
        return
    environment = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(args.threads),
    )
    rows = []
    runs = [
        ("mireg", "t2", 6.0, 0),
        ("ants", "t2", 6.0, 0),
        ("mireg", "t1", 6.0, 0),
        ("dipy-cc", "t1", 6.0, 0),
    ]
    if args.extra:
        runs += [
            (engine, "t2", peak, seed)
            for peak, seed in ((9.0, 3), (4.0, 7))
            for engine in ("mireg", "ants")
        ]
    for engine, contrast, peak, seed in runs:
        command = [
            sys.executable,
            __file__,
            "--engine",
            engine,
            "--contrast",
            contrast,
            "--zoom",
            str(args.zoom),
            "--threads",
            str(args.threads),
            "--iterations",
            *map(str, args.iterations),
            "--peak",
            str(peak),
            "--seed",
            str(seed),
        ]
        output = subprocess.run(command, env=environment, capture_output=True, text=True)
        if output.returncode != 0:
            print(f"{engine}: failed\n{output.stderr[-2000:]}")
            continue
        row = json.loads(output.stdout.strip().splitlines()[-1])
        row["contrast"] = contrast if (peak, seed) == (6.0, 0) else f"{contrast}-{peak:g}mm"
        rows.append(row)
    print(
        f"MNI T1 vs deformed copy (6 mm peak), {args.zoom} mm, levels {args.iterations}, "
        f"{args.threads} threads"
    )
    print(
        f"{'engine':>8} {'pair':>9} {'seconds':>8} {'peak MB':>8} {'Dice GM':>8} {'Dice WM':>8} "
        f"{'err mm':>7} {'time/ANTs':>9}"
    )
    for row in rows:
        ants_seconds = next(
            (
                r["seconds"]
                for r in rows
                if r["engine"] == "ants" and r["contrast"] == row["contrast"]
            ),
            None,
        )
        ratio = f"{row['seconds'] / ants_seconds:.2f}" if ants_seconds else "-"
        print(
            f"{row['engine']:>8} {row['contrast']:>9} {row['seconds']:>8.1f} "
            f"{row['peak_mb']:>8.0f} {row['dice_gm']:>8.3f} {row['dice_wm']:>8.3f} "
            f"{row['error_mm']:>7.2f} {ratio:>9}"
        )
    if rows:
        print(
            f"before registration: Dice GM {rows[0]['dice_gm_before']:.3f}, "
            f"WM {rows[0]['dice_wm_before']:.3f}, error {rows[0]['error_before_mm']:.2f} mm"
        )


if __name__ == "__main__":
    main()
