"""Normalization layers, each written from the equations.

Every layer takes ``num_features`` first, except ``GroupNorm``, which takes PyTorch's
``(num_groups, num_channels)`` so that it replaces ``torch.nn.GroupNorm`` as is. All use
PyTorch's parameter and buffer names (``weight``, ``bias``, ``running_mean``, ``running_var``,
``num_batches_tracked``), so state dicts load both ways where the layers are equivalent, and
take ``device=`` and ``dtype=``.
"""

from dnbook.norms.batchnorm import BatchNorm2d
from dnbook.norms.dynamic import DynamicNorm2d
from dnbook.norms.factory import NORM_SPECS, convert_norm, make_norm, parse_spec
from dnbook.norms.grouped_fc import GroupedFC
from dnbook.norms.groupnorm import GroupNorm
from dnbook.norms.mabn import CenConv2d, MABN2d
from dnbook.norms.squeeze_excitation import SEBatchNorm2d, SqueezeExcitation

__all__ = [
    "NORM_SPECS",
    "BatchNorm2d",
    "CenConv2d",
    "DynamicNorm2d",
    "GroupNorm",
    "GroupedFC",
    "MABN2d",
    "SEBatchNorm2d",
    "SqueezeExcitation",
    "convert_norm",
    "make_norm",
    "parse_spec",
]
