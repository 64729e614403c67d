"""Check cells for the book's exercises.

Each exercise leaves a placeholder (``...``) for the reader to replace. Its check cell calls one
of these functions, which prints a verdict and returns ``True`` only for a right answer. They
never raise, so an unattempted exercise does not stop the notebook; the solution notebooks
``assert`` the return value, so CI fails if a published solution stops being right.

A check cell must not show its answer: it compares against a recomputation (autograd, PyTorch's
own layer) that the reader cannot read off, or, for a number worked out by hand, against
``answer_digest(answer)``, a hash of the answer (``check_digest``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch

# Mixed into every digest, so that the digest of a small number is not a well-known sha256.
_SALT = "dnbook-exercise:"


def _not_attempted(name: str, answer: object) -> bool:
    if answer is None or answer is Ellipsis:
        print(f"{name}: not attempted yet — replace the `...` and run the cell again.")
        return True
    return False


def check_close(
    name: str,
    answer: object,
    expected: object,
    *,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    hint: str = "",
) -> bool:
    """Compare a numeric answer (number, array or tensor) with the expected value."""
    if _not_attempted(name, answer):
        return False
    try:
        expected_t = torch.as_tensor(expected)
        answer_t = torch.as_tensor(answer, dtype=expected_t.dtype, device=expected_t.device)
        torch.testing.assert_close(answer_t, expected_t, atol=atol, rtol=rtol)
    except (AssertionError, TypeError, ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0]
        print(f"{name}: not quite. {reason}" + (f"\n  hint: {hint}" if hint else ""))
        return False
    print(f"{name}: correct.")
    return True


def check_equal(name: str, answer: object, expected: object, *, hint: str = "") -> bool:
    """Compare an exact answer (an integer count, a string, a shape) with the expected value."""
    if _not_attempted(name, answer):
        return False
    if answer != expected:
        print(f"{name}: not quite: got {answer!r}." + (f"\n  hint: {hint}" if hint else ""))
        return False
    print(f"{name}: correct.")
    return True


def check_function(
    name: str,
    candidate: Callable | None,
    reference: Callable,
    inputs: list[tuple],
    *,
    atol: float = 1e-8,
    rtol: float = 1e-6,
    hint: str = "",
) -> bool:
    """Call ``candidate`` and ``reference`` on each tuple of ``inputs`` and compare the results
    (tensors, or tuples of tensors)."""
    if _not_attempted(name, candidate):
        return False
    for args in inputs:
        try:
            got = candidate(*args)
        except Exception as err:  # the reader's code: report, never crash the notebook
            print(f"{name}: your function raised {type(err).__name__}: {err}")
            return False
        if got is None or got is Ellipsis:
            return _not_attempted(name, None) and False
        want = reference(*args)
        got_seq = got if isinstance(got, tuple | list) else (got,)
        want_seq = want if isinstance(want, tuple | list) else (want,)
        if len(got_seq) != len(want_seq):
            print(f"{name}: expected {len(want_seq)} outputs, got {len(got_seq)}.")
            return False
        for i, (g, w) in enumerate(zip(got_seq, want_seq, strict=True)):
            try:
                g_t, w_t = torch.as_tensor(g), torch.as_tensor(w)
                torch.testing.assert_close(g_t, w_t, atol=atol, rtol=rtol)
            except (AssertionError, TypeError, ValueError, RuntimeError) as err:
                reason = str(err).strip().splitlines()[0]
                which = f" (output {i})" if len(want_seq) > 1 else ""
                print(f"{name}: not quite{which}. {reason}" + (f"\n  hint: {hint}" if hint else ""))
                return False
    print(f"{name}: correct on {len(inputs)} test input(s).")
    return True


def _canonical(answer: object, decimals: int | None) -> str:
    """A text that two equal answers share: integers as integers (``32``, ``32.0`` and
    ``torch.tensor(32)`` alike), floats rounded to ``decimals`` places, sequences, arrays and
    tensors element by element."""
    if isinstance(answer, str):
        return repr(answer)
    if isinstance(answer, torch.Tensor) or type(answer).__module__ == "numpy":
        answer = torch.as_tensor(answer).tolist()
    if isinstance(answer, tuple | list):
        return "(" + ",".join(_canonical(a, decimals) for a in answer) + ")"
    if isinstance(answer, bool):
        return str(answer)
    value = float(answer)  # raises TypeError/ValueError for anything else
    if decimals is None:
        if not value.is_integer():
            raise ValueError(f"expected a whole number (no `decimals` given), got {answer!r}")
        return str(int(value))
    if not math.isfinite(value):
        return str(value)
    rounded = f"{value:.{decimals}f}"
    return "0." + "0" * decimals if float(rounded) == 0 else rounded  # no "-0.000"


def answer_digest(answer: object, *, decimals: int | None = None) -> str:
    """The 16-hex-digit digest that ``check_digest`` compares with: a sha256 of the answer's
    canonical text (whole numbers exactly; other numbers rounded to ``decimals`` places)."""
    text = _SALT + _canonical(answer, decimals)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_digest(
    name: str,
    answer: object,
    digest: str,
    *,
    decimals: int | None = None,
    hint: str = "",
) -> bool:
    """Compare an answer worked out by hand with the digest of the right one
    (``answer_digest(right_answer, decimals=decimals)``), so that the check cell does not
    show the answer. Whole numbers must match exactly; with ``decimals``, numbers are
    compared after rounding to that many places."""
    if _not_attempted(name, answer):
        return False
    try:
        got = answer_digest(answer, decimals=decimals)
    except (TypeError, ValueError) as err:
        print(f"{name}: not quite: {err}" + (f"\n  hint: {hint}" if hint else ""))
        return False
    if got != digest:
        shown = f"{answer!r}" if len(repr(answer)) < 80 else f"a {type(answer).__name__}"
        print(f"{name}: not quite: got {shown}." + (f"\n  hint: {hint}" if hint else ""))
        return False
    print(f"{name}: correct.")
    return True
