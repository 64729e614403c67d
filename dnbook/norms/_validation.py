"""Input checks shared by every norm layer, so that bad input fails early with a
``ValueError`` that names the expected and the actual value instead of a deep traceback.
Argument checks (integers, fractions) are :mod:`dnbook._validation`'s, re-exported here."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from dnbook._validation import check_fraction as check_fraction
from dnbook._validation import check_int as check_int
from dnbook._validation import check_positive_int as check_positive_int


def check_input(layer: str, x: torch.Tensor, num_features: int, ndim: int = 4) -> None:
    """Check that ``x`` has ``ndim`` dimensions and ``num_features`` channels (dim 1)."""
    if x.dim() != ndim:
        layout = {2: "(N, C)", 4: "(N, C, H, W)"}.get(ndim, f"{ndim}-D")
        raise ValueError(
            f"{layer}: expected a {ndim}-D input {layout}, "
            f"got a {x.dim()}-D input of shape {tuple(x.shape)}"
        )
    if x.shape[1] != num_features:
        raise ValueError(
            f"{layer}: expected {num_features} channels (dim 1), "
            f"got {x.shape[1]} in an input of shape {tuple(x.shape)}"
        )


def check_batch_statistics(layer: str, x: torch.Tensor) -> None:
    """Batch statistics need more than one value per channel: ``N * H * W > 1``."""
    values_per_channel = x.numel() // max(x.shape[1], 1)
    if values_per_channel <= 1:
        raise ValueError(
            f"{layer}: expected more than 1 value per channel when training, "
            f"got {values_per_channel} (input shape {tuple(x.shape)})"
        )


def check_choice(name: str, value: object, choices: Mapping[str, object] | tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    valid = tuple(choices)
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, valid))}; got {value!r}")
    return value
