"""The library's shape: stored results keep their hashes, and (below) its modules import each
other without cycles."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dnbook.engine.config import TrainConfig
from dnbook.engine.environment import REPO_ROOT
from dnbook.experiments import EXPERIMENTS, configs

RESULTS = REPO_ROOT / "results"
PINNED = json.loads((Path(__file__).parent / "registry_hashes.json").read_text())

# Stored runs whose file name is not their config's hash today, and why. These four cpu_v1 runs
# were stored under a short norm spec before the hash expanded specs to every option; the
# layer's defaults have moved since, so the short spec now expands to another layer.
LEGACY_HASHES = {
    "cpu_v1/0bc1ad346323": "dnc:r=16,merge=fc1 stored before specs were expanded",
    "cpu_v1/50fe93ea2e64": "dnc:r=16,merge=fc1 stored before specs were expanded",
    "cpu_v1/a75739739bd8": "dnc:r=16,merge=fc2 stored before specs were expanded",
    "cpu_v1/d6225e95bbc1": "dnb:r=16,g=1 stored before specs were expanded",
}


def _stored_runs() -> list[Path]:
    return sorted(
        path for path in RESULTS.glob("*/*.json") if re.fullmatch(r"[0-9a-f]{12}", path.stem)
    )


@pytest.mark.parametrize("path", _stored_runs(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_stored_run_rebuilds_its_hash(path):
    key = f"{path.parent.name}/{path.stem}"
    rebuilt = TrainConfig.from_dict(json.loads(path.read_text())["config"]).hash()
    assert (rebuilt == path.stem) != (key in LEGACY_HASHES), key


@pytest.mark.parametrize(
    ("profile", "name"), [(p, n) for p, names in PINNED.items() for n in names]
)
def test_registry_keeps_its_hashes(profile, name):
    """Every hash pinned from main before the refactor is still produced (experiments added
    since may produce more)."""
    assert name in EXPERIMENTS
    produced = {config.hash() for config in configs(name, profile)}
    assert set(PINNED[profile][name]) <= produced
