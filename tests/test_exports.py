"""The widget's exports under Xvfb: "Export all" writes the `mireg register` file set, in a
worker thread while the window's event loop keeps running; errors show in the panel.
"""

import json
import threading

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("napari")

from qtpy.QtCore import QTimer  # noqa: E402

from napari_mireg import files  # noqa: E402
from napari_mireg.cli import main  # noqa: E402
from napari_mireg.cli.jobs import OUTPUT_FILES  # noqa: E402
from napari_mireg.gui import exports as _exports  # noqa: E402
from napari_mireg.gui.sample import sample_data_path, sample_pair  # noqa: E402
from napari_mireg.gui.widget import RegistrationWidget  # noqa: E402

RUN_TIMEOUT_MS = 120_000
ITERATIONS, PREALIGN = "6,3", "rigid"


@pytest.fixture
def finished_run(make_napari_viewer, qtbot):
    """A widget that has registered the sample pair (read from its files)."""
    viewer = make_napari_viewer()
    for data, kwargs, kind in sample_pair():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = RegistrationWidget(viewer)
    widget.options_form.control("level_iters").setText(ITERATIONS)
    widget.options_form.control("prealign").setCurrentText(PREALIGN)
    viewer.window.add_dock_widget(widget)
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=RUN_TIMEOUT_MS)
    assert widget.summary is not None
    return widget


def export_and_wait(qtbot, panel, folder):
    with qtbot.waitSignal(panel.finished, timeout=RUN_TIMEOUT_MS) as done:
        assert panel.export_all(folder) is not None
    qtbot.waitUntil(lambda: not panel.busy, timeout=RUN_TIMEOUT_MS)
    return done.args


def test_export_all_writes_the_register_file_set_off_the_gui_thread(
    finished_run, qtbot, tmp_path, monkeypatch
):
    panel = finished_run.results.exports
    assert panel.all_button.isEnabled()
    folder = tmp_path / "exported"
    monkeypatch.setattr(
        _exports.QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(folder)
    )
    # The warps are written only once the event loop has ticked three times meanwhile: with
    # the writing on the GUI thread no tick could come, and the wait would run out.
    ticks, ticked = [], threading.Event()
    timer = QTimer()
    timer.setInterval(5)

    def tick():
        ticks.append(panel.busy)
        if sum(ticks) >= 3:
            ticked.set()

    timer.timeout.connect(tick)
    writers, seen = [], {}
    save_displacement = files.save_displacement

    def waiting_save(*args, **kwargs):
        writers.append(threading.current_thread() is threading.main_thread())
        seen.setdefault("ticked", ticked.wait(timeout=60))
        seen.setdefault("button", panel.all_button.isEnabled())
        seen.setdefault("status", panel.status.text())
        return save_displacement(*args, **kwargs)

    monkeypatch.setattr(files, "save_displacement", waiting_save)
    timer.start()
    with qtbot.waitSignal(panel.finished, timeout=RUN_TIMEOUT_MS) as done:
        panel.all_button.click()  # asks once for the folder, then writes in the background
    timer.stop()
    qtbot.waitUntil(lambda: not panel.busy, timeout=RUN_TIMEOUT_MS)
    assert writers == [False, False]  # the forward and the inverse warp, in the worker
    assert seen["ticked"] and sum(ticks) >= 3
    assert not seen["button"] and seen["status"] == f"Writing the outputs into {folder}..."
    succeeded, status = done.args
    assert succeeded and status.startswith(f"Wrote 8 files into {folder}")
    assert panel.status.text() == status and panel.all_button.isEnabled()

    # The same file set as `mireg register` on the files of the same layers and options.
    out = tmp_path / "registered"
    arguments = ["register", str(sample_data_path("fixed")), str(sample_data_path("moving"))]
    arguments += ["--fixed-labels", str(sample_data_path("fixed_labels"))]
    arguments += ["--moving-labels", str(sample_data_path("moving_labels"))]
    arguments += ["--iterations", ITERATIONS, "--prealign", PREALIGN, "--out", str(out)]
    assert main(arguments) == 0
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES.values())
    report = json.loads((folder / "report.json").read_text())
    assert report["outputs"] == sorted(OUTPUT_FILES.values())
    assert report["inputs"]["fixed"]["path"] == str(sample_data_path("fixed"))
    assert report["parameters"]["level_iters"] == [6, 3] and report["folds"] == 0
    assert report["overlap"]["whole_dice"] == pytest.approx(finished_run.table.whole_dice)

    # The files load: the warps are 5D ITK vector images on the fixed file's grid.
    fixed_file = nib.load(sample_data_path("fixed"))
    for name in ("warp.nii.gz", "inverse_warp.nii.gz"):
        warp = nib.load(folder / name)
        assert warp.shape == fixed_file.shape + (1, 3) and int(warp.header["intent_code"]) == 1007
        np.testing.assert_allclose(warp.affine, fixed_file.affine, atol=1e-4)
        assert isinstance(files.load_transform(folder / name), files.DisplacementField)
    warped_labels = files.load_volume(folder / "warped_labels.nii.gz", labels=True)
    np.testing.assert_allclose(warped_labels.affine, fixed_file.affine, atol=1e-4)
    assert (folder / "overlap.csv").read_text() == finished_run.table.to_csv_text()
    # affine.mat is the run's prealignment as ANTsPy reads and inverts it.
    ants = pytest.importorskip("ants")
    mat = ants.read_transform(str(folder / "affine.mat"), precision="double")
    lps = files.RAS_TO_LPS @ finished_run.result.prealignment.matrix @ files.RAS_TO_LPS
    np.testing.assert_allclose(mat.parameters[:9], lps[:3, :3].ravel(), atol=1e-12)
    np.testing.assert_allclose(mat.parameters[9:], lps[:3, 3], atol=1e-9)
    inverse = np.linalg.inv(lps)
    parameters = mat.invert().parameters  # single precision
    np.testing.assert_allclose(parameters[:9], inverse[:3, :3].ravel(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(parameters[9:], inverse[:3, 3], rtol=1e-6, atol=1e-5)


def test_export_errors_show_in_the_panel_and_single_files_write_in_the_background(
    finished_run, qtbot, tmp_path, monkeypatch
):
    panel = finished_run.results.exports
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "warp.nii.gz").write_text("the user's own file")
    succeeded, status = export_and_wait(qtbot, panel, folder)
    assert not succeeded
    assert status == (
        f"Export failed: {folder / 'warp.nii.gz'}: exists and was not written by mireg; it "
        "would be replaced: move it away or choose another output folder"
    )
    assert panel.status.text() == status and panel.all_button.isEnabled()
    assert sorted(p.name for p in folder.iterdir()) == ["warp.nii.gz"]
    assert (folder / "warp.nii.gz").read_text() == "the user's own file"

    # A single file through its button: the .mat asked for, written by the worker.
    target = tmp_path / "prealignment.mat"
    monkeypatch.setattr(
        _exports.QFileDialog, "getSaveFileName", lambda *args, **kwargs: (str(target), "")
    )
    affine_button = next(b for b in panel.export_buttons if b.text() == "Affine...")
    with qtbot.waitSignal(panel.finished, timeout=RUN_TIMEOUT_MS) as done:
        affine_button.click()
        assert panel.busy and not affine_button.isEnabled()
    assert done.args == [True, f"Wrote {target}"]
    np.testing.assert_allclose(
        files.load_transform(target).matrix, finished_run.result.prealignment.matrix, atol=1e-12
    )
