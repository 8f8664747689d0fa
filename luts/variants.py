"""Pruned variants of a network for validating a LUT: channel counts drawn on the LUT's grid,
respecting coupling, physically removed with Torch-Pruning's dependency graph."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from hwprune.luts.lookup import STATS, Lut
from hwprune.profiler.coupling import Dimension
from hwprune.profiler.drift import DriftReference
from hwprune.profiler.keyspace import Trace, channel_grid
from hwprune.profiler.table import LutError
from hwprune.profiler.timing import Stats, TimingConfig, time_model
from hwprune.zoo.models import shrink_to


# Seconds one whole-network measurement takes at most (the scan's 20 s per key let one
# validation of 12 variants in 3 rounds take 5 minutes on a noisy VM) and at least (a
# shorter window catches a whole hiccup of a shared VM in one round: profiler.clock).
NETWORK_MAX_SECONDS = 3.0
NETWORK_MIN_SECONDS = 0.5


def timing_of(lut: Lut, max_reps: int, max_seconds: float = NETWORK_MAX_SECONDS,
              min_seconds: float = NETWORK_MIN_SECONDS) -> TimingConfig:
    """The LUT's own timing mode, to measure whole networks exactly as its rows were."""
    m = lut.meta
    return TimingConfig(device=m["device_kind"], dtype=m["dtype"], batch=int(m["batch"]),
                        channels_last=m["memory_format"] == "channels_last",
                        mode=m["timing_mode"], threads=m.get("threads") or None,
                        max_reps=max_reps, max_seconds=max_seconds,
                        min_seconds=min_seconds).validate()


def lut_step(lut: Lut) -> int:
    steps = {int(s["step"]) for s in lut.meta.get("sources", [])}
    if len(steps) != 1:
        raise LutError(f"LUT {lut.source}: cannot tell its grid step (sources: {sorted(steps)})")
    return steps.pop()


@dataclass
class VariantPlan:
    kind: str                 # original, uniform-0.50, lopsided-early, extreme-min, random, ...
    channels: tuple[int, ...]  # target channel count per prunable dimension


def _at_fraction(grid: list[int], c: int, f: float) -> int:
    """The smallest grid value >= f * c (so 'uniform 0.5' keeps at least half)."""
    return next((g for g in grid if g >= f * c), grid[-1])


def spread_depths(n: int, low: float = 0.15) -> list[float]:
    """``n`` pruning depths (kept fractions) evenly over [low, 1]: random draws at these span
    the model's whole range, from nearly the smallest network to nearly the original."""
    return [low + (1 - low) * i / max(1, n - 1) for i in range(n)]


def plan_variants(dims: list[Dimension], step: int, n: int, seed: int = 0,
                  depths: list[float] | None = None) -> list[VariantPlan]:
    """``n`` variants: original, extreme, uniform and lopsided ones first, then random draws
    (each at a random depth, or at ``depths`` in turn: one random draw per depth)."""
    grids = [channel_grid(d.channels, step) for d in dims]
    full = tuple(d.channels for d in dims)
    half = len(dims) // 2
    fixed = [VariantPlan("original", full),
             VariantPlan("extreme-min", tuple(g[0] for g in grids))]
    for f in (0.75, 0.5, 0.25):
        fixed.append(VariantPlan(f"uniform-{f:.2f}",
                                 tuple(_at_fraction(g, d.channels, f) for g, d in zip(grids, dims))))
    fixed.append(VariantPlan("lopsided-early", tuple(
        g[0] if i < half else d.channels for i, (g, d) in enumerate(zip(grids, dims)))))
    fixed.append(VariantPlan("lopsided-late", tuple(
        d.channels if i < half else g[0] for i, (g, d) in enumerate(zip(grids, dims)))))
    rng = np.random.default_rng(seed)
    plans: list[VariantPlan] = []
    seen: set[tuple[int, ...]] = set()
    for p in fixed:  # on a coarse grid some of these coincide: keep the first of each
        if p.channels not in seen and len(plans) < n:
            seen.add(p.channels)
            plans.append(p)
    tries = 0
    while len(plans) < n and tries < 100 * n:
        tries += 1
        # Random depth of pruning per variant, then per-dimension draws around it.
        if depths is None:
            keep, sd = rng.uniform(0.15, 1.0), 0.2
        else:  # the spread narrows towards the whole network, so the top depth stays near it
            keep = depths[sum(p.kind == "random" for p in plans) % len(depths)]
            sd = 0.2 * (1 - keep) + 0.05
        chans = tuple(int(g[min(len(g) - 1, max(0, round(rng.normal(keep, sd) * len(g)) - 1))])
                      for g in grids)
        if chans not in seen:
            seen.add(chans)
            plans.append(VariantPlan("random", chans))
    return plans


def build_variant(model: nn.Module, trace: Trace, dims: list[Dimension], channels: tuple[int, ...],
                  example: torch.Tensor) -> nn.Module:
    """A physically smaller copy of ``model`` with ``channels[j]`` channels in dimension j."""
    spec = {trace.layers[d.producers[0]].name: target for d, target in zip(dims, channels)}
    return shrink_to(copy.deepcopy(model).eval(), spec, example)


def round_spread(values) -> float:
    """(max - min) / median of one net's per-round values: how far its rounds disagree."""
    return float(np.ptp(values) / np.median(values))


def add_rounds(into: tuple[dict, dict], more: tuple[dict, dict]) -> None:
    """``measure_interleaved``'s (samples, stds) of further rounds appended to ``into``'s."""
    (samples, stds), (more_samples, more_stds) = into, more
    for tag in samples:
        for k, v in more_samples[tag].items():
            samples[tag][k] += v
        stds[tag] += more_stds[tag]


def measure_interleaved(nets: dict, x: torch.Tensor, tc: TimingConfig, rounds: int,
                        progress: bool = True, reference: DriftReference | None = None,
                        timer: Callable[[Any], Stats] | None = None) -> tuple[dict, dict]:
    """Every net timed end to end in ``rounds`` interleaved passes, so a slow drift of the
    machine hits all alike. Returns ({tag: {stat: [per round]}}, {tag: [std per round]}).

    With a ``reference`` (the table's drift key), it is read just before each net, and
    the readings are returned per net and round under the stat ``"ref_ms"``. ``timer``
    times one net (default: ``time_model(net, x, tc)``; a runtime's loaded models are
    timed with ``profiler.runtime_timing.time_session``).
    """
    timer = timer or (lambda net: time_model(net, x, tc))
    samples = {tag: {s: [] for s in (*STATS, "ref_ms")} for tag in nets}
    stds: dict = {tag: [] for tag in nets}
    bar = tqdm(total=len(nets) * rounds, unit="net", disable=not progress)
    with torch.inference_mode(), bar:
        for _ in range(rounds):
            for tag, net in nets.items():
                samples[tag]["ref_ms"].append(reference.read() if reference else float("nan"))
                st = timer(net)
                for s in STATS:
                    samples[tag][s].append(getattr(st, s))
                stds[tag].append(st.std_ms)
                bar.update()
    return samples, stds


def on_table_speed(samples: dict, stat: str, level_ms: float | None) -> list[float]:
    """One net's per-round ``stat`` put on the table's speed: x level / the reading taken
    beside it (``profiler.drift``); as measured without a level or readings."""
    values = np.asarray(samples[stat], dtype=float)
    refs = np.asarray(samples.get("ref_ms", [np.nan] * len(values)), dtype=float)
    if level_ms is None or not np.isfinite(refs).all():
        return list(values)
    return list(values * level_ms / refs)
