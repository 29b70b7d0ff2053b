"""Modules that moved into subpackages keep their old names for one release."""

import importlib
import sys
import warnings


def alias(old: str, new: str) -> None:
    """Make module `old` the module `new`, with a DeprecationWarning naming the new place.

    Parameters
    ----------
    old : str
        The former dotted name (the shim module's ``__name__``).
    new : str
        The dotted name of the module's new place.
    """
    warnings.warn(
        f"{old} moved to {new}; the old name goes in napari-mireg 0.3",
        DeprecationWarning,
        stacklevel=3,
    )
    sys.modules[old] = importlib.import_module(new)
