"""Argument checks shared across dnbook: integers and fractions, checked the same way everywhere
(a ``bool`` is not an integer), failing early with a message that names the argument, what it
must be, and what it was."""

from __future__ import annotations


def check_int(
    name: str,
    value: object,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    what: str | None = None,
    error: type[Exception] = ValueError,
) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) in ``[minimum, maximum]``.

    Args:
        name: the argument's name, first word of the message.
        value: what was passed.
        minimum: the smallest value allowed. Default: none
        maximum: the largest value allowed. Default: none
        what: what the value must be, in words. Default: said from the bounds
        error: the exception raised. Default: ``ValueError``

    Example:
        >>> check_int("seed", 3, minimum=0)
        3
        >>> check_int("batch_size", 0, minimum=1)
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be a positive integer, got 0
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        raise error(f"{name} must be {what or _bounds(minimum, maximum)}, got {value!r}")
    return value


def _bounds(minimum: int | None, maximum: int | None) -> str:
    if maximum is not None:
        return f"an integer from {minimum} to {maximum}"
    return {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
        minimum, f"an integer >= {minimum}"
    )


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is a positive ``int``, else raise ``ValueError``."""
    return check_int(name, value, minimum=1)


def check_fraction(name: str, value: object, *, allow_none: bool = False) -> float | None:
    """Return ``value`` if it is a number in [0, 1] (or ``None`` where ``allow_none``), else
    raise ``ValueError``: a momentum, a probability."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        allowed = "in [0, 1] or None" if allow_none else "a number in [0, 1]"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value
