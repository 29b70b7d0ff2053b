"""An output folder's lock is never left behind by SIGINT or SIGTERM, whenever it comes."""

import signal

import pytest

from napari_mireg.files import output_folder


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_while_the_lock_is_made_leaves_no_lock(tmp_path, monkeypatch, signum):
    made = []
    original = output_folder._make_lock

    def make_then_signal(path):
        original(path)
        made.append(path.read_text())
        signal.raise_signal(signum)  # right after the lock file is made, before the block

    class Stopped(Exception):
        pass

    def stop(s, frame):
        raise Stopped(s)

    monkeypatch.setattr(output_folder, "_make_lock", make_then_signal)
    previous = signal.signal(signum, stop)
    try:
        with pytest.raises(Stopped), output_folder.folder_lock(tmp_path):
            pytest.fail("the held signal arrives before the block runs")
    finally:
        signal.signal(signum, previous)
    assert made and made[0].strip().isdigit()  # the lock was there, with this process's id
    assert not (tmp_path / output_folder.LOCK_FILE).exists()


def test_a_stop_signal_while_the_lock_is_removed_still_removes_it(tmp_path, monkeypatch):
    class Stopped(Exception):
        pass

    def stop(s, frame):
        raise Stopped(s)

    original = output_folder.Path.read_text

    def read_then_signal(self, *args, **kwargs):
        text = original(self, *args, **kwargs)
        if self.name == output_folder.LOCK_FILE:
            signal.raise_signal(signal.SIGINT)  # between reading the lock and removing it
        return text

    previous = signal.signal(signal.SIGINT, stop)
    try:
        with pytest.raises(Stopped), output_folder.folder_lock(tmp_path):
            monkeypatch.setattr(output_folder.Path, "read_text", read_then_signal)
    finally:
        signal.signal(signal.SIGINT, previous)
        monkeypatch.undo()
    assert not (tmp_path / output_folder.LOCK_FILE).exists()
