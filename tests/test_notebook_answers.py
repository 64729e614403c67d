"""No exercise's check cell shows its answer.

A check cell compares the reader's answer with a recomputation (autograd, PyTorch's own layer)
or with a digest of the right answer (``dnbook.exercises.check_digest``). This test keeps it
that way: for every exercise whose answer is known (the table below), it finds the check cell
by the exercise's label, asserts that the cell exists and, where it checks against a digest,
that the digest is the listed answer's (so the table lists the true answers), and then scans
the cell for the answer written out: the number, the expression that gives it, or a hint that
spells it. A second test parses every notebook's check calls and fails where the expected
value is a literal.
"""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path

import pytest

from dnbook.exercises import answer_digest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHECKS = ("check_close", "check_equal", "check_digest", "check_function")

# notebook, exercise label, the right answer (None: checked by recomputation), decimals of the
# digest, and the texts that would give the answer away (numbers match as whole tokens).
KNOWN_ANSWERS = [
    ("01_batch_norm", "exercise 4a", 0.02, 6, ["0.02", "0.98", "1 - 0.98"]),
    ("01_batch_norm", "exercise 4b", 228, None, ["228", "momentum=0.02"]),
    ("02_small_batches", "Exercise 1 (a)", 32, None, ["32", "N * G", "4 * 8"]),
    ("02_small_batches", "Exercise 1 (b)", 768, None, ["768", "12 * 64", "96 // 8 * 64"]),
    ("02_small_batches", "Exercise 1 (c)", 96, None, ["96"]),
    ("02_small_batches", "Exercise 3", None, None, ["sqrt(5)", "1.342", "mu = 4", "-3 /"]),
    ("02_small_batches", "Exercise 4 (a)", 16, None, ["16", "8 * 2", "buffer_size x batch"]),
    ("02_small_batches", "Exercise 4 (b)", 24, None, ["24", "48 / 2", "48 // 2"]),
    ("02_small_batches", "Exercise 4 (c)", 100, None, ["100"]),
    ("03_squeeze_excitation", "Exercise 1", (1254, 49), None, ["1254", "49", "C' = 6"]),
    ("04_weightnet", "Exercise 1", (9, 3, 864), None, ["864", "144 // 16", "C' = 9"]),
    ("04_weightnet", "Exercise 3", 65280, None, ["65280", "C' = 60", "1920"]),
    ("05_dynamic_normalization", "Exercise 2", 1344, None, ["1344", "96 * 12", "G = 6"]),
    ("05_dynamic_normalization", "Exercise 4", None, None, ["2 * (1/2) * (1/2)", "start at 1"]),
    ("12_fast_dynamic_norm", "Exercise 1 (fold)", None, None, ["A = alpha s", "B = lam - mu A"]),
    ("12_fast_dynamic_norm", "Exercise 2 (input gradient)", None, None, ["2/M grad_q", "2/P"]),
    ("01b_scale_invariance", "Exercise 1", None, None, ["/ c", "c * grad", "1 / c"]),
    ("01b_scale_invariance", "Exercise 2", 4.25, 6, ["4.25", "0.25", "4 + ", "2.25"]),
    ("01b_scale_invariance", "Exercise 3", None, None, ["2 * lr * wd", "sqrt(", "** 0.25"]),
    ("06_dnc_failure", "Exercise 1", None, None, ["(x - x.mean()) / (len(x)", "x - x.mean()"]),
    ("06_dnc_failure", "Exercise 3", None, None, ["base_lr * step / warmup_steps", "step - 1 -"]),
    ("07_mobilenetv2", "Exercise 1", (0.1, 0.05, 0.25), 4, ["scaled_lr", "2.5 *", "/ 2"]),
    (
        "11_claims",
        "Exercise 2",
        (("holds", "inconclusive", "not tested", "inconclusive"), -10.4),
        2,
        ["judge(", "PairedGain", "side_of"],
    ),
]


def code_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def check_cells(path: Path, label: str) -> list[str]:
    """The code cells of ``path`` that call a checker with ``label`` as its name."""
    call = re.compile(r"\b(?:" + "|".join(CHECKS) + r")\(\s*" + re.escape(json.dumps(label)))
    return [source for source in code_cells(path) if call.search(source)]


def gives_away(source: str, text: str) -> bool:
    if re.fullmatch(r"-?[\d.]+", text):  # a number: only as a token of its own
        return re.search(r"(?<![\w.])" + re.escape(text) + r"(?![\w.])", source) is not None
    return text in source


@pytest.mark.parametrize(("notebook", "label", "answer", "decimals", "forbidden"), KNOWN_ANSWERS)
def test_check_cell_does_not_show_the_answer(notebook, label, answer, decimals, forbidden):
    chapter = NOTEBOOKS / f"{notebook}.ipynb"
    solution = NOTEBOOKS / "solutions" / f"{notebook}_solutions.ipynb"
    cells = check_cells(chapter, label)
    assert len(cells) == 1, (
        f"{chapter.name}: expected one check cell for {label!r}, found {len(cells)}"
    )
    assert len(check_cells(solution, label)) == 1, f"{solution.name} lacks the check of {label!r}"
    (source,) = cells
    if answer is not None:
        digest = answer_digest(answer, decimals=decimals)
        assert digest in source, f"{label}: the cell's digest is not that of {answer!r}"
        forbidden = [
            *forbidden,
            *(str(a) for a in (answer if isinstance(answer, tuple) else [answer])),
        ]
    shown = [text for text in forbidden if gives_away(source, text)]
    assert not shown, f"{chapter.name}, {label}: the check cell shows {shown}"


def test_the_table_covers_every_hand_computed_exercise():
    """Every check_digest call of the book is in KNOWN_ANSWERS (so the scan above sees it)."""
    listed = {(p[0], p[1]) for p in KNOWN_ANSWERS}
    found = set()
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]*.ipynb")):
        for source in code_cells(path):
            found |= {(path.stem, m) for m in re.findall(r'check_digest\(\s*"([^"]+)"', source)}
    assert found, "no check_digest call found: the scan would be empty"
    assert found <= listed, f"hand-computed exercises missing from KNOWN_ANSWERS: {found - listed}"


def _is_literal(node: ast.AST) -> bool:
    """A number, string or arithmetic of them: an answer written out, not recomputed."""
    if isinstance(node, ast.Constant):
        return node.value is not Ellipsis and node.value is not None
    if isinstance(node, ast.UnaryOp):
        return _is_literal(node.operand)
    if isinstance(node, ast.BinOp):
        return _is_literal(node.left) and _is_literal(node.right)
    if isinstance(node, ast.Tuple | ast.List):
        return bool(node.elts) and all(_is_literal(e) for e in node.elts)
    return False


ALL_NOTEBOOKS = [
    pytest.param(path, id=path.stem) for path in sorted(NOTEBOOKS.glob("[0-9][0-9]*.ipynb"))
]


@pytest.mark.parametrize("path", ALL_NOTEBOOKS)
def test_no_check_compares_with_a_literal(path):
    """check_close and check_equal take the expected value third: it must be computed."""
    offenders = []
    for source in code_cells(path):
        if not any(f"{name}(" in source for name in ("check_close", "check_equal")):
            continue
        tree = ast.parse(source)  # every check cell is plain Python
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") in CHECKS[:2]):
                continue
            expected = node.args[2] if len(node.args) > 2 else None
            expected = expected or next(
                (k.value for k in node.keywords if k.arg == "expected"), None
            )
            assert expected is not None, f"{path.name}: a check call without an expected value"
            if _is_literal(expected):
                offenders.append(ast.unparse(node)[:80])
    assert not offenders, f"{path.name}: check calls with a literal answer: {offenders}"


def test_the_literal_detector_detects():
    def expected_of(code):
        return ast.parse(code).body[0].value

    for code in ["32", "1 - 0.98", "(9, 3, 864)", "-3 / 5 ** 0.5", "'B'"]:
        assert _is_literal(expected_of(code)), code
    for code in ["bn.running_mean.item()", "(a, 3)", "...", "math.sqrt(5)", "None"]:
        assert not _is_literal(expected_of(code)), code
    assert math.isclose(0.02, 1 - 0.98)  # the table's 4a answer is the one the chapter asks for


def _data_assignments(path: Path) -> dict[str, str]:
    """The module-level assignments of UPPER_CASE names in a notebook's code cells (the data an
    exercise hands the reader), as ``ast.dump`` of their values, by name."""
    found: dict[str, str] = {}
    for source in code_cells(path):
        try:
            tree = ast.parse(source)
        except SyntaxError:  # a cell with IPython magics: no exercise data there
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name) and target.id.isupper():
                    found[target.id] = ast.dump(node.value)
    return found


def _shared_data(chapter: Path) -> list[str]:
    solution = NOTEBOOKS / "solutions" / f"{chapter.stem}_solutions.ipynb"
    mine, theirs = _data_assignments(chapter), _data_assignments(solution)
    return sorted(set(mine) & set(theirs))


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in sorted(NOTEBOOKS.glob("[0-9][0-9]*.ipynb"))
        if (NOTEBOOKS / "solutions" / f"{p.stem}_solutions.ipynb").exists()
    ],
    ids=lambda p: p.stem,
)
def test_solutions_work_on_the_chapters_data(path):
    """A solution that copies an exercise's data (a sweep, per-seed accuracies) must copy it
    exactly: else its asserts could pass on data the chapter no longer shows."""
    solution = NOTEBOOKS / "solutions" / f"{path.stem}_solutions.ipynb"
    mine, theirs = _data_assignments(path), _data_assignments(solution)
    differ = [name for name in _shared_data(path) if mine[name] != theirs[name]]
    assert not differ, f"{solution.name} copies {differ} from {path.name} with other values"


def test_the_data_comparison_sees_the_exercises():
    # the chapters whose exercises hand the reader data that the solutions copy
    assert {"SWEEP", "CASE_RUNS", "BN_SEEDS"} <= {
        *_shared_data(NOTEBOOKS / "07_mobilenetv2.ipynb"),
        *_shared_data(NOTEBOOKS / "11_claims.ipynb"),
    }
