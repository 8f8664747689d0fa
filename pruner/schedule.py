"""The pruning schedule (paper section 4): train the student against the teacher, and every
``interval`` minibatches physically remove the least important ``groups_per_step`` groups,
until the latency (LUT estimate) or filter-count target is met."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwprune.errors import HwpruneError
from hwprune.luts import Lut
from hwprune.pruner.cost import cost_model
from hwprune.pruner.data import ImageSet
from hwprune.pruner.groups import (GroupError, PrunableDim, build_graph, check_matches, find_dims,
                           out_channels, remove_channels)
from hwprune.pruner.importance import GateTaylor, combine, group_error, lowest, magnitude_scores
from hwprune.pruner.knapsack import min_cost_cover
from hwprune.pruner.optim import carry_momentum, make_sgd
from hwprune.pruner.plan import floor_model
from hwprune.pruner.snap import SnapResult, grow, snap_counts
from hwprune.profiler.keyspace import trace_model
from hwprune.profiler.timing import cudnn_benchmark
from hwprune.sizes import Size, hw

CRITERIA = ("taylor-latency", "taylor", "magnitude", "flops-aware")
SELECTORS = ("greedy", "knapsack")


def cpu_trace(model: nn.Module, input_size: Size, in_channels: int):
    """The LUT's view of ``model``, traced on a CPU copy wherever the model lives."""
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    return trace_model(model, input_size, in_channels)


class TargetError(HwpruneError):
    """The requested target cannot be met (or is already met)."""


@dataclass
class PruneConfig:
    criterion: str = "taylor-latency"
    eta: float = 1.0                 # weight of the cost term, in normalised units (importance.py)
    group_size: int = 16             # paper
    groups_per_step: int = 2         # paper: 32 filters every 30 minibatches
    interval: int = 30               # paper
    target_latency_ms: float | None = None
    target_ratio: float | None = None  # fraction of prunable filters kept
    selector: str = "greedy"
    knapsack_steps: int = 10         # knapsack: steps over which the latency gap is closed
    loss: str = "kl"                 # kl: against the teacher, no labels; ce: labels
    temperature: float = 5.0         # paper tried 5, 10, 15
    lr: float = 0.01                 # paper's fine-tuning lr
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 64             # paper 256 on ImageNet; small sets need more steps
    update_weights: bool = True      # False: rank and remove only (paper Table 10)
    shift: int = 0                   # random shift augmentation (px)
    flip: bool = False
    max_steps: int = 100_000
    seed: int = 0
    # After pruning, round channel counts up to the top of their LUT step (pruner.snap).
    # Off by default: the paper has no such step.
    snap: bool = False

    def check(self) -> "PruneConfig":
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}")
        if self.selector not in SELECTORS:
            raise ValueError(f"selector must be one of {', '.join(SELECTORS)}")
        if (self.target_latency_ms is None) == (self.target_ratio is None):
            raise TargetError("give exactly one of a target latency and a target ratio")
        if self.target_ratio is not None and not 0 < self.target_ratio < 1:
            raise TargetError(f"target ratio {self.target_ratio} must lie strictly in (0, 1)")
        if self.selector == "knapsack" and self.target_latency_ms is None:
            raise TargetError("the knapsack selector needs a latency target")
        if self.loss not in ("kl", "ce"):
            raise ValueError("loss must be kl or ce")
        if self.group_size < 1 or self.groups_per_step < 1 or self.interval < 1:
            raise ValueError("group size, groups per step and interval must be positive")
        return self


@dataclass
class StepRecord:
    step: int
    minibatches: int
    estimated_ms: float | None
    filters: int
    loss: float
    removed: list[tuple[str, int]]   # (dimension root, channels removed)
    seconds: float


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """KL(teacher || student) at temperature ``t``, scaled by t^2."""
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.softmax(teacher_logits / t, 1),
                    reduction="batchmean") * t * t


class Pruner:
    """The state of one pruning run: the shrinking student, its groups, cost model, optimiser.

    ``cudnn_benchmark`` (default False) is the value ``torch.backends.cudnn.benchmark`` is
    held at while training (``profiler.timing.cudnn_benchmark``), whatever it was before.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: PruneConfig,
                 input_size: Size, in_channels: int, lut: Lut | None,
                 original_filters: int | None = None, cudnn_benchmark: bool = False) -> None:
        self.cfg = cfg.check()
        self.cudnn_benchmark = cudnn_benchmark
        self.student, self.teacher = student, teacher.eval()
        self.size, self.in_ch = input_size, in_channels
        self.device = next(student.parameters()).device
        example = torch.zeros(1, in_channels, *hw(input_size), device=self.device)
        trace = cpu_trace(student, input_size, in_channels)
        self.graph = build_graph(student, example)
        self.dims: list[PrunableDim] = find_dims(student, self.graph, trace)
        if not self.dims:
            raise GroupError("the model has no prunable channel group")
        needs_lut = cfg.criterion == "taylor-latency" or cfg.target_latency_ms is not None \
            or cfg.selector == "knapsack"
        if needs_lut and lut is None:
            raise TargetError("this criterion/target needs a LUT (--lut)")
        self.latency = cost_model("taylor-latency", trace, lut) if lut is not None else None
        self.cost = cost_model(cfg.criterion, trace, lut) \
            if cfg.criterion in ("taylor-latency", "flops-aware") else None
        if self.latency is not None or self.cost is not None:
            check_matches(self.dims, trace)
        self.original_filters = original_filters or self.filters()
        self.opt = make_sgd(student, cfg)
        self.gates = GateTaylor(student, self.dims)
        self.step = 0
        self.trajectory: list[StepRecord] = []
        # Each dimension's channels as original (teacher) indices, and those removed in
        # order: what ``pruner.snap`` grows back from the teacher. A resumed run restores both.
        self.kept = {d.root: np.arange(d.channels) for d in self.dims}
        self.removed: dict[str, list[int]] = {d.root: [] for d in self.dims}

    # -- progress ---------------------------------------------------------------------------
    def filters(self) -> int:
        return sum(d.channels * len(d.producers) for d in self.dims)

    def estimated_ms(self) -> float | None:
        return self.latency.total_ms if self.latency is not None else None

    def reached(self) -> bool:
        if self.cfg.target_latency_ms is not None:
            return self.latency.total_ms <= self.cfg.target_latency_ms
        return self.filters() <= self.cfg.target_ratio * self.original_filters

    def floor_ms(self) -> float:
        """The LUT estimate with every dimension cut to its smallest size (what is reachable)."""
        return floor_model(self.latency, self.dims, self.cfg.group_size).total_ms

    def check_target(self) -> None:
        """Refuse a target the run cannot reach, or one already met, before any work."""
        if self.cfg.target_latency_ms is None:
            return
        now, target = self.latency.total_ms, self.cfg.target_latency_ms
        if target >= now:
            raise TargetError(f"target {target:.3f} ms is not below the current estimate "
                              f"{now:.3f} ms: nothing to prune")
        floor = self.floor_ms()
        if target < floor:
            raise TargetError(f"target {target:.3f} ms is below what pruning can reach on this "
                              f"LUT (about {floor:.3f} ms with every layer at its smallest)")

    # -- one step ---------------------------------------------------------------------------
    def train_interval(self, rank: int = 0, world: int = 1,
                       forward: nn.Module | None = None) -> float:
        """``interval`` minibatches of training (or gradient only) with the gates in place."""
        cfg, net = self.cfg, forward or self.student
        self.student.train()
        losses = []
        seed = (cfg.seed * 1_000_003 + self.step) * max(1, world) + rank
        # Pinned here, at the only place the pruner trains, so that a measurement between
        # runs (the measured-target loop times on CUDA with benchmark on) cannot leak in.
        with cudnn_benchmark(self.cudnn_benchmark):
            for x, y in self.data.batches(cfg.interval, cfg.batch_size, seed, cfg.shift,
                                          cfg.flip):
                x, y = x.to(self.device), (y.to(self.device) if y is not None else None)
                out = net(x)
                if cfg.loss == "ce":
                    loss = F.cross_entropy(out, y)
                else:
                    with torch.no_grad():
                        t_out = self.teacher(x)
                    loss = kd_loss(out, t_out, cfg.temperature)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.gates.accumulate()
                if cfg.update_weights:
                    self.opt.step()
                losses.append(loss.item())
        self.opt.zero_grad(set_to_none=True)
        return float(np.mean(losses))

    def _scores(self) -> list[np.ndarray]:
        if self.cfg.criterion == "magnitude":
            return magnitude_scores(self.student, self.dims)
        self.gates.all_reduce()
        return [s.copy() for s in self.gates.scores]

    def _cost(self, k: int) -> np.ndarray | None:
        if self.cost is None:
            return None
        per_lut_dim = self.cost.delta_ms(k)
        return np.array([per_lut_dim[d.lut_dim] for d in self.dims])

    def rank(self, scores: list[np.ndarray]) -> np.ndarray:
        """Importance of each dimension's candidate group (its ``group_size`` least important
        channels): error term + eta x cost term, normalised; NaN where it cannot be removed."""
        k = self.cfg.group_size
        return combine(group_error(scores, k), self._cost(k),
                       self.cfg.eta if self.cost is not None else 0.0)

    def select_greedy(self, scores: list[np.ndarray]) -> list[tuple[int, np.ndarray]]:
        """The least important group, ``groups_per_step`` times, stopping once the target is met."""
        k, picks = self.cfg.group_size, []
        for _ in range(self.cfg.groups_per_step):
            imp = self.rank(scores)
            if not np.isfinite(imp).any():
                break
            j = int(np.nanargmin(imp))
            idxs = lowest(scores[j], k)
            picks.append((j, idxs))
            self._remove(j, idxs)
            scores[j] = np.delete(scores[j], idxs)
            if self.reached():
                break
        return picks

    def select_knapsack(self, scores: list[np.ndarray]) -> list[tuple[int, np.ndarray]]:
        """Close 1/(steps left) of the latency gap, removing the least error (HALP-style)."""
        k = self.cfg.group_size
        left = max(1, self.cfg.knapsack_steps - self.step)
        quota = (self.latency.total_ms - self.cfg.target_latency_ms) / left
        n_max = [int(math.ceil(d.channels / k) - 1) for d in self.dims]
        deltas = {n: self.latency.delta_ms(n * k) for n in range(1, max(n_max, default=0) + 1)}
        costs, savings = [], []
        for d, s, top in zip(self.dims, scores, n_max):
            srt = np.sort(s)
            costs.append(np.array([srt[:n * k].sum() for n in range(1, top + 1)]))
            savings.append(np.array([-deltas[n][d.lut_dim] for n in range(1, top + 1)]))
        scale = np.mean([c[0] for c in costs if len(c)]) or 1.0
        counts = min_cost_cover([c / scale for c in costs], savings, quota)
        if not any(counts):  # no set saves anything on this LUT: fall back to the paper's rule
            return self.select_greedy(scores)
        picks = []
        for j, n in enumerate(counts):
            if n:
                idxs = lowest(scores[j], n * k)
                picks.append((j, idxs))
                self._remove(j, idxs)
        return picks

    def _remove(self, j: int, idxs: np.ndarray) -> None:
        d = self.dims[j]
        if self.kept is not None:  # None: resumed from a state that did not record them
            self.removed[d.root] += [int(i) for i in self.kept[d.root][idxs]]
            self.kept[d.root] = np.delete(self.kept[d.root], idxs)
        with carry_momentum(self.student, self.opt) as rebuild:
            remove_channels(self.student, self.graph, d, [int(i) for i in idxs])
        self.opt = rebuild()
        for model in (self.latency, self.cost):
            if model is not None:
                model.remove(d.lut_dim, len(idxs))

    def prune_step(self, rank: int = 0, world: int = 1,
                   forward: nn.Module | None = None) -> StepRecord:
        t0 = time.perf_counter()
        self.gates.install()
        try:
            loss = self.train_interval(rank, world, forward)
            scores = self._scores()
        finally:
            self.gates.remove()
        picks = (self.select_knapsack(scores) if self.cfg.selector == "knapsack"
                 else self.select_greedy(scores))
        if not picks:
            raise TargetError(f"no group can be removed any more (every layer at its smallest) "
                              f"and the target is not met at step {self.step}")
        self.step += 1
        rec = StepRecord(self.step, self.step * self.cfg.interval, self.estimated_ms(),
                         self.filters(), loss, [(self.dims[j].root, len(i)) for j, i in picks],
                         time.perf_counter() - t0)
        self.trajectory.append(rec)
        return rec

    def run(self, data: ImageSet, on_step: Callable[["Pruner", StepRecord], None] | None = None,
            rank: int = 0, world: int = 1, wrap: Callable[[nn.Module], nn.Module] | None = None
            ) -> list[StepRecord]:
        """Prune until the target is met; ``on_step`` sees every step (progress, checkpoints).

        ``wrap`` (DistributedDataParallel under torchrun) is applied again at every step:
        each removal replaces the pruned parameters by smaller tensors, and DDP's reducer
        and gradient buckets are bound to the parameters it was built over, so a wrapper
        cannot outlive a removal. The rebuild is cheap beside a step. Measured on 2 gloo
        CPU ranks (1 thread each), one DDP construction takes 122 ms for resnet18 and
        264 ms for resnet50, nearly all of it the start-up broadcast of the parameters and
        the cross-rank shape check (2 and 9 ms without them, ``init_sync=False``), while a
        single forward+backward of 8 images at 224 px takes 2.6 s and 6.4 s there (a step
        is 30 minibatches of 64). On GPUs NCCL broadcasts resnet50's 102 MB in
        milliseconds, against a step of about 1.2 s on an H100 (its LUT: 41 ms forward at
        batch 256, so ~10 ms at 64; x4 for the student's forward+backward and the
        teacher's forward; x30 minibatches). The broadcast and shape check are kept: at
        that price they also stop ranks that diverged instead of letting them train on.
        """
        self.data = data
        if self.cfg.loss == "ce" and data.labels is None:
            raise TargetError(f"{data.source}: cross-entropy needs labelled images")
        while not self.reached():
            if self.step >= self.cfg.max_steps:
                raise TargetError(f"target not met after {self.step} steps (--max-steps)")
            rec = self.prune_step(rank, world, wrap(self.student) if wrap else None)
            if on_step:
                on_step(self, rec)
        return self.trajectory

    def channels(self) -> dict[str, int]:
        return out_channels(self.student, self.dims)

    def snap(self) -> SnapResult:
        """Grow every dimension to the top of its LUT step, where that costs no estimated
        latency (``pruner.snap``); the student is replaced by the grown one."""
        if self.latency is None:
            raise TargetError("--snap needs a LUT (--lut): the steps are the LUT's")
        if self.kept is None:
            raise TargetError("this run's pruning state was written before --snap existed: "
                              "it lacks which filters were removed; prune again to snap")
        before_ms, before_filters = self.latency.total_ms, self.filters()
        original = {r: len(self.kept[r]) + len(self.removed[r]) for r in self.kept}
        counts = snap_counts(self.latency, self.dims, original, self.cfg.group_size)
        res = SnapResult(before_ms, self.latency.total_ms, before_filters, before_filters,
                         {d.root: (d.channels, counts[d.root]) for d in self.dims
                          if d.root in counts})
        if not counts:
            return res
        example = torch.zeros(1, self.in_ch, *hw(self.size), device=self.device)
        self.student = grow(self.student, self.teacher, cpu_trace(self.teacher, self.size,
                                                                  self.in_ch),
                            example, self.kept, self.removed, counts)
        for d in self.dims:
            n = counts.get(d.root, d.channels) - d.channels
            if n:
                if self.cost is not None:
                    self.cost.remove(d.lut_dim, -n)
                back = self.removed[d.root][len(self.removed[d.root]) - n:]
                self.kept[d.root] = np.sort(np.concatenate([self.kept[d.root], back]))
                self.removed[d.root] = self.removed[d.root][:-n]
        self.graph = build_graph(self.student, example)
        self.dims = find_dims(self.student, self.graph,
                              cpu_trace(self.student, self.size, self.in_ch))
        self.opt = make_sgd(self.student, self.cfg)
        self.gates = GateTaylor(self.student, self.dims)
        res.filters_after = self.filters()
        return res

    def config_dict(self) -> dict:
        return asdict(self.cfg)


__all__ = ["CRITERIA", "SELECTORS", "TargetError", "PruneConfig", "StepRecord", "Pruner",
           "kd_loss"]
