"""Check cells for the book's exercises.

Each exercise leaves a placeholder (``...``) for the reader to replace. Its check cell calls one
of these functions, which prints a verdict and returns ``True`` only for a right answer. They
never raise, so an unattempted exercise does not stop the notebook; the solution notebooks
``assert`` the return value, so CI fails if a published solution stops being right.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


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
