"""The output folder never loses a user's file: every way we could construct of making a run
replace or remove a file it did not write is refused with one line, before any work, and
leaves every file as it was.
"""

import functools
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import testdata

from napari_mireg import files
from napari_mireg.cli import main
from napari_mireg.cli.jobs import OUTPUT_FILES, TEST_PAUSE, read_report
from napari_mireg.files import output_folder

MIREG = [str(Path(sys.executable).parent / "mireg")]
QUICK = ["--iterations", "3x1", "--threads", "1", "--prealign", "none"]


register_arguments = functools.partial(testdata.register_arguments, options=QUICK)


@pytest.fixture(scope="module")
def earlier(pair, tmp_path_factory):
    """A complete output folder of an earlier run (every output, labels included)."""
    out = tmp_path_factory.mktemp("earlier") / "out"
    assert main(register_arguments(pair, out)) == 0
    return out


def contents(folder):
    """Every file under `folder` (hidden ones too) with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()
    }


def user_files(folder):
    """A user's own files, two of them named like outputs."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "overlap.csv").write_text("my own table\n")
    (folder / "warped_labels.nii.gz").write_bytes(b"my own labels")
    (folder / "notes.txt").write_text("my notes\n")
    return contents(folder)


def test_an_empty_out_is_refused_and_the_current_folder_kept(pair, tmp_path, monkeypatch, capsys):
    before = user_files(tmp_path / "here")
    monkeypatch.chdir(tmp_path / "here")
    assert main(register_arguments(pair, "")) == 2
    assert capsys.readouterr().err.strip() == (
        "mireg register: error: --out is empty: name an output folder"
    )
    assert contents(tmp_path / "here") == before


def test_the_current_folder_with_other_files_is_refused(pair, tmp_path, monkeypatch, capsys):
    here = tmp_path / "here"
    here.mkdir()
    (here / "notes.txt").write_text("my notes\n")
    before = contents(here)
    monkeypatch.chdir(here)
    assert main(register_arguments(pair, ".", labels=False)) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"mireg register: error: {here.resolve()}: the output folder is the current folder "
        f"and holds files mireg did not write (e.g. notes.txt): give --out a folder of its own"
    )
    assert contents(here) == before


def test_a_user_file_named_like_an_output_is_never_replaced(pair, tmp_path, capsys):
    out = tmp_path / "out"
    before = user_files(out)
    assert main(register_arguments(pair, out)) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"mireg register: error: {out / 'overlap.csv'}: exists and was not written by mireg; "
        f"it would be replaced: move it away or choose another output folder"
    )
    assert contents(out) == before


def test_user_files_beside_an_earlier_job_are_kept(pair, earlier, tmp_path):
    """Files of other names are never touched; an earlier job's outputs are replaced."""
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    (out / "notes.txt").write_text("my notes\n")
    (out / ".partial-mine").write_text("a file, not a staging folder\n")
    (out / ".partial-folder").mkdir()
    (out / ".partial-folder" / "thesis.tex").write_text("not an output\n")
    assert main(register_arguments(pair, out, labels=False)) == 0
    names = set(contents(out))
    assert {"notes.txt", ".partial-mine", ".partial-folder/thesis.tex"} <= names
    assert names - {"notes.txt", ".partial-mine", ".partial-folder/thesis.tex"} == set(
        read_report(out)["outputs"]
    )


@pytest.mark.parametrize("how", ["as-is", "symlink", "hardlink"])
def test_an_input_the_swap_would_replace_is_refused(pair, earlier, tmp_path, how, capsys):
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    moving = out / "warped.nii.gz"  # registering an earlier result again into its folder
    if how == "symlink":
        moving = tmp_path / "link.nii.gz"
        moving.symlink_to(out / "warped.nii.gz")
    elif how == "hardlink":
        moving = tmp_path / "hard.nii.gz"
        os.link(out / "warped.nii.gz", moving)
    before = contents(out)
    arguments = ["register", str(pair["fixed"]), str(moving), *QUICK, "--out", str(out)]
    assert main(arguments) == 2
    err = capsys.readouterr().err.strip()
    named = moving.resolve()  # a symbolic link is named by its target
    assert err == (
        f"mireg register: error: {named}: the moving input would "
        f"be replaced by this run's warped.nii.gz: choose another output folder"
    )
    assert contents(out) == before


def test_a_folder_in_use_by_a_live_process_is_refused(pair, earlier, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    staging = out / ".partial-live"  # the live run's staging folder: must survive
    staging.mkdir()
    (staging / "warp.nii.gz").write_bytes(b"being written")
    holder = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])  # alive
    try:
        (out / output_folder.LOCK_FILE).write_text(f"{holder.pid}\n")
        before = contents(out)
        assert main(register_arguments(pair, out)) == 2
        assert capsys.readouterr().err.strip() == (
            f"mireg register: error: {out}: output folder in use by process {holder.pid} "
            f"(another mireg run); wait for it to end or choose another output folder "
            f"(lock file {output_folder.LOCK_FILE})"
        )
        assert contents(out) == before
    finally:
        holder.kill()
        holder.wait()
    # Its process gone, the lock is stale: the next run takes it over and cleans up.
    assert main(register_arguments(pair, out)) == 0
    assert sorted(contents(out)) == sorted(OUTPUT_FILES.values())


def test_register_killed_then_rerun_leaves_a_complete_set(pair, earlier, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    (out / "notes.txt").write_text("my notes\n")
    environment = dict(os.environ, **{TEST_PAUSE: "write"})
    process = subprocess.Popen(
        MIREG + register_arguments(pair, out), stderr=subprocess.PIPE, text=True, env=environment
    )
    while "mireg test pause: write" not in (line := process.stderr.readline()):
        assert line, "the run ended before its pause"
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    left = set(contents(out))
    assert output_folder.LOCK_FILE in left and any(n.startswith(".partial-") for n in left)
    assert main(register_arguments(pair, out)) == 0
    assert sorted(contents(out)) == sorted([*OUTPUT_FILES.values(), "notes.txt"])
    assert (out / "notes.txt").read_text() == "my notes\n"


def test_two_jobs_into_one_folder_in_one_process(pair, tmp_path):
    from napari_mireg.cli.jobs import load_inputs, run_job_steps

    inputs = load_inputs(pair["fixed"], pair["moving"])
    first = run_job_steps(inputs, tmp_path / "out", level_iters=(2,), prealign="none")
    next(first)  # holds the folder now
    second = run_job_steps(inputs, tmp_path / "out", level_iters=(2,), prealign="none")
    with pytest.raises(output_folder.FolderInUseError, match=f"process {os.getpid()}"):
        next(second)
    first.close()
    assert not (tmp_path / "out" / output_folder.LOCK_FILE).exists()


def test_apply_removes_the_temporaries_of_killed_runs_only(pair, earlier, tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    out = tmp_path / "moved.nii.gz"
    stale = tmp_path / f".moved.nii.gz.{gone.pid}.abc123.nii.gz"
    live = tmp_path / f".moved.nii.gz.{os.getpid()}.def456.nii.gz"
    mine = tmp_path / ".moved.nii.gz.notes.nii.gz"
    for path in (stale, live, mine):
        path.write_bytes(b"x" * 100)
    arguments = ["apply", str(earlier / "warp.nii.gz"), str(earlier / "affine.txt")]
    assert main([*arguments, "--to", str(pair["moving"]), "--out", str(out)]) == 0
    assert out.is_file() and not stale.exists() and live.exists() and mine.exists()


@pytest.mark.parametrize("command", ["apply", "overlap", "clean-labels"])
def test_an_output_that_is_an_input_is_refused(pair, earlier, tmp_path, command, capsys):
    labels = tmp_path / "labels.nii.gz"
    shutil.copy(pair["fixed_labels"], labels)
    link = tmp_path / "link.nii.gz"
    link.symlink_to(labels)
    before = labels.read_bytes()
    if command == "apply":
        arguments = ["apply", str(earlier / "warp.nii.gz"), "--labels", "--to", str(labels)]
        arguments += ["--out", str(link)]
        role = "--to"
    elif command == "overlap":
        arguments = ["overlap", str(labels), str(earlier / "warped_labels.nii.gz")]
        arguments += ["--csv", str(link)]
        role = "fixed labels"
    else:
        arguments, role = ["clean-labels", str(labels), str(link)], "input"
    assert main(arguments) == 2
    assert capsys.readouterr().err.strip() == (
        f"mireg {command}: error: {link}: is also the input {role} ({labels}); write the "
        f"output to another file"
    )
    assert labels.read_bytes() == before and link.is_symlink()


def test_the_record_of_a_swap_cut_short_still_protects_and_allows(earlier, tmp_path):
    """A swap killed after it removed the report: the record says what mireg wrote."""
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    output_folder.record_written(out, OUTPUT_FILES.values())
    (out / "report.json").unlink()
    output_folder.check_outputs_free(out, OUTPUT_FILES.values())  # all mireg's: allowed
    (out / output_folder.WRITTEN_FILE).unlink()
    with pytest.raises(files.FileAccessError, match="was not written by mireg"):
        output_folder.check_outputs_free(out, OUTPUT_FILES.values())


def test_a_stale_lock_of_a_killed_batch_worker_goes_with_its_staging(tmp_path):
    from napari_mireg.cli.jobs import remove_staging

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / output_folder.LOCK_FILE).write_text(f"{gone.pid}\n")
    (tmp_path / ".partial-x").mkdir()
    (tmp_path / ".partial-x" / "warped.nii.gz").write_bytes(b"x")
    remove_staging(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_second_run_into_a_folder_in_use_stops_and_the_first_finishes(pair, tmp_path):
    out = tmp_path / "out"
    environment = dict(os.environ, **{TEST_PAUSE: "syn"})
    first = subprocess.Popen(
        MIREG + register_arguments(pair, out), stderr=subprocess.PIPE, text=True, env=environment
    )
    while "mireg test pause: syn" not in (line := first.stderr.readline()):
        assert line, "the first run ended before its pause"
    staged = set(contents(out))
    second = subprocess.run(MIREG + register_arguments(pair, out), capture_output=True, text=True)
    assert second.returncode == 2
    assert second.stderr.strip() == (
        f"mireg register: error: {out}: output folder in use by process {first.pid} (another "
        f"mireg run); wait for it to end or choose another output folder (lock file "
        f"{output_folder.LOCK_FILE})"
    )
    assert set(contents(out)) == staged  # the first run's lock and staging folder kept
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 128 + signal.SIGTERM
    first.stderr.close()
    assert contents(out) == {}


def landmarks(out):
    """Moments of a register job seen from its output folder, in the order they come."""
    return {
        "started": lambda: (out / output_folder.LOCK_FILE).exists(),
        "writing": lambda: any(
            path.is_file() for folder in out.glob(".partial-*") for path in folder.iterdir()
        ),
        "swapping": lambda: (out / output_folder.WRITTEN_FILE).exists(),
    }


@pytest.mark.parametrize("moment", ["started", "writing", "swapping"])
def test_register_killed_at_any_moment_then_rerun_is_complete(pair, earlier, tmp_path, moment):
    """SIGKILL at a moment of the job (its start, its writing, the swap; a moment it passes
    too quickly to be seen ends in a complete job): the folder is either a complete job or
    has no report, holds nothing but mireg's files and the user's, and a rerun completes.
    """
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    (out / "notes.txt").write_text("my notes\n")
    process = subprocess.Popen(
        MIREG + register_arguments(pair, out, labels=moment != "writing"),
        stderr=subprocess.DEVNULL,
    )
    reached = landmarks(out)[moment]
    while not reached():  # wait for the moment, or the end of the job
        try:
            process.wait(timeout=0.005)
            break
        except subprocess.TimeoutExpired:
            pass
    process.kill()
    process.wait()
    report = read_report(out)
    names = set(contents(out))
    assert (out / "notes.txt").read_text() == "my notes\n"
    if report is not None:  # ended (or was killed after its swap): a complete job
        assert {n for n in names if not n.startswith(".")} == {*report["outputs"], "notes.txt"}
    else:  # killed before or during its swap: only mireg's own files beside the notes
        mine = set(OUTPUT_FILES.values()) | {output_folder.LOCK_FILE, output_folder.WRITTEN_FILE}
        assert all(n in mine or n.startswith(".partial-") for n in names - {"notes.txt"}), names
    assert main(register_arguments(pair, out)) == 0
    assert sorted(contents(out)) == sorted([*OUTPUT_FILES.values(), "notes.txt"])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_zombie_holds_no_lock(tmp_path):
    """A process killed but not reaped (a batch worker SIGKILLed with its parent, in a
    container whose init does not reap) is not alive: its lock does not hold the folder.
    """
    import time

    from napari_mireg.files.output_folder import LOCK_FILE, lock_owner, process_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{child.pid}/stat")
    deadline = time.monotonic() + 60
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # ended, not yet reaped
        assert time.monotonic() < deadline
    try:
        (tmp_path / LOCK_FILE).write_text(f"{child.pid}\n")
        assert not process_alive(child.pid)
        assert lock_owner(tmp_path) is None
        assert process_alive(os.getpid())
    finally:
        child.wait()
