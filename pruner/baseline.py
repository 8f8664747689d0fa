"""Torch-Pruning's own pruner, brought to a measured latency budget: the baseline a user
would otherwise reach for (``tp.pruner.BasePruner`` with its group Taylor or magnitude
importance, global ranking, ``round_to`` the table's group size).

Torch-Pruning prunes a fraction of the channels, not to a latency; here that fraction is
searched by bisection until the pruned network, measured against the teacher in
interleaved rounds (``pruner.measure``), meets the budget with the least pruning found.
Taylor importance takes its gradients from the same label-free loss as hwprune's own
criterion (KL divergence to the teacher's outputs on the given images), so the two differ
only in the ranking and in how the target is reached. Fine-tuning is left to the caller
(``pruner.finetune``), to be done the same way for every criterion.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from hwprune.errors import HwpruneError
from hwprune.pruner.data import ImageSet
from hwprune.pruner.schedule import kd_loss

IMPORTANCES = ("taylor", "magnitude")


class BaselineError(HwpruneError):
    """Torch-Pruning's pruner could not reach the budget (or was asked for nonsense)."""


@dataclass
class TorchPruningConfig:
    importance: str = "taylor"     # tp.importance.GroupTaylorImportance; or "magnitude" (L2)
    group_size: int = 8            # round_to: channel counts stay on the table's grid
    batches: int = 8               # minibatches whose gradients feed the Taylor importance
    batch_size: int = 64
    temperature: float = 5.0       # of the KL loss, as hwprune's fine-tuning
    max_ratio: float = 0.9         # the largest fraction of channels ever asked for
    # at most this fraction of any one layer: a layer Torch-Pruning would empty is left
    # whole instead (at 0.95 overall and no cap it pruned nothing of the digits net)
    max_layer_ratio: float = 0.75
    steps: int = 6                 # bisection steps: the fraction is found to about 3%
    seed: int = 0

    def validate(self) -> "TorchPruningConfig":
        if self.importance not in IMPORTANCES:
            raise BaselineError(f"importance '{self.importance}': choose one of "
                                f"{', '.join(IMPORTANCES)}")
        if self.group_size < 1 or self.steps < 1 or not 0 < self.max_ratio < 1:
            raise BaselineError("group_size and steps must be >= 1, max_ratio in (0, 1)")
        return self


def classifier_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The layers whose outputs are the model's classes: never pruned (as in hwprune)."""
    with torch.no_grad():
        classes = model(example).shape[-1]
    heads = [m for m in model.modules()
             if (isinstance(m, nn.Linear) and m.out_features == classes)
             or (isinstance(m, nn.Conv2d) and m.out_channels == classes
                 and m.kernel_size == (1, 1))]
    return heads[-1:]


def prune_fraction(teacher: nn.Module, images: ImageSet, fraction: float,
                   cfg: TorchPruningConfig) -> nn.Module:
    """A copy of ``teacher`` with ``fraction`` of its prunable channels removed by
    Torch-Pruning (one global step; ``fraction`` 0 returns an unpruned copy)."""
    import torch_pruning as tp

    student = copy.deepcopy(teacher).eval()
    for p in student.parameters():  # a frozen teacher's copy would neither rank nor train
        p.requires_grad_(True)
    if fraction <= 0:
        return student
    example = images.images[:1]
    imp = (tp.importance.GroupTaylorImportance() if cfg.importance == "taylor"
           else tp.importance.GroupMagnitudeImportance(p=2))
    pruner = tp.pruner.BasePruner(student, example, importance=imp, global_pruning=True,
                                  pruning_ratio=fraction, round_to=cfg.group_size,
                                  max_pruning_ratio=cfg.max_layer_ratio,
                                  ignored_layers=classifier_layers(student, example))
    if cfg.importance == "taylor":
        student.zero_grad()
        teacher.eval()
        for x, _ in images.batches(cfg.batches, cfg.batch_size, cfg.seed):
            with torch.no_grad():
                t_out = teacher(x)
            kd_loss(student(x), t_out, cfg.temperature).backward()  # gradients accumulate
    pruner.step()
    student.zero_grad(set_to_none=True)
    return student.eval()


def conv_filters(module: nn.Module) -> int:
    """Output channels of every Conv2d: the filters a pruner can keep or remove."""
    return sum(c.out_channels for c in module.modules() if isinstance(c, nn.Conv2d))


def monotone_limit(teacher: nn.Module, images: ImageSet, cfg: TorchPruningConfig) -> float:
    """The largest fraction on a ladder of tenths (up to ``max_ratio``) that removed more
    filters than the fractions below it, stopping where asking for more removes fewer.
    Past that point Torch-Pruning's global threshold would empty whole layers, which it then
    leaves unpruned instead (on the digits net at width 64, 0.9 kept more filters than 0.8),
    and a bisection beyond it would not search a monotone function. Equal counts (round_to
    plateaus) are passed over."""
    best, kept = 0.0, conv_filters(teacher)
    for i in range(1, int(round(cfg.max_ratio * 10)) + 1):
        now = conv_filters(prune_fraction(teacher, images, i / 10, cfg))
        if now > kept:  # more asked, less removed: past the limit
            break
        if now < kept:  # (an equal count is a plateau of round_to: go on past it)
            best, kept = i / 10, now
    if best == 0:
        raise BaselineError(f"Torch-Pruning removes nothing from this model at any fraction "
                            f"up to {cfg.max_ratio:.1f} of its channels (every group too "
                            f"small for round_to {cfg.group_size}?)")
    return best


def to_measured_budget(teacher: nn.Module, images: ImageSet, goal: float,
                       measure: Callable[[nn.Module], dict], cfg: TorchPruningConfig,
                       log: Callable[[str], None] = lambda s: None) -> tuple[nn.Module, dict]:
    """The least-pruned network found by bisection on Torch-Pruning's fraction whose
    settled measured verdict (``measure(student)``: a ``measure_until_settled`` result
    against ``goal``) is met. Returns it with the search's history."""
    cfg.validate()
    # lo: known to miss (the teacher itself); hi: to be shown met
    lo, hi = 0.0, monotone_limit(teacher, images, cfg)
    limit = hi
    history: list[dict] = []

    def trial(fraction: float) -> tuple[nn.Module, dict]:
        student = prune_fraction(teacher, images, fraction, cfg)
        m = measure(student)
        filters = conv_filters(student)
        history.append({"fraction": fraction, "ratio": m["ratio"], "ratio_low": m["ratio_low"],
                        "ratio_high": m["ratio_high"], "settled": m["settled"],
                        "settled_by": m["settled_by"], "filters": filters})
        log(f"torch-pruning {cfg.importance} at {fraction:.3f} of the channels: "
            f"{100 * m['ratio']:.0f}% of the teacher, {m['settled']}")
        return student, m

    best = trial(hi)
    if best[1]["settled"] != "met":
        raise BaselineError(f"Torch-Pruning at {hi:.2f} of the channels still measures "
                            f"{100 * best[1]['ratio']:.0f}% of the teacher: the budget "
                            f"{100 * goal:.0f}% is out of its reach")
    for _ in range(cfg.steps - 1):
        mid = (lo + hi) / 2
        student, m = trial(mid)
        if m["settled"] == "met":
            hi, best = mid, (student, m)
        else:
            lo = mid
    return best[0], {"config": asdict(cfg), "limit": limit, "fraction": hi, "measured": best[1],
                     "search": history}


__all__ = ["BaselineError", "TorchPruningConfig", "classifier_layers", "conv_filters",
           "monotone_limit", "prune_fraction", "to_measured_budget"]
