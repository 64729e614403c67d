"""dnbook: an executable textbook on normalization layers, from Batch Normalization to
Dynamic Normalization (DN-C and DN-B)."""

from importlib.metadata import PackageNotFoundError, version

from dnbook._io import ConfigError, CorruptFileWarning
from dnbook.norms import (
    BatchNorm2d,
    CenConv2d,
    DynamicNorm2d,
    GroupedFC,
    GroupNorm,
    MABN2d,
    SEBatchNorm2d,
    SqueezeExcitation,
    convert_norm,
    make_norm,
)

try:  # the installed distribution's version, as pyproject.toml states it
    __version__ = version("dnbook")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BatchNorm2d",
    "CenConv2d",
    "ConfigError",
    "CorruptFileWarning",
    "DynamicNorm2d",
    "GroupNorm",
    "GroupedFC",
    "MABN2d",
    "SEBatchNorm2d",
    "SqueezeExcitation",
    "__version__",
    "convert_norm",
    "make_norm",
]
