"""Hardware-aware, data-free pruning: Taylor importance on gates plus eta times the LUT latency
saving, physical removal with Torch-Pruning, fine-tuning by distillation."""

from hwprune.pruner.cost import MacsTable, cost_model
from hwprune.pruner.data import DataError, ImageSet, evaluate, load_images
from hwprune.pruner.groups import (GroupError, PrunableDim, build_graph, check_matches, find_dims,
                           out_channels, remove_channels)
from hwprune.pruner.importance import GateTaylor, combine, group_error, lowest, magnitude_scores
from hwprune.pruner.knapsack import min_cost_cover
from hwprune.pruner.optim import carry_momentum, make_sgd
from hwprune.pruner.snap import SnapResult, grow, snap_counts
from hwprune.pruner.schedule import CRITERIA, SELECTORS, PruneConfig, Pruner, StepRecord, TargetError, kd_loss

__all__ = ["MacsTable", "cost_model", "DataError", "ImageSet", "evaluate", "load_images",
           "GroupError", "PrunableDim", "build_graph", "check_matches", "find_dims",
           "out_channels", "remove_channels", "GateTaylor", "combine", "group_error", "lowest",
           "magnitude_scores", "min_cost_cover", "carry_momentum", "make_sgd", "CRITERIA",
           "SELECTORS", "PruneConfig", "Pruner", "StepRecord", "TargetError", "kd_loss",
           "SnapResult", "grow", "snap_counts"]
