"""The registration options as a form, made from the table of options (``napari_mireg.options``).

One row per option: a control chosen by the option's kind, bounded by its bounds, filled with
its choices and its default, and the option's help and ANTs/greedy equivalent as tooltips.
An option added to the table gets its row here without any change to this module.
"""

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


class OptionsForm(QWidget):
    """A form of the registration options; :meth:`options` reads them.

    Parameters
    ----------
    options_class : type, optional
        The options' dataclass (default: ``RegistrationOptions``, as it is when the form is
        made); its fields are the table the form shows.
    parent : QWidget, optional
    """

    def __init__(self, options_class=None, parent=None):
        super().__init__(parent)
        self.options_class = options_class or registration_options.RegistrationOptions
        self._controls = {}
        self._readers = {}
        self._form = QFormLayout(self)
        # Tight rows: the whole panel, this form its tallest tab, fits a 1280x800 screen.
        self._form.setVerticalSpacing(2)
        self._form.setContentsMargins(6, 6, 6, 6)
        for option in registration_options.table(self.options_class):
            control, read = _control(option)
            self._controls[option.name] = control
            self._readers[option.name] = read
            tip = option.describe()
            if option.requires is not None:
                problem = option.requires()
                control.setEnabled(problem is None)
                tip = f"{tip} ({problem})" if problem else tip
            control.setToolTip(tip)
            label = QLabel(option.form_label)
            label.setToolTip(tip)
            self._form.addRow(label, _with_peer_value(option, control))

    def control(self, name):
        """The control of an option, by the option's name (e.g. "level_iters")."""
        return self._controls[name]

    def add_row(self, widget):
        """Add a row of another setting below the options (e.g. a check box of the panel)."""
        self._form.addRow(widget)

    def values(self):
        """The values as the controls show them, by option name (not checked yet)."""
        return {name: read() for name, read in self._readers.items()}

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
    """The control of an option and a function reading its value."""
    if option.optional and option.on_value is not None:  # a value that is on or off
        box = QCheckBox(option.caption.format(*option.on_value))
        box.setChecked(option.default is not None)
        return box, lambda: option.on_value if box.isChecked() else None
    if option.kind == "choice":
        choice = QComboBox()
        choice.addItems(list(option.choices))
        choice.setCurrentText(option.default)
        return choice, choice.currentText
    if option.kind == "bool":
        box = QCheckBox(option.caption)
        box.setChecked(option.default)
        return box, box.isChecked
    if option.kind == "iterations":
        line = QLineEdit(option.show(option.default))
        return line, line.text
    if option.kind == "int":
        return _int_box(option)
    if option.kind == "float":
        return _float_box(option)
    raise TypeError(f"no form control for option {option.name} of kind {option.kind}")


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
    return box, lambda: None if box.value() < low else box.value()


def _float_box(option):
    """A spin box over the option's bounds (an open bound by one step of its last decimal)."""
    box = QDoubleSpinBox()
    box.setDecimals(option.decimals)  # first: the range and value are rounded to it
    low = option.low + 10.0**-option.decimals if option.low_open else option.low
    box.setRange(low, option.high)
    box.setSingleStep(option.step)
    box.setSuffix(option.unit)
    box.setValue(option.default)
    return box, box.value


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
