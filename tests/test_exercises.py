"""The exercise checkers: right answers pass, wrong or missing ones are reported, never raised."""

import pytest
import torch

from dnbook.exercises import check_close, check_equal, check_function


@pytest.mark.parametrize("answer", [None, ...])
def test_unattempted_answers_are_reported_not_raised(answer, capsys):
    assert check_close("ex", answer, 1.0) is False
    assert check_equal("ex", answer, 1) is False
    assert check_function("ex", answer, torch.sin, [(torch.zeros(2),)]) is False
    assert capsys.readouterr().out.count("not attempted") == 3


def test_check_close_accepts_right_and_rejects_wrong(capsys):
    assert check_close("ex", [1.0, 2.0], torch.tensor([1.0, 2.0]))
    assert not check_close("ex", [1.0, 2.5], torch.tensor([1.0, 2.0]), hint="look again")
    out = capsys.readouterr().out
    assert "correct" in out and "hint: look again" in out


def test_check_equal():
    assert check_equal("ex", (2, 3), (2, 3))
    assert not check_equal("ex", 7, 8)


def test_check_function_compares_every_output_and_survives_errors(capsys):
    def good(x):
        return x.sin(), x.cos()

    def wrong_second(x):
        return x.sin(), x.sin()

    def broken(x):
        raise RuntimeError("boom")

    def reference(x):
        return torch.sin(x), torch.cos(x)

    inputs = [(torch.linspace(0, 1, 5, dtype=torch.float64),)]
    assert check_function("ex", good, reference, inputs)
    assert not check_function("ex", wrong_second, reference, inputs)
    assert not check_function("ex", broken, reference, inputs)
    out = capsys.readouterr().out
    assert "(output 1)" in out and "raised RuntimeError: boom" in out
