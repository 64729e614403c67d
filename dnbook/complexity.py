"""Parameters and Mult-Adds of a model, and the paper's #p and Mult-Adds columns beside ours.

The chapters' import path for :mod:`dnbook.cost.flops` and :mod:`dnbook.cost.paper`, where the
code lives: every name it had, from there. ``Profile`` is :class:`~dnbook.cost.flops.ModelCost`
(renamed: :class:`dnbook.engine.profiles.Profile` is a training scale)."""

from dnbook.cost.flops import IMAGENET_INPUT as IMAGENET_INPUT
from dnbook.cost.flops import InputSize as InputSize
from dnbook.cost.flops import ModelCost
from dnbook.cost.flops import count_by_module as count_by_module
from dnbook.cost.flops import profile as profile
from dnbook.cost.flops import profile_model as profile_model
from dnbook.cost.paper import PAPER_TABLE as PAPER_TABLE
from dnbook.cost.paper import READINGS as READINGS
from dnbook.cost.paper import PaperRow as PaperRow
from dnbook.cost.paper import agrees_with_paper as agrees_with_paper
from dnbook.cost.paper import compare_readings as compare_readings
from dnbook.cost.paper import compare_with_paper as compare_with_paper
from dnbook.cost.paper import explain as explain
from dnbook.cost.paper import format_comparison as format_comparison
from dnbook.cost.paper import print_comparison as print_comparison
from dnbook.cost.paper import with_fc1_bias as with_fc1_bias

Profile = ModelCost
