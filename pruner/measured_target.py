"""Prune until the *measured* latency meets the budget, with the LUT as the first guess.

A LUT estimate and the network's measured latency can differ by more than a budget's
margin: on a CPU the framework's per-operator overhead is not in any operator timed
alone, and a shared machine drifts. When the budget is "at most R x the teacher's
latency, measured here", the job prunes to a LUT target, measures student and teacher
in the LUT's mode (interleaved rounds, so the ratio comes from one run), and, while the
ratio is above R, lowers the LUT target by the factor it missed by and prunes on.
The LUT still decides *which* groups go; measurement only decides when to stop.
"""

from __future__ import annotations

from typing import Callable

import torch

from luts import Lut
from pruner.data import ImageSet
from pruner.schedule import Pruner, TargetError


def close_loop(pruner: Pruner, teacher: torch.nn.Module, lut: Lut, goal: float, retries: int,
               measure: Callable[[torch.nn.Module, torch.nn.Module], dict], data: ImageSet,
               run_kwargs: dict, rank: int = 0, world: int = 1) -> list[dict]:
    """Measure, and prune further while the measured ratio is above ``goal``.

    Returns one record per measurement. Stops when the goal is met, after ``retries``
    corrections, or at the LUT's floor (every group at its smallest): the last record
    then says how far the measurement still is from the goal.
    """
    history: list[dict] = []
    floor = pruner.floor_ms()
    exhausted = False
    for attempt in range(retries + 1):
        ratio = _measured_ratio(pruner, teacher, measure, rank, world)
        est = pruner.latency.total_ms
        history.append({"estimated_ms": est, "measured_ratio": ratio,
                        "filters": pruner.filters(), "step": pruner.step})
        at_floor = exhausted or est <= floor * (1 + 1e-9)
        if ratio <= goal or attempt == retries or at_floor:
            history[-1]["stopped"] = "met" if ratio <= goal else (
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
    which captures such an overhead, but never less far than the proportional step.
    """
    last = history[-1]
    est, ratio = last["estimated_ms"], last["measured_ratio"]
    proportional = est * goal / ratio
    if len(history) >= 2:
        prev = history[-2]
        d_ratio = ratio - prev["measured_ratio"]
        if d_ratio > 1e-9:  # a noisy pair can point the wrong way: then ignore it
            secant = est + (goal - ratio) * (est - prev["estimated_ms"]) / d_ratio
            return min(proportional, secant)
    return proportional


def _measured_ratio(pruner: Pruner, teacher: torch.nn.Module, measure, rank: int,
                    world: int) -> float:
    ratio = 0.0
    if rank == 0:
        m = measure(teacher, pruner.student)
        ratio = m["pruned_ms"] / m["teacher_ms"]
    if world > 1:  # every rank must take the same decision
        import torch.distributed as dist

        t = torch.tensor([ratio], dtype=torch.float64, device=pruner.device)
        dist.broadcast(t, 0)
        ratio = float(t.item())
    return ratio


__all__ = ["close_loop"]
