"""An output folder in which only files the tool wrote can ever be replaced or removed.

Three things make it so:

- a later run replaces or removes an output only if a mireg run wrote it: the
  ``report.json`` of a complete job lists its outputs, and while outputs are swapped in a
  record (``.mireg-written.json``, removed once the new report is in place) lists the old
  and the new ones, so a swap cut short by SIGKILL leaves no file unaccounted for;
- a lock (``.mireg-lock``, made with ``O_EXCL``, holding the process id) for one run at a
  time: a second run into the same folder is refused ("in use by process N") instead of
  removing the first one's staging folder; a lock whose process is gone (SIGKILL, power
  loss) is stale and taken over;
- checks before any work: an output name held by a file the tool did not write, an input
  that is (or links to) a file the run would replace, and the current folder holding
  other files are each refused with one line naming the file.
"""

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from napari_mireg._typing import PathLike
from napari_mireg.files import FileAccessError, InputError, resolved, write_text

__all__ = [
    "LOCK_FILE",
    "WRITTEN_FILE",
    "FolderInUseError",
    "check_inputs_apart",
    "check_outputs_free",
    "folder_lock",
    "lock_owner",
    "process_alive",
    "record_written",
    "stop_signals_held",
    "written_files",
]

WRITTEN_FILE = ".mireg-written.json"
LOCK_FILE = ".mireg-lock"
REPORT_FILE = "report.json"
# A lock file still empty after this long was left between its creation and its pid line.
EMPTY_LOCK_SECONDS = 10.0


def _access_error(path, problem, errno=None):
    return FileAccessError(path, problem, errno)


class FolderInUseError(FileAccessError):
    """Another live process holds the output folder's lock."""

    def __init__(self, folder: PathLike, pid: int | None) -> None:
        who = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            folder,
            f"output folder in use by {who} (another mireg run); wait for it to end or "
            f"choose another output folder (lock file {LOCK_FILE})",
        )
        self.pid = pid


def written_files(folder: PathLike) -> set[str]:
    """Names of the files in `folder` that a mireg run wrote (from its record or report)."""
    folder = Path(folder)
    names: set[str] = set()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        names |= set(json.loads((folder / WRITTEN_FILE).read_text())["files"])
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        names |= set(json.loads((folder / REPORT_FILE).read_text())["outputs"])
    return {name for name in names if isinstance(name, str) and Path(name).name == name}


def record_written(folder: PathLike, names: Iterable[str]) -> None:
    """Record `names` as the files mireg wrote into `folder` (written atomically)."""
    text = json.dumps({"files": sorted(set(names))}, indent=2) + "\n"
    write_text(Path(folder) / WRITTEN_FILE, text)


def check_outputs_free(folder: PathLike, outputs: Iterable[str]) -> None:
    """Refuse when a file named like an output is in `folder` and mireg did not write it.

    Also refuses the current folder when it holds anything mireg did not write (an empty
    or ``.`` output folder is almost always a slip).

    Raises
    ------
    FileAccessError
        One line naming the file (or the folder) and what to do.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    written = written_files(folder)
    for name in sorted(outputs):
        target = folder / name
        if (target.exists() or target.is_symlink()) and name not in written:
            raise _access_error(
                target,
                "exists and was not written by mireg; it would be replaced: move it away "
                "or choose another output folder",
            )
    if folder.resolve() == Path.cwd().resolve():
        own = written | {WRITTEN_FILE, LOCK_FILE}
        others = sorted(
            entry.name
            for entry in folder.iterdir()
            if entry.name not in own and not entry.name.startswith(".partial-")
        )
        if others:
            raise _access_error(
                folder.resolve(),
                f"the output folder is the current folder and holds files mireg did not "
                f"write (e.g. {others[0]}): give --out a folder of its own",
            )


def check_inputs_apart(
    inputs: Mapping[str, PathLike], folder: PathLike, outputs: Iterable[str]
) -> None:
    """Refuse when an input is a file the run would replace or remove in `folder`.

    Paths are compared resolved (symbolic links followed) and as the same file on disk
    (hard links), so a link to an output counts as that output.

    Raises
    ------
    InputError
        Naming the input and the output it would be replaced by.
    """
    folder = Path(folder).absolute()
    targets = [folder / name for name in outputs]
    for role, given in inputs.items():
        if not given:
            continue
        path = Path(given)
        for target in targets:
            same = path.absolute() == target or resolved(path) == resolved(target)
            if not same and target.exists() and path.exists():
                same = os.path.samefile(path, target)
            if same:
                raise InputError(
                    given,
                    f"the {role.replace('_', ' ')} input would be replaced by this run's "
                    f"{target.name}: choose another output folder",
                )


def process_alive(pid: int) -> bool:
    """True when a process with this id runs (ours included); a zombie does not.

    A process killed with its parent (SIGKILL to a batch's process group) stays a zombie
    until something reaps it, which in a container without an init that reaps may be never;
    its lock must not hold the folder.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    try:  # Linux: the state follows the command name, which may hold spaces and brackets
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS) or the process just ended: as kill() said
    return state not in ("Z", "X")


def lock_owner(folder: PathLike) -> int | None:
    """The id of the live process holding `folder`'s lock, or None when it is free or stale.

    An unreadable or empty lock younger than a few seconds counts as held (its owner may
    not have written its id yet) and is reported as -1.
    """
    path = Path(folder) / LOCK_FILE
    try:
        text = path.read_text().strip()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError:
        return -1
    if not text.isdigit():
        return -1 if age < EMPTY_LOCK_SECONDS else None
    pid = int(text)
    return pid if process_alive(pid) else None


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the ``with`` block (a few file operations).

    A signal in the middle of a lock's creation or removal, or of the swap of an output set,
    would leave a lock or half a set behind: held, it arrives once the block is done. A
    blocked signal mask would not do: the kernel hands a process signal to any thread that
    does not block it (OpenMP's, BLAS's), and Python then runs its handler in the main
    thread all the same. So the handlers themselves only note the signal during the block,
    and it is raised again after. Off the main thread (where handlers cannot be set)
    nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived = []
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda s, _: arrived.append(s)) for signum in stops}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if arrived:
            signal.raise_signal(arrived[0])


@contextlib.contextmanager
def folder_lock(folder: PathLike) -> Iterator[None]:
    """Hold `folder`'s lock for the duration; refuse it when a live process holds it.

    SIGINT and SIGTERM are held back while the lock is made and while it is removed
    (:func:`stop_signals_held`), so a stop signal never leaves it behind: one that comes
    while it is made arrives inside the block, whose exit removes it.

    Raises
    ------
    FolderInUseError
        Another live process (or this one, in another job) holds the lock.
    FileAccessError
        The lock file cannot be made.
    """
    path = Path(folder) / LOCK_FILE
    made = False
    try:
        with stop_signals_held():  # a signal held here is raised inside the try
            _make_lock(path)
            made = True
        yield
    finally:
        if made:
            with stop_signals_held(), contextlib.suppress(OSError):
                if path.read_text().strip() == str(os.getpid()):
                    path.unlink()


def _make_lock(path: Path) -> None:
    """Create the lock file `path` holding this process's id (a stale one is taken over)."""
    folder = path.parent
    for _ in range(3):
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = lock_owner(folder)
            if owner is not None:
                raise FolderInUseError(folder, owner if owner > 0 else None) from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        except OSError as error:
            raise _access_error(
                folder, f"output folder cannot be locked ({error.strerror or error})", error.errno
            ) from error
        break
    else:
        raise FolderInUseError(folder, None)
    with os.fdopen(descriptor, "w") as lock:
        lock.write(f"{os.getpid()}\n")
