"""What a model or a layer costs, counted rather than timed.

* :mod:`dnbook.cost.flops`: parameters and Mult-Adds of a model (``profile``,
  ``count_by_module``, ``profile_model``, ``count_params``).
* :mod:`dnbook.cost.paper`: the paper's #p and Mult-Adds beside ours (``PAPER_TABLE``,
  ``compare_with_paper``, ``print_comparison``).
* :mod:`dnbook.cost.traffic`: the kernels and activation-sized memory traffic of one norm
  layer's training step (``TrafficCounter``, ``layer_traffic``).

Timings are :mod:`dnbook.bench`'s.
"""

from dnbook.cost.flops import ModelCost, count_by_module, count_params, profile, profile_model
from dnbook.cost.paper import PAPER_TABLE, compare_with_paper, print_comparison
from dnbook.cost.traffic import TrafficCounter, layer_traffic

__all__ = [
    "PAPER_TABLE",
    "ModelCost",
    "TrafficCounter",
    "compare_with_paper",
    "count_by_module",
    "count_params",
    "layer_traffic",
    "print_comparison",
    "profile",
    "profile_model",
]
