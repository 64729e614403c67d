r"""One notation: the library's docstrings use chapter 0's symbols in chapter 0's meanings.

Chapter 0 (``notebooks/00_tour.ipynb``, "The symbols") fixes, among others: :math:`\hat x`
(:math:`\hat X`) is the **normalized** value, before any scale and shift, and the output is
:math:`y` (:math:`Y`); :math:`g` is the DN paper's FC2 group size, never a gradient (a gradient
is :math:`\bar v = \partial L / \partial v`, and at the normalized value :math:`\delta`). Papers
write other letters (the DN paper's eq. 7 is :math:`\hat X = \tilde X \alpha + \lambda`), and a
docstring that copies them contradicts the book. This test scans every docstring of ``dnbook``
for the misuses that have happened: a hatted x defined as the affine output, a ``g`` defined as
a derivative, and an overbar on MABN's statistics :math:`\chi, \psi` (a bar is a gradient; the
moving averages are :math:`\chi^{\mathrm{SMA}}, \psi^{\mathrm{SMA}}`), the last two also in the
chapters' Markdown; and MABN's docstrings for an :math:`r` (SE's and DN's reduction ratio; MABN's
renormalization factor is :math:`\kappa`).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A hatted x (or X) set equal to an expression with a shift added: the affine output.
_HAT_X = r"\\hat\s*\{?\s*[xX]\s*\}?(?:_\{[^}]*\}|_\w)?"
HAT_AS_OUTPUT = re.compile(_HAT_X + r"\s*=[^=,;\n]*?\+\s*\\(?:beta|lambda)\b")
# g (or g_i, g_{nc}) set equal to a derivative: g used as a gradient.
G_AS_GRADIENT = re.compile(
    r"(?<![\w\\.])g(?:_\{[^}]*\}|_\w+)?\s*=\s*(?:\\gamma\s*\\?,?\s*|gamma\s*\*?\s*)?"
    r"(?:\\partial|\\frac\s*\{\s*\\partial|dL/|\\bar)"
)
# An overbar on chi or psi: MABN's moving averages written as if they were gradients.
BAR_ON_STATISTIC = re.compile(r"\\bar\s*\{?\s*\\(?:chi|psi)(?![a-zA-Z])")
RULES = {
    "a hatted x is the normalized value, not the affine output (chapter 0)": HAT_AS_OUTPUT,
    "g is the FC2 group size, never a gradient (chapter 0)": G_AS_GRADIENT,
    "a bar is a gradient; MABN's moving averages are chi^SMA, psi^SMA (chapter 0)": (
        BAR_ON_STATISTIC
    ),
}
# In MABN's docstrings, any lone r (``r``, :math:`r`, (r z)): MABN has no reduction ratio, and its
# renormalization factor is kappa.
MABN = ROOT / "dnbook" / "norms" / "mabn.py"
LONE_R = re.compile(r"(?<![\w\\])r(?!\w)")


def violations(text: str, rules: dict[str, re.Pattern] = RULES) -> list[str]:
    """The rules ``text`` breaks, each with the offending snippet."""
    return [
        f"{rule}: {match.group(0)!r}"
        for rule, pattern in rules.items()
        for match in pattern.finditer(text)
    ]


def docstrings(path: Path) -> list[tuple[str, str]]:
    """(where, docstring) for the module and every class and function of ``path``."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                name = getattr(node, "name", "<module>")
                found.append((f"{path.relative_to(ROOT)}:{name}", doc))
    return found


MODULES = sorted((ROOT / "dnbook").rglob("*.py"))
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT / "dnbook")))
def test_docstrings_follow_chapter_0s_notation(path):
    bad = [f"{where}: {v}" for where, doc in docstrings(path) for v in violations(doc)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_chapter_uses_g_or_a_bar_for_anything_but_a_gradient(path):
    """The chapters too. (Not the hat rule: chapter 5 reads the DN paper's equations in the
    paper's letters, :math:`\\hat X = \\tilde X \\alpha + \\lambda`, and says so.)"""
    cells = json.loads(path.read_text())["cells"]
    g_rule = {k: v for k, v in RULES.items() if v is not HAT_AS_OUTPUT}
    bad = [
        f"{path.name} cell {i}: {v}"
        for i, cell in enumerate(cells)
        if cell["cell_type"] == "markdown"
        for v in violations("".join(cell["source"]), g_rule)
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "text",
    [
        r"\hat X = \tilde X * \alpha + \lambda",  # the paper's eq. 7, copied
        r"\hat{x}_i = \gamma \tilde{x}_i + \beta",
        r"With :math:`g_i = \partial L / \partial \hat{x}_i`",
        r"\qquad g = \gamma \frac{\partial L}{\partial y}",
        "dL/dx from g = dL/dx_hat",
        r"Let :math:`g = \bar Y`",
        r"\bar\chi_t = \frac{1}{B} \sum_{i=0}^{B-1} \chi_{t-i}",
        r"\frac{\delta - z \, \bar{\psi}_t}{\sqrt{\bar \chi_t + \epsilon}}",
    ],
)
def test_the_scan_catches_a_reintroduced_violation(text):
    assert violations(text), text


@pytest.mark.parametrize(
    "text",
    [
        r"\hat{x}_i = \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}}, \quad"
        r" y_i = \gamma \hat{x}_i + \beta",
        r"Y = \hat X * \alpha + \lambda, \qquad \hat X = \frac{X - E[X]}{\sqrt{Var[X] + \epsilon}}",
        r"\delta_i = \partial L / \partial \hat{x}_i = \gamma\, \partial L / \partial y_i",
        "``g`` inputs per group; g = 1 or g = oup",
        r":math:`\max(\lfloor C' / g \rfloor, 1)`",
        r"\chi^{\mathrm{SMA}}_t = \frac{1}{B} \sum_{i=0}^{B-1} \chi_{t-i}, \quad \bar v",
        r"\bar\chiral",
    ],
)
def test_the_scan_passes_the_books_own_notation(text):
    assert not violations(text), violations(text)


def test_mabn_writes_its_renormalization_factor_kappa_not_r():
    found = [
        f"{where}: ...{doc[max(0, m.start() - 30) : m.end() + 30]!r}"
        for where, doc in docstrings(MABN)
        for m in LONE_R.finditer(doc)
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("text", "caught"),
    [
        ("when ``r`` is switched on", True),
        (r"y = \gamma \, (r z) + \beta", True),
        (r"r = \operatorname{clamp}\left(", True),
        (r"\kappa = \operatorname{clamp}\left(\frac{a}{b}\right)", False),
        ("``running_var``, real_B // B, a ratio", False),
    ],
)
def test_the_lone_r_scan(text, caught):
    assert bool(LONE_R.search(text)) is caught
