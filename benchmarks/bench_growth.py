"""How napari-mireg's time and memory grow with resolution and threads, greedy beside it.

One inter-subject pair of ``bench_pipeline.py`` (fixed: the MNI 2009a T1 brain; moving:
the T2-like brain of pycortex's S1), the full pipeline from files (MI affine, then the MI
SyN, 40x20x10), at 2 mm, 1 mm (native) and 0.8 mm (both real heads resampled, so a
0.7 mm HCP-style scan can be read off the trend), with 1 and 2 threads. Each run is a
fresh process; printed: wall time, peak memory of the process (ru_maxrss), and greedy's
figures for the same run.

The thread scaling measured here (1 -> 2 threads) gives each tool's parallel fraction ``p``
by Amdahl's law (``T2 / T1 = (1 - p) + p / 2``); the time on ``n`` cores printed for 16
is ``T1 * ((1 - p) + p / n)``: a projection from the measured fraction, which ignores
memory bandwidth (it can only be optimistic).

Usage::

    python benchmarks/bench_growth.py [--resolutions 2,1,0.8] [--threads 1,2]
"""

import argparse
import os
from types import SimpleNamespace

import bench_pipeline

PAIR = "mni<-s1"


def _label(resolution):
    return "1 mm" if resolution == 0 else f"{resolution:g} mm"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", default="2,1,0.8", help="mm; 1 is the native grid")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--tools", default="mireg,greedy")
    parser.add_argument("--iterations", default="40x20x10")
    args = parser.parse_args()
    # The native files are 1 mm (mni and s1): run them as they are, not resampled.
    resolutions = [0.0 if float(r) == 1.0 else float(r) for r in args.resolutions.split(",")]
    threads = [int(n) for n in args.threads.split(",")]
    tools = args.tools.split(",")
    for resolution in resolutions:
        bench_pipeline.prepare(resolution)
    print(f"load before the run: {os.getloadavg()}", flush=True)
    rows = {}
    for resolution in resolutions:
        for count in threads:
            for tool in tools:
                settings = SimpleNamespace(threads=count, iterations=args.iterations)
                row = bench_pipeline.child(tool, PAIR, resolution, settings)
                if row is not None:
                    rows[tool, resolution, count] = row
                    print(
                        f"{tool:>7} {_label(resolution):>6} {count} threads: "
                        f"{row['seconds']:6.1f} s {row['peak_mb']:7.0f} MB "
                        f"Dice {row['dice_mean']:.3f}",
                        flush=True,
                    )
    print(f"\n{PAIR}, deformable {args.iterations}, load {os.getloadavg()[0]:.2f}")
    header = "| resolution | threads | " + " | ".join(f"{tool} s | {tool} MB" for tool in tools)
    print(header + " | mireg/greedy time |")
    print("|" + "---|" * (3 + 2 * len(tools)))
    for resolution in resolutions:
        for count in threads:
            cells = []
            for tool in tools:
                row = rows.get((tool, resolution, count))
                cells += [f"{row['seconds']:.1f}", f"{row['peak_mb']:.0f}"] if row else ["-", "-"]
            mireg, greedy = (
                rows.get(("mireg", resolution, count)),
                rows.get(("greedy", resolution, count)),
            )
            ratio = f"{mireg['seconds'] / greedy['seconds']:.2f}" if mireg and greedy else "-"
            print(f"| {_label(resolution)} | {count} | " + " | ".join(cells) + f" | {ratio} |")
    if 1 in threads and 2 in threads:
        print("\nParallel fraction from 1 -> 2 threads (Amdahl) and the projection to 16 cores:")
        for tool in tools:
            for resolution in resolutions:
                one, two = rows.get((tool, resolution, 1)), rows.get((tool, resolution, 2))
                if not (one and two):
                    continue
                t1, t2 = one["seconds"], two["seconds"]
                fraction = min(max(2.0 * (1.0 - t2 / t1), 0.0), 1.0)
                sixteen = t1 * ((1.0 - fraction) + fraction / 16.0)
                print(
                    f"{tool:>7} {_label(resolution):>6}: speed-up 1->2 {t1 / t2:.2f}, "
                    f"parallel fraction {fraction:.2f}, 16 cores ~{sixteen:.1f} s "
                    f"({t1 / sixteen:.1f}x one thread)"
                )


if __name__ == "__main__":
    main()
