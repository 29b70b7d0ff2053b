"""The registration options as a form, made from the table of options (``napari_mireg.options``).

One row per option: a control chosen by the option's kind, bounded by its bounds, filled with
its choices and its default, and the option's help and ANTs/greedy equivalent as tooltips.
An option added to the table gets its row here without any change to this module.

A preset (Default, Quick, Affine only) fills the form's controls with a set of options; the
preset picker shows the preset the controls match, or Custom. The run reads the controls
either way: there is one set of options.
"""

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from napari_mireg import options as registration_options

# Presets: the options that differ from the defaults. Quick solves the map at half the
# resolution (the finest level, which takes most of the time, is skipped: ANTs' 40x20x0);
# Affine only runs the prealignment alone (all-zero iterations).
PRESETS = {
    "Default": {},
    "Quick": {"level_iters": (40, 20, 0)},
    "Affine only": {"prealign": "affine", "level_iters": (0,)},
}
DEFAULT, CUSTOM = "Default", "Custom"
# Settings of the data and the machine, which a preset leaves as they are.
KEPT_BY_PRESETS = ("brain_extraction", "threads")
PRESET_TIPS = {
    "Default": "The default options: prealignment, then SyN at every level",
    "Quick": "SyN at half the resolution (the finest level skipped: iterations 40x20x0), "
    "for a first look",
    "Affine only": "The affine prealignment alone, no SyN (iterations 0)",
    CUSTOM: "Options of your own (set in Parameters)",
}


class OptionsForm(QWidget):
    """A form of the registration options; :meth:`options` reads them.

    A preset picker (`preset_choice`, placed by the panel) fills the controls with a
    preset's options and shows the preset they match (Custom when none does). Choosing a
    preset leaves brain extraction and threads as they are.

    Signals
    -------
    changed()
        A control's value changed (a preset's or the user's).

    Parameters
    ----------
    options_class : type, optional
        The options' dataclass (default: ``RegistrationOptions``, as it is when the form is
        made); its fields are the table the form shows.
    parent : QWidget, optional
    """

    changed = Signal()

    def __init__(self, options_class=None, parent=None):
        super().__init__(parent)
        self.options_class = options_class or registration_options.RegistrationOptions
        self._controls = {}
        self._readers = {}
        self._writers = {}
        self._filling = False  # True while set_values fills the controls
        self._form = QFormLayout(self)
        # Tight rows: the whole panel, this form its tallest tab, fits a 1280x800 screen.
        self._form.setVerticalSpacing(2)
        self._form.setContentsMargins(6, 6, 6, 6)
        for option in registration_options.table(self.options_class):
            control, read, write = _control(option)
            self._controls[option.name] = control
            self._readers[option.name] = read
            self._writers[option.name] = write
            _changed_signal(control).connect(self._control_changed)
            tip = option.describe()
            if option.requires is not None:
                problem = option.requires()
                control.setEnabled(problem is None)
                tip = f"{tip} ({problem})" if problem else tip
            control.setToolTip(tip)
            label = QLabel(option.form_label)
            label.setToolTip(tip)
            self._form.addRow(label, _with_peer_value(option, control))
        self.preset_choice = QComboBox()
        for index, name in enumerate([*PRESETS, CUSTOM]):
            self.preset_choice.addItem(name)
            self.preset_choice.setItemData(index, PRESET_TIPS[name], Qt.ItemDataRole.ToolTipRole)
        self.preset_choice.setToolTip(
            "Default, Quick (half resolution) or Affine only; editing the Parameters makes it "
            "Custom. Brain extraction and threads stay as they are"
        )
        self.preset_choice.textActivated.connect(self.apply_preset)
        self._show_preset()

    def control(self, name):
        """The control of an option, by the option's name (e.g. "level_iters")."""
        return self._controls[name]

    def add_row(self, widget):
        """Add a row of another setting below the options (e.g. a check box of the panel)."""
        self._form.addRow(widget)

    def values(self):
        """The values as the controls show them, by option name (not checked yet)."""
        return {name: read() for name, read in self._readers.items()}

    def set_values(self, options):
        """Show a RegistrationOptions (or some of its values, by name) in the controls."""
        values = options.as_dict() if hasattr(options, "as_dict") else dict(options)
        self._filling = True  # one `changed` for all the controls, not one each
        try:
            for name, value in values.items():
                self._writers[name](tuple(value) if isinstance(value, list) else value)
        finally:
            self._filling = False
        self._control_changed()

    def preset_options(self, name):
        """The options of the preset `name`: its values, the defaults elsewhere, and the
        form's brain extraction and threads (OptionError if the form's are bad).
        """
        kept = {key: self._readers[key]() for key in KEPT_BY_PRESETS if key in self._readers}
        return self.options_class.build(PRESETS[name], **kept)

    def apply_preset(self, name):
        """Fill the controls with the preset `name` (Custom changes nothing)."""
        if name in PRESETS:
            self.set_values(self.preset_options(name))
        self._show_preset()

    def preset(self):
        """The preset that the controls match, or "Custom"."""
        try:
            current = self.options()
        except ValueError:
            return CUSTOM
        for name in PRESETS:
            if self.preset_options(name) == current:
                return name
        return CUSTOM

    def _show_preset(self):
        self.preset_choice.blockSignals(True)
        self.preset_choice.setCurrentText(self.preset())
        self.preset_choice.blockSignals(False)

    def _control_changed(self, *_):
        if self._filling:
            return
        self._show_preset()
        self.changed.emit()

    def options(self):
        """The options of the form.

        Returns
        -------
        RegistrationOptions

        Raises
        ------
        OptionError
            A bad value (a ValueError naming the option), e.g. iterations that are not a list
            of integers.
        """
        return self.options_class.build(self.values())


def _control(option):
    """The control of an option, a function reading its value and one showing a value."""
    if option.optional and option.on_value is not None:  # a value that is on or off
        box = QCheckBox(option.caption.format(*option.on_value))
        box.setChecked(option.default is not None)
        return (
            box,
            lambda: option.on_value if box.isChecked() else None,
            lambda value: box.setChecked(value is not None),
        )
    if option.kind == "choice":
        choice = QComboBox()
        choice.addItems(list(option.choices))
        choice.setCurrentText(option.default)
        return choice, choice.currentText, choice.setCurrentText
    if option.kind == "bool":
        box = QCheckBox(option.caption)
        box.setChecked(option.default)
        return box, box.isChecked, box.setChecked
    if option.kind == "iterations":
        line = QLineEdit(option.show(option.default))
        return line, line.text, lambda value: line.setText(option.show(value))
    if option.kind == "int":
        return _int_box(option)
    if option.kind == "float":
        return _float_box(option)
    raise TypeError(f"no form control for option {option.name} of kind {option.kind}")


def _changed_signal(control):
    """The signal a control sends when its value changes."""
    if isinstance(control, QCheckBox):
        return control.toggled
    if isinstance(control, QComboBox):
        return control.currentTextChanged
    if isinstance(control, QLineEdit):
        return control.textChanged
    return control.valueChanged


def _int_box(option):
    """A spin box over the option's bounds; an optional one has one more value below them,
    shown as `none_text` and read as None.
    """
    low, high = int(option.low), int(option.high)
    box = QSpinBox(minimum=low - 1 if option.optional else low, maximum=high)
    box.setSuffix(option.unit)
    if option.optional:
        box.setSpecialValueText(option.none_text)
    box.setValue(low - 1 if option.default is None else option.default)
    return (
        box,
        lambda: None if box.value() < low else box.value(),
        lambda value: box.setValue(low - 1 if value is None else value),
    )


def _float_box(option):
    """A spin box over the option's bounds (an open bound by one step of its last decimal)."""
    box = QDoubleSpinBox()
    box.setDecimals(option.decimals)  # first: the range and value are rounded to it
    low = option.low + 10.0**-option.decimals if option.low_open else option.low
    box.setRange(low, option.high)
    box.setSingleStep(option.step)
    box.setSuffix(option.unit)
    box.setValue(option.default)
    return box, box.value, box.setValue


def _with_peer_value(option, control):
    """The control, with the value in the peer's terms beside it when the table gives one."""
    if option.peer_value is None:
        return control
    readout = QLabel(option.peer_value(option.default))
    readout.setToolTip(option.peer)
    control.valueChanged.connect(lambda value: readout.setText(option.peer_value(value)))
    row = QHBoxLayout()
    row.addWidget(control, 1)
    row.addWidget(readout)
    return row
