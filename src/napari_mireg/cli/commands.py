"""The ``mireg`` command line: register, apply, overlap, clean-labels, batch.

Exit codes: 0 success; 1 some pairs of a batch failed, or out of memory; 2 bad input or a
file that cannot be read or written (one line naming the file or the option); 130 when
interrupted with Ctrl-C (SIGINT); 143 when stopped with SIGTERM (as batch schedulers do). An
interruption leaves no partial output behind and earlier complete outputs as they were.
"""

import argparse
import re
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from napari_mireg import __version__, files
from napari_mireg.engine._validate import InputProblem
from napari_mireg.options import add_arguments as add_registration_options
from napari_mireg.options import from_arguments as registration_options

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class BadInput(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: raised in the main thread so that every clean-up runs.

    A ``KeyboardInterrupt``, so the code that cleans up after Ctrl-C (staging folders,
    temporary files, the Dask cluster) does the same after SIGTERM.
    """

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum, frame):
    # Clean-up must not be cut short by a second signal: ignore the next ones.
    for other in (signal.SIGINT, signal.SIGTERM):
        signal.signal(other, signal.SIG_IGN)
    raise Interrupted(signum)


def _handle_stop_signals():
    """SIGTERM (schedulers, ``kill``) and SIGINT both raise :class:`Interrupted`.

    Returns
    -------
    dict
        The handlers replaced (empty outside the main thread, where none can be set).
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, _on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}


class Progress:
    """A one-line progress bar on stderr: level, iteration, MI."""

    def __init__(self, level_iters, stream=sys.stderr, prealign="affine"):
        self.total = max(1, sum(level_iters))
        self.levels = len(level_iters)
        self.done = 0
        self.stream = stream
        self.started = time.perf_counter()
        self.live = stream.isatty()
        self.prealigning = False
        self.prealign = prealign
        self.extracting = set()  # the sides whose brain extraction said it started

    def update(self, snapshot):
        """Count one SyN iteration and redraw the line (a brain extraction says when it
        starts and ends, the prealignment when it starts).
        """
        if snapshot.phase == "brain extraction":
            self._brain_extraction(snapshot)
            return
        if snapshot.phase == "prealignment" and not self.prealigning:
            # Said at its first step: the checks before it may still refuse the inputs.
            self.prealigning = True
            print(f"prealignment ({self.prealign}) ...", file=self.stream, flush=True)
        if snapshot.phase != "syn":
            return
        self.done += 1
        filled = int(30 * min(self.done, self.total) / self.total)
        line = (
            f"[{'#' * filled}{'.' * (30 - filled)}] level {snapshot.level + 1}/"
            f"{self.levels} iteration {snapshot.iteration + 1} MI {-snapshot.energy:.4f} "
            f"{time.perf_counter() - self.started:5.1f} s"
        )
        if self.live:
            self.stream.write("\r" + line)
        elif self.done == 1 or self.done % 10 == 0:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _brain_extraction(self, step):
        """One line when a side's brain extraction starts (about a minute of silence
        follows), one when its mask is made.
        """
        if step.mask is not None:
            print(
                f"brain extraction ({step.side}) done in {step.seconds:.1f} s",
                file=self.stream,
                flush=True,
            )
        elif step.side not in self.extracting:
            self.extracting.add(step.side)
            print(f"brain extraction ({step.side}, ROBEX) ...", file=self.stream, flush=True)

    def close(self):
        """End the line (on a terminal)."""
        if self.live:
            self.stream.write("\n")


def command_register(args):
    """`mireg register`: one job from files to an output folder."""
    from napari_mireg.cli.jobs import load_inputs, run_job_steps

    options = registration_options(args)
    if not args.out.strip():
        raise BadInput("--out is empty: name an output folder")
    out_dir = Path(args.out)
    files.check_output_folder(out_dir)
    inputs = load_inputs(
        args.fixed, args.moving, args.fixed_labels, args.moving_labels, args.mask, args.moving_mask
    )
    created = not out_dir.exists()
    progress = Progress(options.level_iters, prealign=options.prealign)
    steps = run_job_steps(inputs, out_dir, options)
    try:
        while True:
            try:
                progress.update(next(steps))
            except StopIteration as finished:
                report = finished.value
                break
            except InputProblem as problem:  # refused before any work: name file and flag
                raise files.input_error(problem, inputs.paths) from None
    except BaseException:
        steps.close()
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    finally:
        progress.close()
    print(
        f"MI {report['mi_before']:.4f} -> {report['mi_after']:.4f}; folds "
        f"{report['folds']}; {report['timings']['total']:.1f} s"
    )
    if report["overlap"]:
        before, after = report["overlap_before"], report["overlap"]
        print(
            f"Dice whole brain {before['whole_dice']:.4f} -> {after['whole_dice']:.4f}, "
            f"mean over labels {before['mean_dice']:.4f} -> {after['mean_dice']:.4f}"
        )
    print(f"outputs in {out_dir}: {', '.join(report['outputs'])}")
    return EXIT_OK


def parse_transform(text):
    """Read a transform given as FILE or [FILE,1] (ANTs: the inverse of an affine)."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        name, _, flag = text[1:-1].rpartition(",")
        if flag.strip() not in ("0", "1") or not name:
            raise BadInput(f"{text}: expected [FILE,0] or [FILE,1]")
        return files.load_transform(name.strip(), invert=flag.strip() == "1")
    if text.startswith("[") or text.endswith("]"):
        raise BadInput(f"{text}: expected FILE, [FILE,0] or [FILE,1]")
    return files.load_transform(text)


def command_apply(args):
    """`mireg apply`: resample an image through transforms."""
    from napari_mireg.engine.transforms import DisplacementField, apply_transforms

    inputs = {"--to": args.to, "--reference": args.reference}
    inputs |= {f"transform {t}": t.strip().strip("[]").rsplit(",", 1)[0] for t in args.transforms}
    files.check_output_file(args.out, inputs)
    if files.suffix_of(args.out) not in files.VOLUME_SUFFIXES:
        raise files.InputError(
            args.out, f"unsupported output format; use one of {', '.join(files.VOLUME_SUFFIXES)}"
        )
    transforms = [parse_transform(t) for t in args.transforms]
    image = files.load_volume(args.to, labels=args.labels)
    files.check_transforms_fit(dict(zip(args.transforms, transforms, strict=True)), image)
    if args.reference:
        reference = files.load_volume(args.reference)
    else:
        grids = [t.grid for t in transforms if isinstance(t, DisplacementField)]
        if not grids:
            raise BadInput("only affine transforms given: say the output grid with --reference")
        reference = grids[0]
    warped = apply_transforms(image, reference, transforms, "nearest" if args.labels else "linear")
    files.save_volume(args.out, warped, reference.file_affine, labels=args.labels)
    print(f"wrote {args.out} (shape {np.shape(warped)})")
    return EXIT_OK


def command_overlap(args):
    """`mireg overlap`: Dice/Jaccard of two label maps."""
    from napari_mireg.engine.transforms import same_grid
    from napari_mireg.overlap import overlap_scores

    if args.csv:
        files.check_output_file(
            args.csv, {"fixed labels": args.fixed_labels, "warped labels": args.warped_labels}
        )
    fixed = files.load_volume(args.fixed_labels, labels=True)
    warped = files.load_volume(args.warped_labels, labels=True)
    if not same_grid(fixed, warped):
        raise BadInput(
            f"{args.warped_labels}: not on the grid of {args.fixed_labels} "
            f"(shape or affine differs)"
        )
    table = overlap_scores(fixed.data, warped.data)
    text = table.to_csv_text()
    if args.csv:
        files.write_text(args.csv, text)
    else:
        sys.stdout.write(text)
    print(
        f"whole brain Dice {table.whole_dice:.4f} Jaccard {table.whole_jaccard:.4f}; mean "
        f"over {len(table.rows)} labels Dice {table.mean_dice:.4f} Jaccard "
        f"{table.mean_jaccard:.4f}",
        file=sys.stderr if not args.csv else sys.stdout,
    )
    return EXIT_OK


def command_clean_labels(args):
    """`mireg clean-labels`: islands and holes per label."""
    from napari_mireg.labels import clean_labels

    if args.min_island is not None and args.min_island < 1:
        raise BadInput(f"--min-island: must be a whole number >= 1, got {args.min_island}")
    files.check_output_file(args.output, {"input": args.input})
    labels = files.load_volume(args.input, labels=True)
    cleaned, changes = clean_labels(
        labels.user_array(labels.data),
        min_island=args.min_island,
        fill_holes=not args.no_fill_holes,
    )
    files.save_volume(args.output, cleaned, labels.file_affine, labels=True)
    for change in changes:
        if change.island_voxels or change.holes_filled:
            print(
                f"{change.label:5d} {change.name:32s} islands {change.islands_removed} "
                f"({change.island_voxels} voxels) holes filled {change.holes_filled} "
                f"voxels: {change.voxels_before} -> {change.voxels_after}"
            )
    print(
        f"{sum(c.island_voxels + c.holes_filled > 0 for c in changes)} of {len(changes)} "
        f"labels changed; wrote {args.output}"
    )
    return EXIT_OK


def command_batch(args):
    """`mireg batch`: a cohort on Dask."""
    from napari_mireg.cli.batch import main as batch_main

    return batch_main(args)


def version_text():
    """What ``mireg --version`` prints: the version, and the kernels' OpenMP threads."""
    from napari_mireg.engine.fields import openmp_threads

    threads = openmp_threads()
    plural = "s" if threads != 1 else ""
    kernels = f"OpenMP, {threads} thread{plural}" if threads else "serial, built without OpenMP"
    return f"mireg {__version__} (kernels: {kernels})"


class ShowVersion(argparse.Action):
    """``--version``: print :func:`version_text` and exit."""

    def __call__(self, parser, namespace, values, option_string=None):
        """Print the version line and exit with 0."""
        print(version_text())
        parser.exit()


def build_parser():
    """The argparse parser of ``mireg`` with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="mireg", description="Mutual-information SyN registration of brain MRI (napari-mireg)."
    )
    parser.add_argument(
        "--version", action=ShowVersion, nargs=0, help="show the version and the kernels' threads"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    register = commands.add_parser(
        "register",
        help="register MOVING to FIXED",
        description="Register MOVING to FIXED (MI prealignment, "
        "then MI-SyN) and write the outputs into --out.",
    )
    register.add_argument("fixed", help="fixed image (.nii, .nii.gz, .mgz)")
    register.add_argument("moving", help="moving image")
    register.add_argument("--fixed-labels", help="label map of the fixed image (e.g. SynthSeg)")
    register.add_argument("--moving-labels", help="label map of the moving image")
    register.add_argument(
        "--mask",
        help="fixed-space mask (e.g. a brain mask): the metric looks only inside it "
        "(default: the fixed labels' brain, dilated 4 mm, when labels are given)",
    )
    register.add_argument(
        "--moving-mask",
        help="moving-space mask (default: the moving labels' brain, dilated 4 mm, when "
        "labels are given)",
    )
    register.add_argument("--out", required=True, help="output folder")
    add_registration_options(register)
    register.set_defaults(run=command_register)

    apply = commands.add_parser(
        "apply",
        help="apply transforms to an image",
        description="Resample --to IMAGE through TRANSFORMs given in "
        "ANTs order (e.g. warp.nii.gz affine.txt; [affine.txt,1] "
        "inverts an affine).",
    )
    apply.add_argument("transforms", nargs="+", metavar="TRANSFORM")
    apply.add_argument("--to", required=True, metavar="IMAGE", help="image to resample")
    apply.add_argument("--reference", help="output grid (default: the first warp's grid)")
    apply.add_argument("--labels", action="store_true", help="nearest neighbour, integer labels")
    apply.add_argument("--out", required=True, metavar="FILE")
    apply.set_defaults(run=command_apply)

    overlap = commands.add_parser("overlap", help="Dice/Jaccard of two label maps")
    overlap.add_argument("fixed_labels")
    overlap.add_argument("warped_labels")
    overlap.add_argument("--csv", help="write the table here (default: standard output)")
    overlap.set_defaults(run=command_overlap)

    clean = commands.add_parser("clean-labels", help="fill holes and remove islands per label")
    clean.add_argument("input")
    clean.add_argument("output")
    clean.add_argument(
        "--min-island",
        type=int,
        default=None,
        help="keep components of at least this many voxels (default: only "
        "the largest of each label)",
    )
    clean.add_argument("--no-fill-holes", action="store_true")
    clean.set_defaults(run=command_clean_labels)

    batch = commands.add_parser(
        "batch",
        help="register a cohort on Dask",
        description="Register every pair of PAIRS.csv (header "
        "fixed,moving[,fixed_labels,moving_labels]) or, with "
        "--all-pairs, every ordered pair of SUBJECTS.csv (header "
        "image[,labels]).",
    )
    batch.add_argument("table", metavar="CSV")
    batch.add_argument(
        "--all-pairs", action="store_true", help="CSV lists subjects; register every ordered pair"
    )
    batch.add_argument("--out", required=True)
    where = batch.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address of a running Dask scheduler")
    where.add_argument("--workers", type=int, help="local workers (default: cores / threads)")
    batch.add_argument("--threads-per-task", type=int, default=1)
    batch.add_argument(
        "--retry-failed",
        action="store_true",
        help="run failed pairs again even if their inputs did not change",
    )
    add_registration_options(batch)
    batch.set_defaults(run=command_batch)
    return parser


def main(argv=None):
    """Entry point of ``mireg``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(_negative_values_attached(parser, argv))
    previous = _handle_stop_signals()
    shown_before = warnings.showwarning
    warnings.showwarning = _warning_line(args.command)
    try:
        return args.run(args)
    except (BadInput, ValueError) as error:  # files.InputError is a ValueError
        _error_line(args.command, error)
        return EXIT_BAD_INPUT
    except OSError as error:  # permission, full disk, read-only file system, ...
        _error_line(args.command, files.describe_os_error(error))
        return EXIT_BAD_INPUT
    except MemoryError:
        _error_line(args.command, "not enough memory for this run (smaller images or --bins?)")
        return EXIT_FAILED
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        print(
            f"mireg {args.command}: interrupted ({signal.Signals(signum).name}); no partial "
            f"output left, earlier outputs kept",
            file=sys.stderr,
        )
        return 128 + int(signum)
    finally:
        warnings.showwarning = shown_before
        for signum, handler in previous.items():  # as they were (main() may be called in-process)
            signal.signal(signum, handler)


def _negative_values_attached(parser, argv):
    """``--option -0.1,0.9`` as ``--option=-0.1,0.9``.

    argparse takes a value that starts with "-" and is not a plain number for an option of
    its own, and stops with its usage; attached, the value reaches the option's own check,
    which says in one line what is wrong with it.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    takes_value = {
        name
        for command in parser._subparsers._group_actions[0].choices.values()
        for name, action in command._option_string_actions.items()
        if action.nargs != 0
    }
    joined = []
    for item in argv:
        if joined and joined[-1] in takes_value and re.match(r"-\.?\d", item):
            joined[-1] = f"{joined[-1]}={item}"
        else:
            joined.append(item)
    return joined


def _warning_line(command):
    """Python's warnings as one line each on standard error, like the errors."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"mireg {command}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    return show


def _error_line(command, error):
    """The one line of a failed command (a message is never more than one line)."""
    text = " ".join(str(error).split()) or type(error).__name__
    print(f"mireg {command}: error: {text}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
