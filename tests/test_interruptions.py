"""Output folders: replaced as one set, reproducible to the byte, and left as they were when a
run is stopped with SIGTERM or SIGINT during the prealignment, the SyN or the writing.

Every phase is caught with the ``MIREG_TEST_PAUSE`` hook of :mod:`napari_mireg.cli.jobs`,
which holds a job at that point until the signal comes, however loaded the machine is: the
prealignment of ``mireg register`` after its first MI iteration (its progress line printed,
the prealignment under way), a batch's before it (its tasks print no progress).
"""

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import testdata

from napari_mireg.cli import jobs, main
from napari_mireg.cli.jobs import OUTPUT_FILES, read_report

MIREG = [str(Path(sys.executable).parent / "mireg")]
QUICK = ["--iterations", "5x3x1", "--threads", "1"]
SIGNALS = [signal.SIGTERM, signal.SIGINT]
PHASES = ["prealign", "syn", "write"]


register_arguments = functools.partial(testdata.register_arguments, options=QUICK)


@pytest.fixture(scope="module")
def earlier(pair, tmp_path_factory):
    """A complete output folder of an earlier run (every output, labels included)."""
    out = tmp_path_factory.mktemp("earlier") / "out"
    assert main(register_arguments(pair, out) + ["--prealign", "none"]) == 0
    return out


def contents(folder):
    """Every file under `folder` (hidden ones too) with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()
    }


def test_two_runs_give_byte_identical_outputs(pair, earlier, tmp_path):
    again = tmp_path / "again"
    assert main(register_arguments(pair, again) + ["--prealign", "none"]) == 0
    first, second = contents(earlier), contents(again)
    assert sorted(first) == sorted(second) == sorted(OUTPUT_FILES.values())
    for name in first:
        if name != "report.json":
            assert first[name] == second[name], name
    reports = [json.loads(c["report.json"]) for c in (first, second)]
    for report in reports:
        report.pop("timings")
    assert reports[0] == reports[1]


def test_a_new_run_replaces_the_whole_set_and_removes_stale_staging(pair, earlier, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    stale = out / ".partial-abc123"  # what a SIGKILLed run leaves
    stale.mkdir()
    (stale / "warp.nii.gz").write_bytes(b"x" * 1000)
    assert main(register_arguments(pair, out, labels=False) + ["--prealign", "none"]) == 0
    names = sorted(contents(out))
    assert names == sorted(read_report(out)["outputs"])
    assert "overlap.csv" not in names and "warped_labels.nii.gz" not in names
    assert read_report(out)["overlap"] is None


def test_a_failed_move_leaves_no_complete_report(pair, earlier, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    moves = []
    original = Path.replace

    def replace(self, target):
        moves.append(target)
        if len(moves) == 3:
            raise OSError(28, "No space left on device")
        return original(self, target)

    monkeypatch.setattr(jobs.Path, "replace", replace)
    assert main(register_arguments(pair, out) + ["--prealign", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"mireg register: error: {out}: outputs cannot be moved into place "
        f"(No space left on device)"
    )
    assert read_report(out) is None  # a batch resume will not take this folder as done
    assert not list(out.glob(".partial-*"))


def start(arguments, phase, cwd=None):
    environment = dict(os.environ, **{jobs.TEST_PAUSE: phase})
    return subprocess.Popen(
        MIREG + arguments, stderr=subprocess.PIPE, text=True, env=environment, cwd=cwd
    )


def wait_for(process, words):
    """Read standard error until a line holds `words`; the lines read so far."""
    lines = []
    while True:
        line = process.stderr.readline()
        if not line:
            process.kill()
            pytest.fail(f"{words!r} never came; the run said:\n{''.join(lines)}")
        lines.append(line)
        if words in line:
            return lines


def stop(process, signum):
    process.send_signal(signum)
    code = process.wait(timeout=120)
    return code, process.stderr.read()


@pytest.mark.parametrize("signum", SIGNALS, ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("phase", PHASES)
def test_register_stopped_leaves_the_earlier_outputs_as_they_were(
    pair, earlier, tmp_path, phase, signum
):
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    before = contents(out)
    # The prealignment is held after its first MI iteration, in the middle of it.
    pause = "prealignment" if phase == "prealign" else phase
    process = start(register_arguments(pair, out) + ["--prealign", "affine"], pause)
    said = "".join(wait_for(process, f"mireg test pause: {pause}"))
    code, rest = stop(process, signum)
    assert code == 128 + signum, rest
    assert f"interrupted ({signal.Signals(signum).name})" in rest and "Traceback" not in rest
    # The signal landed in the phase named: the held job was still held (it says "over"
    # when its pause ends).
    assert f"mireg test pause: {pause} over" not in rest, rest
    if phase == "prealign":
        assert "prealignment (affine)" in said and "iteration 1 MI" not in said + rest
    assert contents(out) == before  # no .partial-*, no temporary file, nothing replaced


@pytest.fixture(scope="module")
def cohort(pair, tmp_path_factory):
    """A cohort folder where one pair is complete, and a table adding a second pair."""
    folder = tmp_path_factory.mktemp("cohort")
    fixed, moving = Path(pair["fixed"]), Path(pair["moving"])
    first = folder / "first.csv"
    first.write_text(f"fixed,moving\n{fixed},{moving}\n")
    both = folder / "both.csv"
    both.write_text(f"fixed,moving\n{fixed},{moving}\n{moving},{fixed}\n")
    out = folder / "out"
    options = ["--workers", "1", "--iterations", "5x3x1", "--prealign", "rigid"]
    done = subprocess.run(
        MIREG + ["batch", str(first), "--out", str(out), *options], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return both, out, options


@pytest.mark.parametrize("signum", SIGNALS, ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("phase", PHASES)
def test_batch_stopped_leaves_the_earlier_results_as_they_were(cohort, tmp_path, phase, signum):
    table, earlier_out, options = cohort
    out = tmp_path / "out"
    shutil.copytree(earlier_out, out)
    before = contents(out)
    process = start(["batch", str(table), "--out", str(out), *options], phase)
    wait_for(process, f"mireg test pause: {phase}")
    code, rest = stop(process, signum)
    assert code == 128 + signum, rest
    assert f"interrupted ({signal.Signals(signum).name})" in rest
    assert f"mireg test pause: {phase} over" not in rest, rest  # stopped while held
    assert contents(out) == before  # the second pair left nothing, not even a staging folder


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    """Two subjects: a cohort of two ordered pairs."""
    return testdata.write_cohort(tmp_path_factory.mktemp("subjects"), subjects=2, zoom=4)


def hidden_files(folder):
    """Names under `folder` that only an unfinished run leaves: staging folders, locks,
    records of a swap, temporaries of an atomic write (all begin with a dot).
    """
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob(".*"))


def check_pair_folders(out):
    """Every pair folder with a report is a complete job: what its report lists, and only that.

    Returns
    -------
    dict
        Pair name -> its report (None for a pair not finished).
    """
    reports = {}
    for folder in sorted((out / "pairs").glob("*")) if (out / "pairs").is_dir() else []:
        shown = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
        report = read_report(folder)
        if (folder / OUTPUT_FILES["report"]).exists():
            assert report is not None, f"{folder.name}: a report beside missing outputs"
            assert shown == set(report["outputs"]), (folder.name, shown)
        reports[folder.name] = report
    return reports


def check_tables(out, names):
    """The cohort tables, when written, list each pair once (labels: each label of a pair once)."""
    import csv

    if (out / "results.csv").exists():
        rows = list(csv.DictReader((out / "results.csv").open()))
        assert sorted(row["pair"] for row in rows) == sorted(names)
    if (out / "labels.csv").exists():
        rows = list(csv.DictReader((out / "labels.csv").open()))
        keys = [(row["pair"], row["label"]) for row in rows]
        assert len(keys) == len(set(keys)) and {pair for pair, _ in keys} <= set(names)


def _killed_when(command, ready, timeout=300.0):
    """Run `command` in its own session and SIGKILL its whole group (main process and
    workers, as a scheduler or the out-of-memory killer ends a job) once `ready()` holds.

    Returns True if the run was still going when it was killed (False: it ended first).
    """
    import time

    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, start_new_session=True)
    started, running = time.monotonic(), True
    while running and not ready(time.monotonic() - started):
        try:
            process.wait(timeout=0.02)  # the poll's pace; a run that ends leaves the loop
            running = False
        except subprocess.TimeoutExpired:
            running = time.monotonic() - started < timeout
    running = process.poll() is None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return running


def test_batch_killed_at_random_moments_then_rerun_is_complete(subjects, tmp_path):
    """SIGKILL to the whole batch at seeded random moments of its work, each run resuming
    the last; the rerun after them leaves the complete cohort and nothing of the killed runs.

    The moments are events of the run, not times, so that they fall inside the work on a
    fast machine as on a loaded one: a seeded random delay after the start (the cluster
    starting, or the first pair), while a pair is being written (its staging folder
    exists), and once a pair is complete.
    """
    import random

    from napari_mireg.cli.batch import all_pairs

    out = tmp_path / "out"
    names = [pair.name for pair in all_pairs(subjects)]
    options = ["--all-pairs", "--workers", "1", "--iterations", "3x1", "--prealign", "none"]
    command = MIREG + ["batch", str(subjects), "--out", str(out), *options]
    chance = random.Random(26)
    delay = chance.uniform(0.2, 2.0)

    def finished():
        return sum(r is not None for r in check_pair_folders(out).values())

    moments = [
        ("after a delay", lambda seconds: seconds >= delay),
        ("a pair being written", lambda _: bool(hidden_files(out / "pairs"))),
        ("a pair more complete", lambda _, done=None: finished() > done),
    ]
    chance.shuffle(moments)
    seen = []
    for name, ready in moments:
        if name == "a pair more complete":
            ready = functools.partial(ready, done=finished())
        running = _killed_when(command, ready)
        check_tables(out, names)
        seen.append((name, running, finished()))
    assert any(running for _, running, _ in seen), seen  # at least one run was cut short
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    reports = check_pair_folders(out)
    assert sorted(reports) == sorted(names) and all(reports.values()), reports
    check_tables(out, names)
    assert hidden_files(out) == []  # no staging folder, lock, record or temporary left
    assert sorted(p.name for p in out.iterdir()) == [
        "dice_by_label.png",
        "labels.csv",
        "pairs",
        "results.csv",
    ]
