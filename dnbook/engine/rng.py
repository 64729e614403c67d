"""Seeding, and the state of every random generator a run draws from (Python, NumPy, torch,
CUDA) in a form a checkpoint can hold: a run resumed from its checkpoint draws what it would
have drawn had it never stopped."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from dnbook._io import ConfigError
from dnbook._validation import check_int

SEED_MAX = 2**32 - 1  # NumPy's legacy generator takes seeds in [0, 2**32 - 1]


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed Python, NumPy and torch; on CUDA also make cuDNN pick deterministic kernels."""
    check_int("seed", seed, minimum=0, maximum=SEED_MAX, error=ConfigError)
    random.seed(seed)
    # The legacy global NumPy generator, on purpose: it is the one third-party code draws from.
    np.random.seed(seed)  # noqa: NPY002
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    """Every global generator's state, in types a ``weights_only`` load accepts (lists,
    dicts, numbers, tensors): no NumPy arrays, no pickled classes."""
    version, internal, gauss_next = random.getstate()
    numpy = np.random.get_state(legacy=False)  # noqa: NPY002
    state = {
        "python": [version, list(internal), gauss_next],
        "numpy": {**numpy, "state": {**numpy["state"], "key": numpy["state"]["key"].tolist()}},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy = state["numpy"]
    if isinstance(numpy, dict):
        key = np.asarray(numpy["state"]["key"], dtype=np.uint32)
        numpy = {**numpy, "state": {**numpy["state"], "key": key}}
    np.random.set_state(numpy)  # noqa: NPY002  (a tuple: a checkpoint of an older dnbook)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
