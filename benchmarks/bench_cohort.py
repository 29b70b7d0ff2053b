"""Cohort throughput: pairs per hour at 2 mm with 1 and 2 Dask workers, memory per worker.

python benchmarks/bench_cohort.py [--subjects 3] [--zoom 2]
Builds subjects from nilearn's MNI template (a different smooth deformation each), runs every
ordered pair with a LocalCluster of 1 worker, then of 2 workers (1 thread per task each),
and prints pairs per hour, the scaling ratio and the peak resident memory per worker.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # testdata, peers

from dask.distributed import Client, LocalCluster
from testdata import write_cohort

from napari_mireg.cli.batch import all_pairs, run_cohort


def throughput(pairs, out_dir, workers):
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: None)  # workers up before the clock starts
        started = time.perf_counter()
        result = run_cohort(pairs, out_dir, client=client, threads_per_task=1, progress=None)
        elapsed = time.perf_counter() - started
    peak = max(float(row["peak_mb"]) for row in result.rows)
    assert all(row["status"] == "ok" for row in result.rows), result.rows
    return len(pairs) * 3600.0 / elapsed, elapsed, peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--zoom", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        pairs = all_pairs(write_cohort(Path(folder) / "data", args.subjects, args.zoom))
        print(f"{len(pairs)} pairs at {args.zoom} mm, (40, 20, 10) iterations, affine prealign")
        figures = {}
        for workers in (1, 2):
            rate, elapsed, peak = throughput(pairs, Path(folder) / f"out{workers}", workers)
            figures[workers] = rate
            print(
                f"{workers} worker(s): {rate:.0f} pairs/hour ({elapsed:.1f} s), "
                f"peak memory per worker {peak:.0f} MB"
            )
        print(f"scaling 2 workers / 1 worker: {figures[2] / figures[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
