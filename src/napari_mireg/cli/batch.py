"""Cohort registration on Dask: one task per pair, resumable, one results table.

Each task runs one job of :mod:`napari_mireg.cli.jobs` into ``OUT/pairs/<pair>/`` (written
atomically, ``report.json`` last). The driver skips pairs whose folder holds a complete
report made with the same inputs and parameters, submits the others to a Dask cluster (an
in-process ``LocalCluster`` by default, or an existing scheduler), and writes
``OUT/results.csv`` (one row per pair), ``OUT/labels.csv`` (one row per pair and label) and
``OUT/dice_by_label.png``. A pair that fails because of its inputs (a bad file, images
that cannot be registered) is recorded with its error in its folder, so that a re-run does
not try it again until an input file changes; a failure of the machine (full disk, no
permission, no memory) is reported but not recorded, so the next run tries again. The
others go on. A pair listed twice is registered once. On Ctrl-C or SIGTERM the local
cluster is stopped and the staging folders of the unfinished pairs are removed.
"""

import contextlib
import csv
import io
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from napari_mireg import files
from napari_mireg._typing import PathLike
from napari_mireg.cli.jobs import OUTPUT_FILES, file_stamp, read_report, remove_staging
from napari_mireg.engine._validate import InputProblem
from napari_mireg.options import OPTIONS, OptionError, RegistrationOptions, from_arguments

RESULT_COLUMNS = (
    "pair",
    "status",
    "error",
    "whole_dice",
    "whole_jaccard",
    "mean_dice",
    "mean_jaccard",
    "mi_before",
    "mi_after",
    "folds",
    "seconds",
    "peak_mb",
    "reused",
)
LABEL_COLUMNS = ("pair", "label", "name", "dice", "jaccard")
SUMMARY_METRICS = (
    "whole_dice",
    "whole_jaccard",
    "mean_dice",
    "mean_jaccard",
    "mi_after",
    "folds",
    "seconds",
)


@dataclass(frozen=True)
class Pair:
    """One registration of a cohort: paths (absolute) and the name of its output folder."""

    name: str
    fixed: str
    moving: str
    fixed_labels: str = ""
    moving_labels: str = ""


def _stem(path):
    name = Path(path).name
    suffix = files.suffix_of(name)
    return name[: len(name) - len(suffix)] if suffix else name


def _read_table(path, required, optional):
    """Rows of a CSV file as dicts, paths resolved against the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise files.InputError(path, "no such file")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a spreadsheet's byte-order mark is fine
    except UnicodeDecodeError as error:
        raise files.InputError(
            path,
            f"is not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
            f"{error.start}); save the table as UTF-8 CSV",
        ) from None
    except OSError as error:
        raise files.FileAccessError(path, f"cannot be read ({error.strerror or error})") from error
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in required if c not in header]
        if missing:
            raise files.InputError(
                path,
                f"header must have columns {', '.join(required)} "
                f"(optional {', '.join(optional)}); missing "
                f"{', '.join(missing)}",
            )
        rows = []
        for number, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            for column in required:
                if not row.get(column):
                    raise files.InputError(path, f"line {number}: empty {column}")
            rows.append(
                {
                    c: str(files.resolved(path.parent / row[c])) if row.get(c) else ""
                    for c in required + optional
                }
            )
    if not rows:
        raise files.InputError(path, "lists no rows")
    return rows


def unique_names(pairs):
    """Give pairs unique folder names (a numeric suffix where names collide)."""
    seen = {}
    named = []
    for pair in pairs:
        count = seen.get(pair.name, 0)
        seen[pair.name] = count + 1
        named.append(pair if count == 0 else replace(pair, name=f"{pair.name}-{count + 1}"))
    return named


def read_pairs(path: PathLike) -> list[Pair]:
    """Pairs of a CSV with header ``fixed,moving[,fixed_labels,moving_labels]``.

    Paths may be relative to the CSV file's folder.
    """
    rows = _read_table(path, ["fixed", "moving"], ["fixed_labels", "moving_labels"])
    return unique_names(
        [
            Pair(
                f"{_stem(r['moving'])}_to_{_stem(r['fixed'])}",
                r["fixed"],
                r["moving"],
                r["fixed_labels"],
                r["moving_labels"],
            )
            for r in rows
        ]
    )


def all_pairs(path: PathLike) -> list[Pair]:
    """Every ordered pair of the subjects of a CSV with header ``image[,labels]``."""
    subjects = _read_table(path, ["image"], ["labels"])
    if len({subject["image"] for subject in subjects}) < 2:
        raise files.InputError(path, "lists one subject; --all-pairs needs at least two")
    return unique_names(
        [
            Pair(
                f"{_stem(m['image'])}_to_{_stem(f['image'])}",
                f["image"],
                m["image"],
                f["labels"],
                m["labels"],
            )
            for f in subjects
            for m in subjects
            if not _same_subject(f, m)
        ]
    )


def _same_subject(first, second):
    """True when two subject rows name one image (as written, resolved or linked)."""
    a, b = Path(first["image"]), Path(second["image"])
    if first["image"] == second["image"] or files.resolved(a) == files.resolved(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # a missing file: its pair fails with its own message
        return False


def _expected_inputs(pair):
    return {
        key: value
        for key, value in (
            ("fixed", pair.fixed),
            ("moving", pair.moving),
            ("fixed_labels", pair.fixed_labels),
            ("moving_labels", pair.moving_labels),
        )
        if value
    }


FAILURE_FILE = "failed.json"


def _input_signature(pair):
    """Path, size and modification time of each input file (None for a missing file)."""
    signature = {}
    for key, path in _expected_inputs(pair).items():
        stamp = file_stamp(path) or {"size": None, "mtime_ns": None}
        signature[key] = [path, stamp["size"], stamp["mtime_ns"]]
    return signature


def finished_report(pair, folder, options):
    """The report of a complete earlier run of this pair with these options, or None."""
    report = read_report(folder)
    if report is None:
        return None
    inputs = report.get("inputs", {})
    paths = {key: value.get("path") for key, value in inputs.items()}
    parameters = {k: v for k, v in report.get("parameters", {}).items() if k != "threads"}
    if paths != _expected_inputs(pair) or parameters != options.results_key():
        return None
    # A file rewritten in place since (same path) makes the result stale.
    for key, value in inputs.items():
        if {k: value.get(k) for k in ("size", "mtime_ns")} != (file_stamp(paths[key]) or {}):
            return None
    return report


def earlier_failure(pair, folder, options):
    """The error of an earlier failed run of this pair, if its input files and the options
    are unchanged since (a changed or newly present file gives the pair another try).
    """
    try:
        failure = json.loads((Path(folder) / FAILURE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if (
        failure.get("inputs") != _input_signature(pair)
        or failure.get("parameters") != options.results_key()
    ):
        return None
    return failure.get("error")


def _record_failure(pair, folder, options, message):
    failure = {
        "error": message,
        "inputs": _input_signature(pair),
        "parameters": options.results_key(),
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files.write_text(folder / FAILURE_FILE, json.dumps(failure, indent=2) + "\n")
    except OSError:
        pass  # not recorded: the pair is simply tried again next time


def caused_by_inputs(error):
    """True for a failure that the same input files would give again.

    Bad files and images that cannot be registered are the inputs' doing; an option
    refused, a file system error (full disk, permission), memory or any other error is
    not, and is tried again by the next run.
    """
    return isinstance(error, ValueError) and not isinstance(error, OptionError)


def _row(pair, report=None, error="", seconds=0.0, peak_mb=0.0, reused=False):
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(
        pair=pair.name,
        status="failed" if error else "ok",
        error=error,
        seconds=round(seconds, 3),
        peak_mb=round(peak_mb, 1),
        reused=reused,
    )
    if report is not None:
        overlap = report.get("overlap") or {}
        row.update(
            {
                key: overlap.get(key, "")
                for key in ("whole_dice", "whole_jaccard", "mean_dice", "mean_jaccard")
            }
        )
        row.update(
            mi_before=report["mi_before"], mi_after=report["mi_after"], folds=report["folds"]
        )
    return row


def _label_rows(pair, folder):
    path = Path(folder) / OUTPUT_FILES["overlap"]
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [
            {
                "pair": pair.name,
                "label": int(r["label"]),
                "name": r["name"],
                "dice": float(r["dice"]),
                "jaccard": float(r["jaccard"]),
            }
            for r in csv.DictReader(handle)
        ]


def peak_memory_mb():
    """Peak resident memory of this process in MB; 0.0 on Windows, which has no getrusage."""
    try:
        import resource
    except ImportError:
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in bytes on macOS, in kilobytes on Linux and the BSDs
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def register_pair(pair, folder, threads_per_task, options):
    """The Dask task: register one pair into `folder`; returns (row, label rows).

    Errors never escape: they are returned in the row. OpenMP kernels get
    `threads_per_task` threads and BLAS pools are limited alike, so that tasks side by side
    do not oversubscribe the cores.
    """
    from threadpoolctl import threadpool_limits

    from napari_mireg.cli.jobs import load_inputs, run_job

    started = time.perf_counter()
    folder = Path(folder)
    try:
        with threadpool_limits(limits=threads_per_task):
            inputs = load_inputs(
                pair.fixed, pair.moving, pair.fixed_labels or None, pair.moving_labels or None
            )
            try:
                report = run_job(inputs, folder, options, threads=threads_per_task)
            except InputProblem as problem:  # as the command line says it: file, flag
                raise files.input_error(problem, inputs.paths) from None
    except Exception as error:  # a failing pair is reported, never fatal to the cohort
        text = files.describe_os_error(error) if isinstance(error, OSError) else str(error)
        message = f"{type(error).__name__}: {' '.join(text.split())}"
        if caused_by_inputs(error):
            _record_failure(pair, folder, options, message)
        return _row(pair, error=message, seconds=time.perf_counter() - started), []
    with contextlib.suppress(OSError):
        (folder / FAILURE_FILE).unlink(missing_ok=True)
    return (
        _row(pair, report, seconds=time.perf_counter() - started, peak_mb=peak_memory_mb()),
        _label_rows(pair, folder),
    )


@dataclass
class CohortResult:
    """What a cohort run produced.

    Attributes
    ----------
    rows : list of dict
        One per pair, keys `RESULT_COLUMNS`, in the order of the pairs (names made
        unique by :func:`unique_names`).
    label_rows : list of dict
        One per pair and label, keys `LABEL_COLUMNS`.
    results_csv, labels_csv, plot : Path
    """

    rows: list
    label_rows: list
    results_csv: Path
    labels_csv: Path
    plot: Path


def _local_client(threads_per_task, workers, pairs):
    from dask.distributed import Client, LocalCluster

    cores = os.cpu_count() or 1
    workers = workers or max(1, cores // threads_per_task)
    workers = min(workers, pairs)  # an idle worker process costs memory and start-up time
    if workers * threads_per_task > cores:
        warnings.warn(
            f"{workers} workers x {threads_per_task} threads per task exceed the {cores} cores: "
            "the tasks will slow each other down",
            stacklevel=3,
        )
    # Dask's warnings (a worker slow to stop, a task cancelled) say nothing about a pair:
    # each pair's result is its progress line and its row. Errors still show.
    made = set(_spec_clusters())
    try:
        with warnings.catch_warnings():
            # The scheduler's HTTP server (health checks; the dashboard is off) takes
            # another port when another cluster holds 8787, and warns: nothing to act on.
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        return Client(cluster)
    except BaseException:
        # Stopped while the cluster starts: close what was made of it, quietly (else Dask's
        # own clean-up at exit fails on the half-started workers with a traceback).
        for cluster in set(_spec_clusters()) - made:
            _close_quietly(cluster)
        raise


def _spec_clusters():
    """The Dask clusters of this process (LocalCluster keeps a weak set of them)."""
    from distributed.deploy.spec import SpecCluster

    return list(getattr(SpecCluster, "_instances", ()))


def run_cohort(
    pairs: Sequence[Pair],
    out_dir: PathLike,
    options: RegistrationOptions | Mapping[str, Any] | None = None,
    *,
    client: Any = None,
    threads_per_task: int = 1,
    workers: int | None = None,
    retry_failed: bool = False,
    progress: TextIO | None = sys.stderr,
    **settings: Any,
) -> CohortResult:
    """Register every pair on Dask; resumable; writes the cohort tables.

    Parameters
    ----------
    pairs : sequence of Pair
        See :func:`read_pairs` and :func:`all_pairs`.
    out_dir : str or Path
        Each pair writes into ``out_dir/pairs/<pair name>/``.
    client : dask.distributed.Client, optional
        An existing client (cluster); by default a LocalCluster with `workers` processes
        (default: cores // threads_per_task), closed at the end.
    threads_per_task : int
        Kernel (OpenMP) and BLAS threads of each task.
    workers : int, optional
    retry_failed : bool
        Run again the pairs that failed before even if their inputs did not change.
    progress : file or None
        Where to print one line per finished pair.
    options : RegistrationOptions or dict, optional
    **settings
        Single registration options overriding `options`; ``threads`` is ignored
        (`threads_per_task` decides).

    Returns
    -------
    CohortResult
    """
    from dask.distributed import as_completed

    options = RegistrationOptions.build(options, **settings).replace(threads=None)
    threads_per_task = _count(threads_per_task, "threads_per_task")
    if workers is not None:
        workers = _count(workers, "workers")
    out_dir = Path(out_dir)
    pairs = unique_names(_without_duplicates(pairs, progress))
    names = [pair.name for pair in pairs]
    folders = {pair.name: out_dir / "pairs" / pair.name for pair in pairs}
    results = {}
    todo = []
    for pair in pairs:
        folder = folders[pair.name]
        report = finished_report(pair, folder, options)
        error = None if retry_failed or report else earlier_failure(pair, folder, options)
        if report is not None:
            results[pair.name] = (
                _row(pair, report, seconds=report["timings"]["total"], reused=True),
                _label_rows(pair, folder),
            )
        elif error is not None:
            results[pair.name] = (_row(pair, error=error, reused=True), [])
        else:
            todo.append(pair)
    _say(progress, f"{len(pairs)} pairs: {len(pairs) - len(todo)} already done, {len(todo)} to run")
    owned = None
    if todo:
        futures = {}
        try:
            if client is None:
                client = owned = _local_client(threads_per_task, workers, len(todo))
            futures = {
                client.submit(
                    register_pair,
                    pair,
                    str(folders[pair.name]),
                    threads_per_task,
                    options,
                    pure=False,
                ): pair
                for pair in todo
            }
            for done, future in enumerate(as_completed(futures), start=1):
                pair = futures[future]
                results[pair.name] = future.result()
                row = results[pair.name][0]
                detail = row["error"] or f"mean Dice {row['mean_dice'] or '-'}"
                _say(
                    progress,
                    f"[{done}/{len(todo)}] {pair.name}: {row['status']} "
                    f"({row['seconds']:.1f} s) {detail}",
                )
        except BaseException:
            # Ctrl-C or SIGTERM (or a lost scheduler): stop the work, then remove the
            # staging folders the stopped tasks leave (a remote cluster's tasks are
            # cancelled; a staging folder a worker still writes is removed by the next run).
            if owned is None:  # a cluster of the caller's: its workers stop these tasks
                for future in futures:
                    future.cancel()
            _close(owned)
            owned = None
            for pair in todo:
                if pair.name not in results:
                    with contextlib.suppress(OSError):
                        remove_staging(folders[pair.name])
            raise
        finally:
            _close(owned)
    rows = [results[name][0] for name in names]
    label_rows = [label for name in names for label in results[name][1]]
    result = CohortResult(
        rows,
        label_rows,
        out_dir / "results.csv",
        out_dir / "labels.csv",
        out_dir / "dice_by_label.png",
    )
    files.write_text(result.results_csv, _csv_text(rows, RESULT_COLUMNS))
    files.write_text(result.labels_csv, _csv_text(label_rows, LABEL_COLUMNS))
    _box_plot(label_rows, result.plot)
    _say(progress, summary_text(rows))
    return result


def _close(client):
    """Close a client made here, then its LocalCluster (its worker processes end), quietly."""
    if client is not None:
        cluster = client.cluster
        _close_quietly(client)
        _close_quietly(cluster)


# Loggers that report a connection closing as an error while a cluster shuts down
# (CommClosedError, CancelledError, "Stream is closed"): normal at that moment.
SHUTDOWN_LOGGERS = ("distributed", "tornado", "asyncio")


def _close_quietly(closable):
    """Close a Dask client or cluster with its shutdown noise silenced.

    A closing cluster logs the connections it cuts (``CommClosedError``, ``CancelledError``,
    "Stream is closed") and may raise them; on an interruption a worker may also still be
    starting. None of that is about the user's pairs: it is neither printed nor raised.
    """
    levels = silence_shutdown_loggers()
    try:
        closable.close()
    except Exception:  # noqa: S110 - a connection already cut; the cluster is gone either way
        pass
    finally:
        for logger, level in levels.items():
            logger.setLevel(level)


def silence_shutdown_loggers():
    """Silence the loggers of :data:`SHUTDOWN_LOGGERS`; returns their levels, to restore.

    ``mireg batch`` calls it once its cohort is over and leaves them silent: an asyncio task
    of a cut connection may still report itself when it is collected, at exit.
    """
    manager = logging.Logger.manager
    names = [
        name
        for name in [*SHUTDOWN_LOGGERS, *manager.loggerDict]
        if name.split(".")[0] in SHUTDOWN_LOGGERS
    ]
    loggers = [logging.getLogger(name) for name in dict.fromkeys(names)]
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    return levels


def _count(value, name):
    """A whole number >= 1 (threads, workers), else an OptionError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise OptionError(name, f"must be a whole number >= 1, got {value!r}")
    return int(value)


def _without_duplicates(pairs, progress):
    """The pairs with a repeated one (same files) kept once; each repeat is said once."""
    first = {}  # files -> the first pair listing them
    times = {}
    for pair in pairs:
        key = (pair.fixed, pair.moving, pair.fixed_labels, pair.moving_labels)
        first.setdefault(key, pair)
        times[key] = times.get(key, 0) + 1
    for key, count in times.items():
        if count > 1:
            _say(progress, f"{first[key].name}: listed {count} times, registered once")
    return list(first.values())


def _say(stream, text):
    if stream is not None:
        print(text, file=stream, flush=True)


def _csv_text(rows, columns):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def summary_text(rows):
    """Mean +- sd of each summary metric over the pairs that succeeded."""
    ok = [row for row in rows if row["status"] == "ok"]
    lines = [f"{len(ok)} of {len(rows)} pairs ok"]
    lines += [f"  failed: {row['pair']}: {row['error']}" for row in rows if row["status"] != "ok"]
    for metric in SUMMARY_METRICS:
        values = np.array([float(row[metric]) for row in ok if row[metric] != ""])
        if values.size:
            lines.append(f"  {metric:13s} {values.mean():.4f} +- {values.std():.4f}")
    return "\n".join(lines)


def _box_plot(label_rows, path):
    """Box plot of per-label Dice across pairs (nothing is written without label rows)."""
    if not label_rows:
        return
    # A Figure of its own, without pyplot: the caller's backend (napari's, say) is left alone.
    from matplotlib.figure import Figure

    labels = sorted({row["label"] for row in label_rows})
    names = {row["label"]: row["name"] for row in label_rows}
    values = [
        [row["dice"] for row in label_rows if row["label"] == label and np.isfinite(row["dice"])]
        for label in labels
    ]
    figure = Figure(figsize=(max(6.0, 0.35 * len(labels) + 2), 4.5))
    axes = figure.subplots()
    axes.boxplot(values, tick_labels=[names[label] for label in labels])
    axes.set_ylabel("Dice")
    axes.set_title(f"Dice per label across {len({r['pair'] for r in label_rows})} pairs")
    axes.tick_params(axis="x", labelrotation=90)
    figure.tight_layout()
    with files.atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")


def main(args):
    """`mireg batch` (see cli.py for the arguments)."""
    options = from_arguments(args)
    for name, value in (("--threads-per-task", args.threads_per_task), ("--workers", args.workers)):
        if value is not None and value < 1:
            raise OptionError(name, f"must be a whole number >= 1, got {value}")
    # the registration's own limit, checked before a cluster starts
    most = next(option.high for option in OPTIONS if option.name == "threads")
    if args.threads_per_task > most:
        raise OptionError(
            "--threads-per-task", f"must be at most {most:g}, got {args.threads_per_task}"
        )
    if not args.out.strip():
        raise OptionError("--out", "is empty: name an output folder")
    files.check_output_folder(args.out)
    pairs = all_pairs(args.table) if args.all_pairs else read_pairs(args.table)
    client = None
    if args.scheduler:
        from dask.distributed import Client

        client = Client(args.scheduler)
    try:
        result = run_cohort(
            pairs,
            args.out,
            options,
            client=client,
            threads_per_task=args.threads_per_task,
            workers=args.workers,
            retry_failed=args.retry_failed,
        )
    finally:
        if client is not None:
            _close_quietly(client)
        silence_shutdown_loggers()  # the process ends here: nothing of Dask's is left to say
    print(f"wrote {result.results_csv} and {result.labels_csv}")
    return 0 if all(row["status"] == "ok" for row in result.rows) else 1
