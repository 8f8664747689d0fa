"""Prune until the *measured* latency meets the budget, with the LUT as the first guess.

A LUT estimate and the network's measured latency can differ by more than a budget's
margin: on a CPU the framework's per-operator overhead is not in any operator timed
alone, and a shared machine drifts. When the budget is "at most R x the teacher's
latency, measured here", the job prunes to a LUT target, measures student and teacher
in the LUT's mode (interleaved rounds, so the ratio comes from one run), and, while the
ratio is above R, lowers the LUT target by the factor it missed by and prunes on.
The LUT still decides *which* groups go; measurement only decides when to stop.

The stop is honest about noise: each measurement gives a per-round ratio interval
(luts/verdict.py). "met" when the interval's top is within R, "missed" when its bottom is
above R; while it straddles R ("uncertain") more rounds are measured, up to
``max_rounds``, and an interval that still straddles R is settled by its point estimate
(the median per-round ratio), as the record says. Noise therefore never makes the loop
prune on where the median meets the budget: treating "uncertain" as a miss pruned the
CPU example of issue 31 from 5,272 to 2,456 filters, ending at 0.48 of the teacher for a
budget of 0.60. A correction aims at the median too, not at the interval's top, which a
burst widens (aiming there over-pruned the demo's 50% budget to 32%, 2026-11-29).

The loop's measurements decide when to stop; the job's reported verdict comes from a
fresh measurement afterwards (pruner/run.py), since a stop taken on a lucky round would
otherwise be its own evidence.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from hwprune.luts import Lut
from hwprune.luts.verdict import RatioVerdict, verdict_of
from hwprune.pruner.data import ImageSet
from hwprune.pruner.measure import measure_until_settled
from hwprune.pruner.schedule import Pruner, TargetError


def close_loop(pruner: Pruner, teacher: torch.nn.Module, lut: Lut, goal: float, retries: int,
               measure: Callable[..., dict], data: ImageSet,
               run_kwargs: dict, rank: int = 0, world: int = 1,
               max_rounds: int = 0) -> list[dict]:
    """Measure, and prune further until the measured ratio is surely at most ``goal``.

    Returns one record per measurement, each with the ratio, its interval, the verdict
    against ``goal`` and what settled it (``settled``, ``settled_by``: the interval, or the
    point estimate once ``max_rounds`` rounds still straddle the goal).
    ``measure(teacher, student, previous)`` must add rounds to ``previous``; it is called
    so while the verdict is "uncertain" and fewer than ``max_rounds`` rounds were taken.
    Stops when the settled verdict is "met", after ``retries`` corrections, or at the
    LUT's floor (every group at its smallest): the last record then says how far the
    measurement still is from the goal.
    """
    history: list[dict] = []
    floor = pruner.floor_ms()
    exhausted = False
    for attempt in range(retries + 1):
        v, settled, spread = _measured_verdict(pruner, teacher, measure, goal, rank, world,
                                               max_rounds)
        est = pruner.latency.total_ms
        history.append({"estimated_ms": est, "measured_ratio": v.ratio, "ratio_low": v.low,
                        "ratio_high": v.high, "ratio_confidence": v.confidence,
                        "rounds": v.rounds, "spread": spread, "verdict": v.verdict,
                        "verdict_text": v.text, "settled": settled,
                        "settled_by": "interval" if settled == v.verdict else "point estimate",
                        "max_rounds": max(max_rounds, v.rounds), "filters": pruner.filters(),
                        "step": pruner.step})
        at_floor = exhausted or est <= floor * (1 + 1e-9)
        if settled == "met" or attempt == retries or at_floor:
            history[-1]["stopped"] = ("met" if v.verdict == "met" else
                                      "met on its point estimate") if settled == "met" else (
                "at the LUT's floor" if at_floor else "out of retries")
            break
        pruner.cfg.target_latency_ms = max(floor, _next_target(history, goal))
        try:
            pruner.run(data, **run_kwargs)
        except TargetError:  # every group at its smallest before the new target
            exhausted = True
    return history


def _next_target(history: list[dict], goal: float) -> float:
    """The LUT estimate expected to measure ``goal``.

    First a proportional step (which under-corrects when the measurement carries an
    overhead the LUT lacks); from two measurements on, the secant through the last two,
    which captures such an overhead, but never less far than the proportional step. The
    ratio corrected is the point estimate (the median per-round ratio), which a burst of
    the machine moves far less than the interval's top.
    """
    last = history[-1]
    est, ratio = last["estimated_ms"], last["measured_ratio"]
    proportional = est * goal / ratio
    if len(history) >= 2:
        prev = history[-2]
        fell, pruned = prev["measured_ratio"] - ratio, prev["estimated_ms"] - est
        # Only a fall above a quiet machine's round-to-round noise (about 2%, i.e. 0.01 of
        # a ratio near 0.5) says how the ratio moves with the estimate; a smaller one, or
        # a rise, would send the secant anywhere.
        if fell > 0.01 and pruned > 0:
            secant = est - (ratio - goal) * pruned / fell
            # at least the proportional step, at most twice as far
            return max(min(proportional, secant), est - 2 * (est - proportional))
    return proportional


def _measured_verdict(pruner: Pruner, teacher: torch.nn.Module, measure, goal: float,
                      rank: int, world: int, max_rounds: int = 0
                      ) -> tuple[RatioVerdict, str, float | None]:
    """Rank 0 measures (more rounds while uncertain, up to ``max_rounds``, then settled by
    the point estimate); every rank gets the same verdict (and so takes the same decision)."""
    vals = [0.0] * 7
    if rank == 0:
        m = measure_until_settled(
            lambda prev: measure(teacher, pruner.student) if prev is None else
            measure(teacher, pruner.student, prev), goal, max_rounds)
        v = verdict_of(m, goal)
        spread = m.get("spread")
        vals = [v.ratio, v.low, v.high, v.confidence, float(v.rounds),
                float("nan") if spread is None else float(spread),
                1.0 if m["settled"] == "met" else 0.0]
    if world > 1:
        import torch.distributed as dist

        t = torch.tensor(vals, dtype=torch.float64, device=pruner.device)
        dist.broadcast(t, 0)
        vals = [float(x) for x in t.tolist()]
    ratio, low, high, conf, rounds, spread, met = vals
    return (RatioVerdict(ratio, low, high, conf, int(rounds), goal),
            "met" if met else "missed", None if math.isnan(spread) else spread)


__all__ = ["close_loop"]
