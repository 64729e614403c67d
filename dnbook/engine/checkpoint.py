"""Checkpoints of a run: written atomically after every epoch, and read back to resume one
(a checkpoint that cannot be read is moved aside and the run starts over). What a checkpoint
holds is the loop's own ``state_dict`` (:class:`dnbook.engine.loop.Loop`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnbook import _io
from dnbook.engine.loop import Loop


def save_atomically(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` through :func:`dnbook._io.torch_save`: an interrupted save never leaves
    a half-written file under ``path``."""
    _io.torch_save(state, path)


def _legacy_numpy_globals() -> list:
    """The NumPy types an older checkpoint's ``np.random.get_state()`` tuple unpickles to."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


_LEGACY_NUMPY_GLOBALS = _legacy_numpy_globals()


def load_checkpoint(loop: Loop, path: Path, rebuild: Callable[[], Loop]) -> Loop:
    """``loop`` resumed from the checkpoint at ``path``; a checkpoint that cannot be loaded
    (cut short, garbled, another config's) is moved aside with a warning naming it, and a
    fresh loop from ``rebuild()`` starts the run over."""
    try:
        # weights_only: the checkpoint holds tensors, numbers, strings, lists and dicts (and,
        # written by an older dnbook, NumPy's generator state as an array: allowed by name).
        with torch.serialization.safe_globals(_LEGACY_NUMPY_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
        loop.load_state_dict(state)
    except Exception as error:  # a torch.load of a damaged file raises many kinds
        if not loop.ctx.is_main:
            raise
        aside = _io.move_aside(path)
        _io.warn_corrupt(
            path, _io.error_reason(error), f"moved to {aside.name}; the run starts over"
        )
        return rebuild()
    return loop
