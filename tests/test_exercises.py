"""The exercise checkers: right answers pass, wrong or missing ones are reported, never raised."""

import pytest
import torch

from dnbook.exercises import answer_digest, check_close, check_digest, check_equal, check_function


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


@pytest.mark.parametrize(
    ("right", "same", "decimals"),
    [
        (32, [32.0, torch.tensor(32), torch.tensor(32.0)], None),
        ((9, 2, 2592), [[9, 2, 2592], torch.tensor([9, 2, 2592])], None),
        (0.02, [1 - 0.98, torch.tensor(0.0200000001, dtype=torch.float64)], 6),
        (-1.3416407864998738, [-3 / 5**0.5], 9),
        ("shift", ["shift"], None),
    ],
)
def test_check_digest_accepts_every_form_of_the_right_answer(right, same, decimals, capsys):
    digest = answer_digest(right, decimals=decimals)
    assert len(digest) == 16 and int(digest, 16) >= 0
    for answer in [right, *same]:
        assert check_digest("ex", answer, digest, decimals=decimals), answer
    assert capsys.readouterr().out.count("correct.") == 1 + len(same)


@pytest.mark.parametrize(
    ("right", "wrong", "decimals"),
    [
        (32, [31, 33, 32.5, (32,), "32", -32], None),
        ((9, 2, 2592), [(9, 2, 2593), (2, 9, 2592), (9, 2)], None),
        (0.02, [0.98, 0.021, -0.02, float("nan")], 6),
        (0.0, [1e-3], 6),
    ],
)
def test_check_digest_rejects_wrong_answers_with_a_hint(right, wrong, decimals, capsys):
    digest = answer_digest(right, decimals=decimals)
    for answer in wrong:
        assert not check_digest("ex", answer, digest, decimals=decimals, hint="think"), answer
    out = capsys.readouterr().out
    assert out.count("not quite") == len(wrong) and out.count("hint: think") == len(wrong)


def test_check_digest_reports_unattempted_and_unreadable_answers(capsys):
    digest = answer_digest(3)
    assert not check_digest("ex", ..., digest)
    assert not check_digest("ex", object(), digest)
    assert not check_digest("ex", 2.5, digest)  # a fraction where a whole number is due
    out = capsys.readouterr().out
    assert "not attempted" in out and out.count("not quite") == 2


def test_negative_zero_and_zero_share_a_digest():
    assert answer_digest(-0.0000001, decimals=3) == answer_digest(0.0, decimals=3)
