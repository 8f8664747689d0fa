"""What pruning can reach on a device, where the time goes, and where its latency steps:
read from the LUT before any work (``hwprune plan``).

- *Reach*: the estimate now, the floor (every prunable dimension cut to its last group,
  the operators no dimension touches unchanged), the largest speed-up, and whether a
  target is within it. A GPU at batch 1 has a floor channel pruning cannot remove: on an
  H100 in graph mode resnet50 went from 0.93 ms only to about 0.80 ms with every layer
  cut hard (``shared/gpu-facts.md``).
- *Where the time goes*: each operator's share of the estimated latency beside its share
  of the multiply-adds. Where the two differ, a FLOPs-based pruner cuts the wrong layers.
- *The staircase*: a device's kernels run channel counts in tiles, so latency drops in
  steps: removing a group of filters saves nothing until a step edge is crossed. For every
  prunable dimension the LUT's curve is walked one group at a time; a removal is *free*
  (it saves less than the noise threshold) or an *edge* (it saves at least the threshold
  and at least ``EDGE_FACTOR`` times the dimension's median saving, so an evenly sloped
  curve has none).

Edges are found at the table's grid resolution: between grid points the LUT interpolates
linearly, so a table at step 32 cannot show a staircase of 16-channel steps.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from hwprune.luts import LatencyModel, Lut
from hwprune.luts.delta import LatencyTable, is_sparse
from hwprune.profiler.keyspace import macs, trace_model
from hwprune.pruner.groups import PrunableDim, build_graph, check_matches, find_dims
from hwprune.sizes import Size, hw, to_json

# Savings under this share of the latency of the layers a dimension touches are noise: the
# profiler times each row to a 95% CI of +-1% of its median (TimingConfig.rel_ci), so a
# difference of two rows smaller than that is not one the table can vouch for.
PLAN_NOISE = 0.01
# An edge saves at least this many times the dimension's median saving per group.
EDGE_FACTOR = 2.0


@dataclass
class PlanConfig:
    group_size: int = 16  # the pruner's group (paper): what one removal takes away
    noise: float = PLAN_NOISE
    target_latency_ms: float | None = None
    # A measured ratio is checked here against the LUT: target = ratio x the estimate now.
    target_measured_ratio: float | None = None

    def check(self) -> "PlanConfig":
        if self.group_size < 1:
            raise ValueError(f"group size {self.group_size} < 1")
        if not 0 <= self.noise < 1:
            raise ValueError(f"noise {self.noise} outside [0, 1)")
        if self.target_latency_ms is not None and self.target_measured_ratio is not None:
            raise ValueError("give --target-latency or --target-measured-ratio, not both")
        if self.target_latency_ms is not None and self.target_latency_ms <= 0:
            raise ValueError(f"target latency {self.target_latency_ms} ms is not positive")
        if self.target_measured_ratio is not None and not 0 < self.target_measured_ratio < 1:
            raise ValueError(f"target ratio {self.target_measured_ratio} outside (0, 1)")
        return self


@dataclass
class Reach:
    now_ms: float
    floor_ms: float
    calibrated: bool
    target_ms: float | None = None
    target_from: str | None = None  # "latency" or "measured ratio R"

    @property
    def max_speedup(self) -> float:
        return self.now_ms / self.floor_ms

    @property
    def reachable(self) -> bool | None:
        if self.target_ms is None:
            return None
        return self.floor_ms <= self.target_ms < self.now_ms

    @property
    def margin_ms(self) -> float | None:
        """How far above the floor the target is (negative: below it, out of reach)."""
        return None if self.target_ms is None else self.target_ms - self.floor_ms

    def as_dict(self) -> dict:
        return {**asdict(self), "max_speedup": self.max_speedup, "reachable": self.reachable,
                "margin_ms": self.margin_ms}


@dataclass
class LayerTime:
    name: str
    op: str
    ms: float        # the LUT's operator latency now (before calibration)
    floor_ms: float  # ... with every prunable dimension at its last group
    macs: int
    prunable: bool   # some prunable dimension changes this operator


@dataclass
class Stairs:
    """One prunable dimension's latency curve, a group at a time from now to its floor."""

    root: str                  # its first producing layer
    producers: tuple[str, ...]
    channels: int
    counts: list[int]          # channel counts: now, one group less, ... down to the floor
    total_ms: list[float]      # the network's estimate at each count (other dimensions as now)
    touched_ms: float          # now, the operators this dimension changes (before calibration)
    threshold_ms: float        # the noise threshold of one removal's saving
    savings_ms: list[float] = field(default_factory=list)  # counts[i] -> counts[i + 1]
    edges: list[int] = field(default_factory=list)  # counts whose removal crosses a step
    free: int = 0              # removals that save under the threshold
    slower: int = 0            # ... of which make the network slower by more than it

    @property
    def step_width(self) -> int | None:
        """Channels between consecutive edges (median); None with fewer than two edges."""
        return int(np.median(-np.diff(self.edges))) if len(self.edges) > 1 else None

    @property
    def saving_ms(self) -> float:
        return self.total_ms[0] - self.total_ms[-1]

    def as_dict(self) -> dict:
        return {**asdict(self), "step_width": self.step_width, "saving_ms": self.saving_ms}


@dataclass
class Plan:
    model: str
    lut: str
    input_size: Size
    group_size: int
    noise: float
    reach: Reach
    layers: list[LayerTime]
    stairs: list[Stairs]
    calibration: dict | None = None
    sparse: bool = False  # a table of validation keys: no staircase

    @property
    def untouched_ms(self) -> float:
        """Operators no prunable dimension changes: stem input, pools, classifier outputs."""
        return float(sum(layer.ms for layer in self.layers if not layer.prunable))

    def as_dict(self) -> dict:
        ms = np.array([layer.ms for layer in self.layers])
        flops = np.array([layer.macs for layer in self.layers], dtype=float)
        layers = [{**asdict(layer), "latency_share": float(t / ms.sum()),
                   "flops_share": float(f / flops.sum()) if flops.sum() else 0.0}
                  for layer, t, f in zip(self.layers, ms, flops)]
        return {"model": self.model, "lut": self.lut, "input_size": to_json(self.input_size),
                "group_size": self.group_size, "noise": self.noise,
                "edge_factor": EDGE_FACTOR, "reach": self.reach.as_dict(),
                "calibration": self.calibration, "untouched_ms": self.untouched_ms,
                "sparse_table": self.sparse,
                "layers": layers, "stairs": [s.as_dict() for s in self.stairs]}


def floor_model(latency: LatencyModel, dims: list[PrunableDim], group: int) -> LatencyModel:
    """A copy of ``latency`` with every dimension cut to its last group (as the pruner
    removes them: whole groups from the top, never emptying a layer)."""
    model = copy.deepcopy(latency)
    cuts = {d.lut_dim: (math.ceil(d.channels / group) - 1) * group for d in dims}
    model.remove_many({j: k for j, k in cuts.items() if k > 0})
    return model


def prunable_dims(model: nn.Module, input_size: Size, in_channels: int,
                  lut: Lut | LatencyTable, sparse: bool = False
                  ) -> tuple[list[PrunableDim], LatencyModel]:
    """The dimensions the pruner would prune (Torch-Pruning's groups, matched to the LUT's
    latency model) and that model (``sparse``: of a table of validation keys, exact keys
    only)."""
    trace = trace_model(model, input_size, in_channels)
    example = torch.zeros(1, in_channels, *hw(input_size))
    dims = find_dims(model, build_graph(model, example), trace)
    latency = LatencyModel(trace, lut, allow_sparse=sparse)
    check_matches(dims, trace)
    return dims, latency


def staircases(latency: LatencyModel, dims: list[PrunableDim], group: int,
               noise: float) -> list[Stairs]:
    """Every dimension's curve, one group at a time (``delta_ms`` answers all dimensions
    for one removal size in one batched lookup)."""
    now = latency.total_ms
    widest = max(d.channels for d in dims)
    deltas = {k: latency.delta_ms(k) for k in range(group, widest, group)}
    out = []
    for d in dims:
        ks = [0] + [k for k in range(group, d.channels, group)]
        total = [now] + [float(now + deltas[k][d.lut_dim]) for k in ks[1:]]
        touched = float(latency.layer_ms[latency.layers_of(d.lut_dim)].sum())
        s = Stairs(d.root, d.producers, d.channels, [d.channels - k for k in ks], total,
                   touched, noise * touched * latency.slope)
        s.savings_ms = [a - b for a, b in zip(total, total[1:])]
        if s.savings_ms:
            typical = float(np.median(s.savings_ms))
            s.free = int(sum(v < s.threshold_ms for v in s.savings_ms))
            s.slower = int(sum(v < -s.threshold_ms for v in s.savings_ms))
            s.edges = [c for c, v in zip(s.counts, s.savings_ms)
                       if v >= s.threshold_ms and v >= EDGE_FACTOR * typical]
        out.append(s)
    return out


def make_plan(model: nn.Module, lut: Lut | LatencyTable, input_size: Size, in_channels: int,
              cfg: PlanConfig | None = None, name: str = "model") -> Plan:
    """The plan of ``model`` on the device ``lut`` was measured on (module docstring)."""
    cfg = (cfg or PlanConfig()).check()
    # A table of validation keys (profile --for-validation) holds the original and the
    # every-dimension-at-its-smallest variant: reach and shares, but no staircase.
    sparse = is_sparse(lut)
    dims, latency = prunable_dims(model, input_size, in_channels, lut, sparse)
    if not dims:
        raise ValueError(f"{name} has no prunable channel group")
    floor = floor_model(latency, dims, cfg.group_size)
    now = latency.total_ms
    if cfg.target_measured_ratio is not None:
        target, source = cfg.target_measured_ratio * now, \
            f"measured ratio {cfg.target_measured_ratio:g} x the estimate now"
    else:
        target, source = cfg.target_latency_ms, "latency" if cfg.target_latency_ms else None
    reach = Reach(now, floor.total_ms, latency.lut.calibration is not None, target, source)
    touched = {i for d in dims for i in latency.layers_of(d.lut_dim)}
    layers = [LayerTime(n, k.op, float(ms), float(fm), int(macs(k)), i in touched)
              for i, (n, k, ms, fm) in enumerate(zip(latency.names, latency.keys,
                                                     latency.layer_ms, floor.layer_ms))]
    plan = Plan(name, str(getattr(lut, "source", "")), input_size, cfg.group_size, cfg.noise,
                reach, layers,
                [] if sparse else staircases(latency, dims, cfg.group_size, cfg.noise),
                latency.lut.calibration, sparse)
    plan.latency, plan.dims = latency, dims  # for the time plan (pruner.job_cost)
    return plan


__all__ = ["PLAN_NOISE", "EDGE_FACTOR", "PlanConfig", "Plan", "Reach", "LayerTime", "Stairs",
           "floor_model", "make_plan", "prunable_dims", "staircases"]
