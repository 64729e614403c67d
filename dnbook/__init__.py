"""dnbook: an executable textbook on normalization layers, from Batch Normalization to
Dynamic Normalization (DN-C and DN-B).

The library in layers; a module imports only from the layers above it, and each has one job::

    _io, _validation, tables   atomic writes; argument checks; mean ± std and Markdown tables
    norms/                     the layers (BN, GN, MABN, SE, DN-C, DN-B): dynamic.py the teaching
                               path, fast_*.py the fast path; registry.py specs by name,
                               factory.py make_norm and convert_norm
    models/                    MobileNetV2, ResNet-18/34 with a pluggable norm layer
    data/                      datasets (and their facts, registry.py) and the device loader
    cost/                      parameters, Mult-Adds and memory traffic, counted
    engine/                    one training run: config, profiles, trainer (loop, optim,
                               checkpoint, rng, precision), the results store (store.py: every
                               query), runs.py (train or read back), runner.py (experiments:
                               configs, estimates, reproduce), provenance.py (the record stored
                               with every result)
    experiments                the paper's experiments: the registry's data
    analysis                   measurements of trained models, stored beside the runs
    claims/                    the paper's claims: ledger, verdict rules
    report, central, speed     tables and plots; the central figure; timings of training
    bench/                     timings of the layers (timing harness, specs, report)
    cli/                       the subcommands of ``python -m dnbook``
    complexity                 the old import path of cost/ (the chapters use it)
"""

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
