"""Cohort runs on a 2-worker Dask LocalCluster: same numbers as serial runs, failures
recorded, resumable.
"""

import csv
import dataclasses
import io
from pathlib import Path

import pytest
from testdata import write_cohort

from napari_mireg.cli.batch import all_pairs, read_pairs, run_cohort, unique_names
from napari_mireg.cli.jobs import load_inputs, run_job

OPTIONS = {"level_iters": (10, 5), "prealign": "rigid"}
REPEATED = "subject1_to_subject0-2"  # the pairs table's first row is the first subject pair


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    subjects = write_cohort(folder, subjects=2, zoom=4)
    pairs = all_pairs(subjects)  # 2 ordered pairs
    table = folder / "pairs.csv"
    broken = folder / "broken.nii.gz"
    broken.write_bytes((folder / "subject1.nii.gz").read_bytes()[:3000])
    table.write_text(
        "fixed,moving,fixed_labels,moving_labels\n"
        "subject0.nii.gz,subject1.nii.gz,subject0_synthseg.nii.gz,"
        "subject1_synthseg.nii.gz\n"
        "subject1.nii.gz,subject0.nii.gz,,\n"
        "subject0.nii.gz,broken.nii.gz,,\n"
    )
    return folder, unique_names(pairs + read_pairs(table))


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("dask.distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as local,
        distributed.Client(local) as client,
    ):
        yield client


def test_pair_tables_resolve_paths_and_name_pairs(cohort):
    folder, pairs = cohort
    assert [p.name for p in pairs] == [
        "subject1_to_subject0",
        "subject0_to_subject1",
        "subject1_to_subject0-2",
        "subject0_to_subject1-2",
        "broken_to_subject0",
    ]
    assert pairs[2].fixed == str(folder / "subject0.nii.gz") and pairs[3].fixed_labels == ""
    bad = folder / "bad.csv"
    bad.write_text("image,moving\nsubject0.nii.gz,subject1.nii.gz\n")
    with pytest.raises(ValueError, match="bad.csv: header must have columns fixed, moving"):
        read_pairs(bad)


def read_csv(path):
    return list(csv.DictReader(Path(path).open()))


def test_cohort_matches_serial_runs_records_failures_and_resumes(cohort, cluster, tmp_path):
    folder, pairs = cohort
    # The broken input is repaired below: this test's own copy, never the module's file.
    broken = tmp_path / "inputs" / "broken.nii.gz"
    broken.parent.mkdir()
    broken.write_bytes(Path(pairs[-1].moving).read_bytes())
    pairs = [*pairs[:-1], dataclasses.replace(pairs[-1], moving=str(broken))]
    log = io.StringIO()
    result = run_cohort(pairs, tmp_path, client=cluster, progress=log, **OPTIONS)
    rows = {row["pair"]: row for row in result.rows}
    assert rows["broken_to_subject0"]["status"] == "failed"
    assert "broken.nii.gz: cannot be read" in rows["broken_to_subject0"]["error"]
    good = [p for p in pairs if p.name not in ("broken_to_subject0", REPEATED)]
    assert all(rows[p.name]["status"] == "ok" for p in good)
    for pair in good[:1] + good[2:]:  # one with labels, one without
        serial = run_job(
            load_inputs(
                pair.fixed, pair.moving, pair.fixed_labels or None, pair.moving_labels or None
            ),
            tmp_path / "serial",
            threads=1,
            **OPTIONS,
        )
        assert rows[pair.name]["mi_after"] == serial["mi_after"]
        assert rows[pair.name]["mi_before"] == serial["mi_before"]
        if pair.fixed_labels:
            assert rows[pair.name]["mean_dice"] == serial["overlap"]["mean_dice"]
    assert rows["subject1_to_subject0"]["mean_dice"] > 0.6
    written = read_csv(result.results_csv)
    assert float(written[0]["mi_after"]) == pytest.approx(rows[pairs[0].name]["mi_after"])
    labels = read_csv(result.labels_csv)
    # The table's first row repeats the first subject pair: registered once, said once.
    assert [r["pair"] for r in written] == [p.name for p in pairs if p.name != REPEATED]
    assert log.getvalue().count("subject1_to_subject0: listed 2 times, registered once") == 1
    assert {r["pair"] for r in labels} == {"subject1_to_subject0", "subject0_to_subject1"}
    assert {"Left-Cerebral-White-Matter", "CSF"} <= {r["name"] for r in labels}
    assert result.plot.read_bytes()[:4] == b"\x89PNG"
    assert "3 of 4 pairs ok" in log.getvalue() and "mean_dice" in log.getvalue()

    # A second run does no work (the broken pair's inputs did not change: its failure is
    # reported again); deleting one pair's output re-does only that pair.
    again = run_cohort(pairs, tmp_path, client=cluster, progress=None, **OPTIONS)
    assert all(row["reused"] for row in again.rows)
    assert [(r["status"], r["mi_after"], r["error"]) for r in again.rows] == [
        (r["status"], r["mi_after"], r["error"]) for r in result.rows
    ]
    (tmp_path / "pairs" / "subject0_to_subject1" / "warp.nii.gz").unlink()
    third = run_cohort(pairs, tmp_path, client=cluster, progress=None, **OPTIONS)
    assert [row["pair"] for row in third.rows if not row["reused"]] == ["subject0_to_subject1"]
    # A repaired input, or --retry-failed, gives the failed pair another try.
    retried = run_cohort(
        pairs, tmp_path, client=cluster, progress=None, retry_failed=True, **OPTIONS
    )
    assert [row["pair"] for row in retried.rows if not row["reused"]] == ["broken_to_subject0"]
    broken.write_bytes((folder / "subject1.nii.gz").read_bytes())
    repaired = run_cohort(pairs, tmp_path, client=cluster, progress=None, **OPTIONS)
    row = repaired.rows[-1]
    assert row["pair"] == "broken_to_subject0" and row["status"] == "ok" and not row["reused"]
    # Other parameters are another experiment: nothing is reused.
    other = run_cohort(
        good[:1], tmp_path, client=cluster, progress=None, level_iters=(5,), prealign="rigid"
    )
    assert other.rows[0]["reused"] is False


def test_mireg_batch_command_runs_on_a_local_cluster(cohort, tmp_path):
    from napari_mireg.cli import main

    folder, _ = cohort
    code = main(
        [
            "batch",
            str(folder / "subjects.csv"),
            "--all-pairs",
            "--workers",
            "2",
            "--iterations",
            "5",
            "--prealign",
            "none",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    rows = read_csv(tmp_path / "results.csv")
    assert [r["status"] for r in rows] == ["ok", "ok"] and float(rows[0]["mean_dice"]) > 0.5
    assert (tmp_path / "dice_by_label.png").is_file()


def test_a_finished_pair_is_run_again_when_an_input_file_is_rewritten(tmp_path):
    import os
    import shutil

    from napari_mireg.cli.batch import finished_report
    from napari_mireg.options import RegistrationOptions

    subjects = write_cohort(tmp_path / "data", subjects=2, zoom=4)
    pair = all_pairs(subjects)[0]
    options = RegistrationOptions(prealign="none", level_iters=(2,))
    folder = tmp_path / "pair"
    inputs = load_inputs(pair.fixed, pair.moving, pair.fixed_labels, pair.moving_labels)
    run_job(inputs, folder, options)
    assert finished_report(pair, folder, options) is not None
    shutil.copyfile(pair.moving, tmp_path / "copy.nii.gz")  # same bytes, rewritten in place
    os.replace(tmp_path / "copy.nii.gz", pair.moving)
    stamp = os.stat(pair.moving)
    os.utime(pair.moving, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
    assert finished_report(pair, folder, options) is None


def test_peak_memory_in_mb_on_every_platform(monkeypatch):
    import resource
    import sys

    from napari_mireg.cli import batch

    rusage = resource.getrusage(resource.RUSAGE_SELF)
    monkeypatch.setattr(resource, "getrusage", lambda who: rusage)
    monkeypatch.setattr(sys, "platform", "linux")  # kilobytes
    assert batch.peak_memory_mb() == pytest.approx(rusage.ru_maxrss / 1024)
    monkeypatch.setattr(sys, "platform", "darwin")  # bytes
    assert batch.peak_memory_mb() == pytest.approx(rusage.ru_maxrss / 1024**2)
    monkeypatch.setitem(sys.modules, "resource", None)  # Windows: no resource module
    assert batch.peak_memory_mb() == 0.0


def test_all_pairs_skips_a_subject_paired_with_itself(tmp_path):
    image = tmp_path / "a.nii.gz"
    image.write_bytes(b"not read here")
    (tmp_path / "b.nii.gz").write_bytes(b"not read here")
    (tmp_path / "alias.nii.gz").symlink_to(image)
    subjects = tmp_path / "subjects.csv"
    subjects.write_text("image\na.nii.gz\nb.nii.gz\na.nii.gz\nalias.nii.gz\n")
    pairs = all_pairs(subjects)
    assert all(Path(p.fixed).resolve() != Path(p.moving).resolve() for p in pairs)
    # a (3 rows naming it) against b, both ways: 6 ordered pairs, none of a with itself
    assert len(pairs) == 6


def test_local_workers_are_capped_at_the_pairs_to_run(monkeypatch):
    import dask.distributed

    from napari_mireg.cli import batch

    started = {}

    def cluster(**settings):
        started.update(settings)
        return "cluster"

    monkeypatch.setattr(dask.distributed, "LocalCluster", cluster)
    monkeypatch.setattr(dask.distributed, "Client", lambda cluster: cluster)
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 2)
    assert batch._local_client(1, 8, 1) == "cluster"
    assert started["n_workers"] == 1
    with pytest.warns(UserWarning, match="3 workers x 1 threads per task exceed the 2 cores"):
        batch._local_client(1, 3, 5)
    assert started["n_workers"] == 3


# What Dask prints when its connections close: none of it is about the user's pairs.
DASK_NOISE = (
    "Traceback",
    "CommClosedError",
    "CancelledError",
    "Stream is closed",
    "distributed.",
    "Exception ignored",
    "Task exception",
)


def _batch(folder, out, pause=None):
    """`mireg batch` of the cohort's two subject pairs in a process of its own."""
    import os
    import subprocess
    import sys

    from napari_mireg.cli import jobs

    environment = dict(os.environ)
    if pause:
        environment[jobs.TEST_PAUSE] = pause
    command = [str(Path(sys.executable).parent / "mireg"), "batch", str(folder / "subjects.csv")]
    command += ["--all-pairs", "--workers", "2", "--iterations", "4x2", "--prealign", "rigid"]
    return subprocess.Popen(
        [*command, "--out", str(out)], stderr=subprocess.PIPE, text=True, env=environment
    )


def _stderr_until(process, words):
    """Standard error up to the first line holding `words`."""
    lines = []
    while not lines or words not in lines[-1]:
        line = process.stderr.readline()
        if not line:
            process.kill()
            pytest.fail(f"{words!r} never came; the run said:\n{''.join(lines)}")
        lines.append(line)
    return "".join(lines)


@pytest.mark.parametrize("moment", ["end", "while-tasks-run", "while-the-cluster-starts"])
def test_batch_ends_without_dask_shutdown_noise(cohort, tmp_path, moment):
    import signal

    folder, _ = cohort
    process = _batch(folder, tmp_path / "out", pause="syn" if moment == "while-tasks-run" else None)
    if moment == "end":
        said = process.stderr.read()
        assert process.wait(timeout=300) == 0, said
        assert "2 of 2 pairs ok" in said
    else:
        words = "mireg test pause: syn" if moment == "while-tasks-run" else "2 to run"
        said = _stderr_until(process, words)
        process.send_signal(signal.SIGTERM)  # to the main process only, as `kill PID` does
        said += process.stderr.read()
        assert process.wait(timeout=120) == 128 + signal.SIGTERM, said
        assert said.strip().endswith(
            "mireg batch: interrupted (SIGTERM); no partial output left, earlier outputs kept"
        )
    assert not [noise for noise in DASK_NOISE if noise in said], said
