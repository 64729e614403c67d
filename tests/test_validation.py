"""The shared argument checks: a bool is never an integer, bounds are inclusive, and the message
names the argument, what it must be and what it was."""

import pytest

from dnbook._io import ConfigError
from dnbook._validation import check_fraction, check_int, check_positive_int


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (True, {}, "n must be an integer, got True"),
        (1.0, {"minimum": 1}, "n must be a positive integer, got 1.0"),
        (-1, {"minimum": 0}, "n must be a non-negative integer, got -1"),
        (3, {"minimum": 0, "maximum": 2}, "n must be an integer from 0 to 2, got 3"),
        (1, {"minimum": 2}, "n must be an integer >= 2, got 1"),
        ("4", {"what": "four"}, "n must be four, got '4'"),
    ],
)
def test_check_int_rejects(value, kwargs, message):
    with pytest.raises(ValueError) as raised:
        check_int("n", value, **kwargs)
    assert str(raised.value) == message


@pytest.mark.parametrize(("value", "kwargs"), [(0, {"minimum": 0}), (2, {"maximum": 2}), (-5, {})])
def test_check_int_accepts_the_bounds(value, kwargs):
    assert check_int("n", value, **kwargs) == value


def test_check_int_raises_the_error_asked_for():
    with pytest.raises(ConfigError):
        check_int("seed", -1, minimum=0, error=ConfigError)
    assert check_positive_int("n", 1) == 1


@pytest.mark.parametrize("value", [0, 0.5, 1])
def test_check_fraction_accepts_the_closed_interval(value):
    assert check_fraction("p", value) == value


@pytest.mark.parametrize("value", [-0.1, 1.5, True, "0.5", None])
def test_check_fraction_rejects(value):
    with pytest.raises(ValueError, match="p must be a number in"):
        check_fraction("p", value)


def test_check_fraction_allows_none_when_asked():
    assert check_fraction("momentum", None, allow_none=True) is None
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\] or None, got 2"):
        check_fraction("momentum", 2, allow_none=True)
