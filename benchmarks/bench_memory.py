"""Where napari-mireg's memory peaks: `register()` alone on the benchmark pairs.

Each pair runs in a fresh process (the pairs and files of ``bench_pipeline.py``, the
defaults, 40x20x10). A sampling thread reads the process's resident memory every
millisecond and, at each new peak, records the main thread's call stack and the bytes that
`buffers.reused_buffers` holds for reuse. Printed per pair: the peak (``ru_maxrss``), the
kept bytes and the stack at that moment. With ``--live``, the largest numpy arrays alive at
the peak of the live set (tracemalloc, taken at each kernel call; several times slower).

Usage::

    python benchmarks/bench_memory.py [--resolution 0] [--pairs "mni<-s1,s1<-robex"] [--live]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
import traceback
import tracemalloc

import bench_pipeline

PAGE = os.sysconf("SC_PAGE_SIZE")


def _resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def _watch(state, main_thread, stop):
    """Record the stack and the kept bytes at each new resident-memory peak."""
    from napari_mireg.engine import buffers

    while not stop.is_set():
        now = _resident()
        if now > state["peak"] + (1 << 20):
            frame = sys._current_frames().get(main_thread)
            state.update(peak=now, kept=buffers.kept_bytes())
            state["stack"] = traceback.format_stack(frame, limit=8) if frame else []
            del frame  # a frame held here would keep the main thread's arrays alive
        time.sleep(0.001)


def _track_live_set(state):
    """At each kernel call, the large arrays alive when the traced memory is highest."""
    from napari_mireg.engine._kernels import _fields, _mi, _pv

    def tracked(kernel):
        def call(*args, **kwargs):
            current = tracemalloc.get_traced_memory()[0]
            if current > state["live"] + (1 << 20):
                state["live"] = current
                traces = tracemalloc.take_snapshot().traces
                state["arrays"] = [
                    (trace.size, " <- ".join(str(frame) for frame in trace.traceback[::-1][:3]))
                    for trace in traces
                    if trace.size >= 1 << 20
                ]
            return kernel(*args, **kwargs)

        return call

    for module in (_fields, _mi, _pv):
        for name in dir(module):
            if "cython_function" in type(getattr(module, name)).__name__:
                setattr(module, name, tracked(getattr(module, name)))
    tracemalloc.start(6)


def run_pair(pair, resolution, threads, live):
    """Register one pair in this process; returns the figures as a dict."""
    import nibabel as nib

    from napari_mireg import register

    fixed, moving = bench_pipeline.pair_files(pair, bench_pipeline.prepare(resolution))[:2]
    state = {"peak": 0, "kept": 0, "stack": [], "live": 0, "arrays": []}
    if live:
        _track_live_set(state)
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(state, threading.get_ident(), stop), daemon=True
    )
    watcher.start()
    register(nib.load(str(fixed)), nib.load(str(moving)), level_iters="40x20x10", threads=threads)
    stop.set()
    watcher.join()
    arrays = sorted(state["arrays"], reverse=True)
    src = os.path.dirname(os.path.dirname(__import__("napari_mireg").__file__))
    arrays = [(size, where.replace(src + os.sep, "")) for size, where in arrays]
    stack = [line.strip().splitlines()[0].replace(src + os.sep, "") for line in state["stack"]]
    return {
        "pair": pair,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "kept_mb_at_peak": state["kept"] / 2**20,
        "stack_at_peak": stack,
        "live_mb": state["live"] / 2**20,
        "live_arrays": [f"{size / 2**20:.1f} MB {where}" for size, where in arrays],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=float, default=0, help="mm; 0: native (1 mm)")
    parser.add_argument("--pairs", default=",".join(f"{f}<-{m}" for f, m in bench_pipeline.PAIRS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--live", action="store_true", help="also the live arrays at the peak")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_pair(args.run, args.resolution, args.threads, args.live)))
        return
    environment = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for pair in args.pairs.split(","):
        command = [sys.executable, __file__, "--run", pair, "--resolution", str(args.resolution)]
        command += ["--threads", str(args.threads)] + (["--live"] if args.live else [])
        output = subprocess.run(command, env=environment, capture_output=True, text=True)
        if output.returncode != 0:
            print(f"{pair}: failed\n{output.stderr[-3000:]}", flush=True)
            continue
        row = json.loads(output.stdout.strip().splitlines()[-1])
        print(
            f"\n{pair}: peak {row['peak_mb']:.0f} MB, kept for reuse then "
            f"{row['kept_mb_at_peak']:.0f} MB; the stack then:"
        )
        for line in row["stack_at_peak"]:
            print(f"  {line}")
        if args.live:
            print(f"  live numpy set at its peak: {row['live_mb']:.0f} MB")
            for line in row["live_arrays"]:
                print(f"    {line}")


if __name__ == "__main__":
    main()
