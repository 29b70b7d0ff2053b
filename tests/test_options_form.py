"""The options form and the table it is made from: an option added to the table reaches the
API, ``mireg register --help`` and the napari form; the form keeps the table's bounds.
"""

from dataclasses import dataclass

import pytest

pytest.importorskip("napari")

from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QLabel, QSpinBox  # noqa: E402

from napari_mireg import options as registration_options  # noqa: E402
from napari_mireg.cli import main  # noqa: E402
from napari_mireg.gui.options_form import OptionsForm  # noqa: E402
from napari_mireg.gui.widget import RegistrationWidget  # noqa: E402
from napari_mireg.options import (  # noqa: E402
    DEFAULTS,
    OPTIONS,
    OptionError,
    RegistrationOptions,
    option,
)


@dataclass(frozen=True)
class WithDummy(RegistrationOptions):
    """The options with one more in the table, as a new line there would add it."""

    dummy_sigma: float = option(
        "float",
        2.5,
        "A dummy option of the test",
        peer="ANTs: --dummy 2.5",
        low=1.0,
        high=4.0,
        label="Dummy sigma",
        unit=" mm",
        step=0.5,
    )


def test_an_option_added_to_the_table_reaches_the_api_the_help_and_the_form(
    monkeypatch, capsys, make_napari_viewer, tmp_path
):
    monkeypatch.setattr(registration_options, "RegistrationOptions", WithDummy)
    # The API: a default, a check and a message naming the option.
    assert WithDummy().dummy_sigma == 2.5 and WithDummy.build(dummy_sigma="3").dummy_sigma == 3.0
    with pytest.raises(OptionError, match=r"dummy_sigma: must be >= 1 and <= 4, got 5"):
        WithDummy(dummy_sigma=5)
    # `mireg register --help`, and its error line naming the flag.
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no wrapped words
    with pytest.raises(SystemExit):
        main(["register", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[--dummy-sigma DUMMY_SIGMA]" in text  # the usage
    assert (
        "--dummy-sigma DUMMY_SIGMA A dummy option of the test. 1 to 4. ANTs: --dummy 2.5 "
        "(default: 2.5)" in text
    )
    code = main(["register", "f.nii", "m.nii", "--out", str(tmp_path), "--dummy-sigma", "9"])
    assert code == 2
    assert "--dummy-sigma: must be >= 1 and <= 4, got '9'" in capsys.readouterr().err
    # The napari widget's form: a row with its label, bounds, unit and tooltip.
    widget = RegistrationWidget(make_napari_viewer())
    control = widget.options_form.control("dummy_sigma")
    assert isinstance(control, QDoubleSpinBox)
    assert (control.minimum(), control.maximum(), control.value()) == (1.0, 4.0, 2.5)
    assert control.suffix() == " mm" and control.singleStep() == 0.5
    assert "A dummy option of the test" in control.toolTip() and "--dummy 2.5" in control.toolTip()
    labels = [label.text() for label in widget.options_form.findChildren(QLabel)]
    assert "Dummy sigma" in labels
    control.setValue(3.5)
    chosen = widget.options()
    assert isinstance(chosen, WithDummy) and chosen.dummy_sigma == 3.5


def test_the_form_keeps_the_bounds_choices_and_defaults_of_the_table(qtbot):
    form = OptionsForm()
    qtbot.addWidget(form)
    assert form.options() == DEFAULTS
    for spec in OPTIONS:
        control = form.control(spec.name)
        if spec.kind == "int":
            assert isinstance(control, QSpinBox)
            below = 1 if spec.optional else 0  # the value shown as none_text
            assert (control.minimum(), control.maximum()) == (spec.low - below, spec.high)
        elif spec.kind == "float":
            assert isinstance(control, QDoubleSpinBox)
            assert control.maximum() == spec.high
            if spec.low_open:
                assert spec.low < control.minimum() <= spec.low + 0.01
            else:
                assert control.minimum() == spec.low
        elif spec.kind == "choice":
            assert isinstance(control, QComboBox)
            items = tuple(control.itemText(i) for i in range(control.count()))
            assert items == spec.choices
        assert spec.help in control.toolTip()
    assert (form.control("bins").minimum(), form.control("bins").maximum()) == (5, 1024)


def test_the_form_reads_optional_values_and_refuses_bad_ones(qtbot):
    form = OptionsForm()
    qtbot.addWidget(form)
    assert form.control("threads").text() == "all cores" and form.options().threads is None
    form.control("threads").setValue(3)
    form.control("winsorize").setChecked(True)
    form.control("level_iters").setText("5x3")
    chosen = form.options()
    assert (chosen.threads, chosen.winsorize, chosen.level_iters) == (3, (0.005, 0.995), (5, 3))
    form.control("update_sigma").setValue(1.73)
    readouts = [label.text() for label in form.findChildren(QLabel)]
    assert "ANTs var. 3.0" in readouts
    form.control("level_iters").setText("forty")
    with pytest.raises(OptionError) as caught:
        form.options()
    assert caught.value.option == "level_iters"
