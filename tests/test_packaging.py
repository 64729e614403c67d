"""The project's own files: conda spec in step with pyproject, code linted and formatted."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _requirement_names(requirements: list[str]) -> set[str]:
    names = set()
    for req in requirements:
        req = req.strip()
        if not req or req.startswith("-e") or req in ("pip", "python") or req.startswith("python="):
            continue
        names.add(re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower())
    return names


def _conda_requirements() -> list[str]:
    """The entries of environment.yml's dependency list, pip section included (no YAML parser
    is needed for this flat format)."""
    items, in_dependencies = [], False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        stripped = line.split("#", 1)[0].strip()
        if not line.startswith(" ") and stripped.endswith(":"):
            in_dependencies = stripped == "dependencies:"
        elif in_dependencies and stripped.startswith("- ") and not stripped.endswith(":"):
            items.append(stripped[2:].strip())
    return items


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = pyproject["dependencies"] + pyproject["optional-dependencies"]["dev"]
    expected = _requirement_names(declared)
    conda = _conda_requirements()
    assert "python=3.11" in conda
    assert "-e .[dev]" in conda, "the pip section must install the package itself"
    assert _requirement_names(conda) == expected


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(command):
    ruff = shutil.which("ruff")
    cmd = [ruff] if ruff else [sys.executable, "-m", "ruff"]
    result = subprocess.run([*cmd, *command, str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
