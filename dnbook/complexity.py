"""Parameters and Mult-Adds of a model, and the paper's #p and Mult-Adds columns beside ours.

Mult-Adds are counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``, which
records 2 FLOPs per multiply-add of every matmul and convolution it sees (``mm``, ``addmm``,
``bmm``, ``convolution``, ...), so Mult-Adds = FLOPs / 2. Elementwise work (norms, activations,
pooling, the residual adds, biases) is not counted. This is the convention of the paper's tables:
torchvision's MobileNetV2 with 100 classes gives exactly its 299.62M at 224x224.

FlopCounterMode only counts the ops it knows. A layer that computes an FC by a broadcast
multiply and a sum (an ``einsum`` can lower to one) is silently counted as zero, which is why
``tests/test_complexity.py`` checks, with :func:`count_by_module`, that every norm layer's
SC-module FCs are counted.

Run ``python -m dnbook complexity`` (or call :func:`print_comparison`) for the whole table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dnbook.models import build_model

InputSize = tuple[int, ...]
IMAGENET_INPUT: InputSize = (1, 3, 224, 224)


@dataclass(frozen=True)
class Profile:
    """A model's size: ``params`` parameters and ``mult_adds`` multiply-adds per forward pass."""

    params: int
    mult_adds: int

    @property
    def params_m(self) -> float:
        """Parameters in millions."""
        return self.params / 1e6

    @property
    def mult_adds_m(self) -> float:
        """Mult-Adds in millions."""
        return self.mult_adds / 1e6


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for the duration; every module's own mode is restored after."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes.items():
            module.train(training)


def _count(model: nn.Module, input_size: InputSize) -> FlopCounterMode:
    """Run ``model`` once in eval mode on a random input under a FlopCounterMode; return it."""
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else None
    dtype = reference.dtype if reference is not None else None
    x = torch.randn(input_size, device=device, dtype=dtype)
    with _inference(model), FlopCounterMode(display=False) as counter:
        model(x)
    return counter


def profile(model: nn.Module, input_size: InputSize = IMAGENET_INPUT) -> Profile:
    """Parameters and Mult-Adds of one forward pass of ``model`` on a ``input_size`` input.

    The model runs once in eval mode under ``torch.no_grad()`` (its modes are restored after), so
    Mult-Adds are per batch of ``input_size[0]`` images; the paper's tables use batch 1.

    Example::

        >>> from dnbook.models import mobilenet_v2
        >>> p = profile(mobilenet_v2(num_classes=100))
        >>> p.params, p.mult_adds
        (2351972, 299622272)
    """
    params = sum(p.numel() for p in model.parameters())
    flops = _count(model, input_size).get_total_flops()
    return Profile(params=params, mult_adds=flops // 2)


def count_by_module(model: nn.Module, input_size: InputSize = IMAGENET_INPUT) -> dict[str, int]:
    """Mult-Adds of one forward pass under every submodule, by qualified name (``""``: the model).

    Each module's count includes its children's, as in FlopCounterMode's module hierarchy; a
    module that ran no counted op has 0.

    Example::

        >>> from dnbook.models import resnet18
        >>> counts = count_by_module(resnet18(num_classes=100))
        >>> counts["fc"]  # 512 * 100
        51200
    """
    by_tracker_name = _count(model, input_size).get_flop_counts()
    # FlopCounterMode names modules "<root class>.<qualified name>" ("ResNet.layer1.0.conv1").
    # Its "Global" entry (the total) repeats the model's own entry and is skipped.
    root = type(model).__name__
    counts = {name: 0 for name, _ in model.named_modules()}
    for tracker_name, flops_by_op in by_tracker_name.items():
        if tracker_name == root or tracker_name.startswith(root + "."):
            counts[tracker_name[len(root) + 1 :]] = sum(flops_by_op.values()) // 2
    return counts


def profile_model(
    name: str, norm: str = "bn", num_classes: int = 100, input_size: InputSize = IMAGENET_INPUT
) -> Profile:
    """:func:`profile` of ``build_model(name, num_classes=num_classes, norm=norm)``, cached, so a
    session profiles each configuration once."""
    return _cached_profile(name, norm, num_classes, tuple(input_size))


@cache
def _cached_profile(name: str, norm: str, num_classes: int, input_size: InputSize) -> Profile:
    # Called with all four arguments positionally, so that equal calls share one cache entry.
    return profile(build_model(name, num_classes=num_classes, norm=norm), input_size)


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's tables: ``model`` (a :data:`dnbook.models.MODEL_NAMES` entry) with
    every BatchNorm replaced by ``norm`` (a ``make_norm`` spec); #p and Mult-Adds in millions, as
    printed in ``source``. All are for 100 classes (ImageNet-100) and 224x224 input."""

    model: str
    norm: str
    params_m: float
    mult_adds_m: float
    source: str


# Transcribed from the paper (Liu, Gao and Lv, "Dynamic Normalization"); not measured. Where a
# configuration appears in several tables, the first table is named.
PAPER_TABLE: tuple[PaperRow, ...] = (
    PaperRow("mobilenet_v2", "bn", 2.35, 299.62, "Table 1"),
    PaperRow("mobilenet_v2", "se:r=16", 3.73, 300.98, "Table 2"),
    PaperRow("mobilenet_v2", "dnb:r=16,g=1", 3.03, 300.34, "Table 1"),
    PaperRow("mobilenet_v2", "dnb:r=16,g=2", 3.07, 300.37, "Table 7"),
    PaperRow("mobilenet_v2", "dnb:r=16,g=4", 3.14, 300.44, "Table 7"),
    PaperRow("mobilenet_v2", "dnb:r=16,g=oup", 4.36, 301.66, "Table 1"),
    PaperRow("mobilenet_v2", "dnb:r=8,g=1", 3.72, 301.02, "Table 6"),
    PaperRow("mobilenet_v2", "dnb:r=32,g=1", 2.69, 300.00, "Table 6"),
    PaperRow("mobilenet_v2", "dnc:r=16,merge=fc1", 3.03, 301.02, "Table 1"),
    PaperRow("mobilenet_v2", "dnc:r=16,merge=fc2", 3.03, 301.05, "Table 1"),
    PaperRow("resnet18", "bn", 11.22, 1730.12, "Table 3"),
    PaperRow("resnet18", "dnb:r=4,g=oup", 12.52, 1731.43, "Table 3"),
    PaperRow("resnet18", "dnb:r=16,g=oup", 11.54, 1730.45, "Table 3"),
    PaperRow("resnet34", "bn", 21.33, 3579.81, "Table 3"),
    PaperRow("resnet34", "dnb:r=16,g=oup", 21.85, 3580.35, "Table 3"),
    PaperRow("resnet34", "dnb:r=32,g=oup", 21.58, 3580.08, "Table 3"),
)


def agrees_with_paper(count: int, paper_m: float) -> bool:
    """Whether the paper's ``paper_m`` (millions, two decimals) is ``count`` rounded or truncated.

    The paper does not say how it shortens its numbers, and its tables use both: ResNet-18's
    11,227,812 parameters print as 11.22M (truncated), MobileNetV2 DN-B g=oup's 4,359,780 as
    4.36M (rounded, with our SC-module). So either reading counts as agreement.
    """
    hundredths = round(paper_m * 100)
    return hundredths in (math.floor(count / 1e4), round(count / 1e4))


def compare_with_paper(
    rows: Iterable[PaperRow] | None = None, input_size: InputSize = IMAGENET_INPUT
) -> pd.DataFrame:
    """Our #p and Mult-Adds beside the paper's, one row per :class:`PaperRow`.

    Args:
        rows: the rows to measure. Default: all of :data:`PAPER_TABLE`.
        input_size: the input for Mult-Adds. Default: ``(1, 3, 224, 224)``, the paper's setting
            (one 224x224 image).

    Returns:
        A DataFrame, one row per configuration, with columns ``model``, ``norm``, ``source``,
        then for ``params`` and for ``mult_adds``: our exact count (``params``), ours in millions
        (``params_m``), the paper's (``paper_params_m``), ours minus the paper's
        (``params_diff_m``) and whether the paper's value is ours rounded or truncated to 0.01M
        (``params_agree``, see :func:`agrees_with_paper`).
    """
    records = []
    for row in PAPER_TABLE if rows is None else rows:
        ours = profile_model(row.model, row.norm, input_size=input_size)
        record = {"model": row.model, "norm": row.norm, "source": row.source}
        for key, count, paper_m in (
            ("params", ours.params, row.params_m),
            ("mult_adds", ours.mult_adds, row.mult_adds_m),
        ):
            record[key] = count
            record[f"{key}_m"] = count / 1e6
            record[f"paper_{key}_m"] = paper_m
            record[f"{key}_diff_m"] = count / 1e6 - paper_m
            record[f"{key}_agree"] = agrees_with_paper(count, paper_m)
        records.append(record)
    return pd.DataFrame.from_records(records)


def _cells(row: tuple, key: str, width: int, paper_width: int) -> str:
    """Ours (0.001M), the paper's (as printed), the difference and the agreement mark for
    ``key`` ("params" or "mult_adds") of one table row, right-aligned."""
    ours, paper = getattr(row, f"{key}_m"), getattr(row, f"paper_{key}_m")
    diff = round(getattr(row, f"{key}_diff_m"), 3) + 0.0  # + 0.0 turns round()'s -0.0 into 0.0
    mark = "ok" if getattr(row, f"{key}_agree") else "NO"
    return f"{ours:>{width}.3f}{paper:>{paper_width}.2f}{diff:>+9.3f}  {mark:<3}"


def format_comparison(table: pd.DataFrame) -> str:
    """The table of :func:`compare_with_paper` as aligned text: ours to 0.001M, the paper's
    values as printed, and ``ok`` where the paper's value is ours rounded or truncated."""
    header = (
        f"{'model':<13}{'norm':<19}{'#p (M)':>9}{'paper':>7}{'diff':>9}  {'ok?':<3}"
        f"{'Mult-Adds (M)':>14}{'paper':>9}{'diff':>9}  {'ok?':<3}  source"
    )
    lines = [header, "-" * len(header)]
    for row in table.itertuples():
        lines.append(
            f"{row.model:<13}{row.norm:<19}{_cells(row, 'params', 9, 7)}"
            f"{_cells(row, 'mult_adds', 14, 9)}  {row.source}"
        )
    return "\n".join(lines)


def print_comparison(
    rows: Iterable[PaperRow] | None = None, input_size: InputSize = IMAGENET_INPUT
) -> None:
    """Print our #p and Mult-Adds beside the paper's for every row of :data:`PAPER_TABLE`.

    The models have 100 classes (ImageNet-100) and Mult-Adds are per 224x224 image, as in the
    paper's tables, in millions. "diff" is ours minus the paper's; "ok" marks a paper value that
    is ours rounded or truncated to 0.01M. Profiling the 16 models takes about ten seconds on a CPU.
    This is what ``python -m dnbook complexity`` prints.

    Args:
        rows: the rows to measure. Default: all of :data:`PAPER_TABLE`.
        input_size: the input for Mult-Adds. Default: ``(1, 3, 224, 224)``.
    """
    print(format_comparison(compare_with_paper(rows, input_size)))
