"""Registrations are generators of steps; this runs one to its end."""

from collections.abc import Generator
from typing import Any, TypeVar

ReturnValue = TypeVar("ReturnValue")


def run_to_end(steps: Generator[Any, Any, ReturnValue]) -> ReturnValue:
    """Exhaust a generator and return its return value (e.g. a Result).

    Parameters
    ----------
    steps : generator
        A registration's steps (its return value is what the registration gives).

    Returns
    -------
    object
        The generator's return value.
    """
    while True:
        try:
            next(steps)
        except StopIteration as finished:
            return finished.value
