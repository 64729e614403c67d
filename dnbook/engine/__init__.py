"""The training engine: configs, the trainer, the results store, profiles and DDP.

Modules: ``config`` (one run), ``profiles`` (a scale), ``trainer`` (the loop), ``store`` (where
results are and every query of them), ``runs`` (a run read back or trained and stored),
``runner`` (experiments as sets of runs), ``provenance`` and ``environment`` (where a result
came from), ``distributed`` and ``divergence``.

* ``TrainConfig``: one run, a frozen dataclass with a stable ``hash()``.
* ``run(config, profile=...)``: the stored result of a config, trained first if needed.
* ``trained_model(config, profile=...)``: its best-validation weights in the model.
* ``load_results(profile, **filters)`` / ``results_frame(results)``: read the store.
* ``PROFILES`` / ``get_profile(name)``: how large the book's experiments are on a machine.
"""

from dnbook.engine.config import TrainConfig
from dnbook.engine.profiles import PROFILES, get_profile
from dnbook.engine.runs import run, trained_model
from dnbook.engine.store import load_results, results_dir, results_frame, weights_path
from dnbook.engine.trainer import TrainOutcome, train

__all__ = [
    "PROFILES",
    "TrainConfig",
    "TrainOutcome",
    "get_profile",
    "load_results",
    "results_dir",
    "results_frame",
    "run",
    "train",
    "trained_model",
    "weights_path",
]
