"""Measuring a pruned network against its teacher: interleaved rounds, the per-round ratio
and its verdict against a budget, in PyTorch or in a deployment runtime."""

from __future__ import annotations

import contextlib
import copy
from typing import Callable

import numpy as np
import torch

from hwprune.luts import Lut
from hwprune.luts.variants import timing_of
from hwprune.luts.variants import measure_interleaved
from hwprune.luts.verdict import ratio_verdict, spread_warning, verdict_of
from hwprune.profiler.runtime_timing import RuntimeNets, time_session
from hwprune.profiler.timing import model_input, prepare_model, time_model


def measure_pair(teacher, student, lut: Lut, size: "int | tuple[int, int]", in_ch: int, rounds: int,
                 max_reps: int = 1000, goal: float | None = None,
                 previous: dict | None = None, runtime: str = "torch",
                 runtime_nets: RuntimeNets | None = None) -> dict:
    """Both networks end to end in the LUT's mode, interleaved in ``rounds`` rounds.

    Each round's median (robust to the bursts of a shared machine) is kept; each network's
    latency is the median over rounds, with the rounds' spread (max - min) / median beside
    it. The ratio pruned / teacher is taken round by round (the two are timed back to back,
    so a drift of the machine cancels): ``ratio`` is the median of these, ``ratio_low`` and
    ``ratio_high`` its sign-test confidence interval (luts/verdict.py), and with a ``goal``
    (the largest ratio allowed) ``verdict`` is met, missed or uncertain. ``previous`` (an
    earlier result for the same two networks) is extended by ``rounds`` more rounds.

    ``runtime`` (onnxruntime, openvino): both are exported, checked against PyTorch and
    timed in that runtime on the CPU, at the LUT's thread count, instead of in PyTorch.
    ``runtime_nets``: a ``RuntimeNets`` of that runtime, kept open by the caller across
    calls, so that a network measured before (the teacher, a student measured again) is not
    exported again; without it each call exports both into a directory of its own.
    """
    tc = timing_of(lut, max_reps)
    x = model_input(tc, in_ch, size)
    samples = {k: list(previous[f"{k}_round_ms"]) if previous else []
               for k in ("teacher", "pruned")}
    old_threads = torch.get_num_threads()
    torch.set_num_threads(tc.threads)  # the LUT's thread count is part of its mode
    where = {"runtime": runtime}
    try:
        if runtime == "torch":
            nets = {"teacher": prepare_model(copy.deepcopy(teacher), tc),
                    "pruned": prepare_model(copy.deepcopy(student), tc)}
            _add_rounds(samples, nets, x, tc, rounds, lambda net: time_model(net, x, tc))
        else:
            lut.check_runtime(runtime, allow_mismatch=True)  # a CPU table
            if runtime_nets is not None and \
                    not runtime_nets.matches(runtime, size, in_ch, tc.threads):
                raise ValueError("measure_pair: the runtime_nets given are of another runtime, "
                                 "input size or thread count")
            with (RuntimeNets(runtime, size, in_ch, tc.threads) if runtime_nets is None
                  else contextlib.nullcontext(runtime_nets)) as rn:
                nets = {k: rn.add(k, copy.deepcopy(m).cpu())
                        for k, m in (("teacher", teacher), ("pruned", student))}
                _add_rounds(samples, nets, x, tc, rounds,
                            lambda s: time_session(s, x.numpy(), tc))
                where = nets["teacher"].info.as_dict()
    finally:
        torch.set_num_threads(old_threads)
    return summarize_pair(samples["teacher"], samples["pruned"], goal,
                          device=tc.device, stat="median of per-round medians", runtime=where)


def _add_rounds(samples: dict, nets: dict, x: torch.Tensor, tc, rounds: int, timer) -> None:
    """``rounds`` more interleaved rounds (luts.variants.measure_interleaved): each round's
    median per network appended to ``samples``."""
    got, _ = measure_interleaved(nets, x, tc, rounds, progress=False, timer=timer)
    for k in nets:
        samples[k] += got[k]["median_ms"]


def summarize_pair(teacher_rounds: list[float], pruned_rounds: list[float],
                   goal: float | None = None, **extra) -> dict:
    """``measure_pair``'s result from the per-round medians of the two networks."""
    out = {f"{k}_ms": float(np.median(v)) for k, v in (("teacher", teacher_rounds),
                                                         ("pruned", pruned_rounds))}
    out.update({f"{k}_spread": float(np.ptp(v) / np.median(v))
                for k, v in (("teacher", teacher_rounds), ("pruned", pruned_rounds))})
    out["speedup"] = out["teacher_ms"] / out["pruned_ms"]
    out["teacher_round_ms"] = [float(t) for t in teacher_rounds]
    out["pruned_round_ms"] = [float(p) for p in pruned_rounds]
    out["round_ratios"] = [p / t for t, p in zip(out["teacher_round_ms"],
                                                  out["pruned_round_ms"])]
    v = ratio_verdict(out["round_ratios"], goal)
    out.update(ratio=v.ratio, ratio_low=v.low, ratio_high=v.high,
               ratio_confidence=v.confidence, ratio_spread=v.spread)
    if goal is not None:
        out.update(goal=goal, verdict=v.verdict, verdict_text=v.text)
    out["spread"] = max(out["teacher_spread"], out["pruned_spread"])
    out["spread_warning"] = spread_warning(out["spread"])
    out.update(rounds=len(out["round_ratios"]), **extra)
    return out


def measure_until_settled(measure: Callable[[dict | None], dict], goal: float | None,
                          max_rounds: int) -> dict:
    """``measure(None)``, then ``measure(previous)`` (more rounds of the same two networks)
    while the verdict against ``goal`` is "uncertain" and fewer than ``max_rounds`` rounds
    were taken; the result is then ``settle``d.

    More rounds narrow the interval (from 8 rounds on the sign test drops the extremes, so
    one burst of a shared machine no longer decides it); a machine too noisy for even
    ``max_rounds`` is decided on its point estimate, and the result says so.
    """
    m = measure(None)
    v = verdict_of(m, goal)
    while v.verdict == "uncertain" and v.rounds < max_rounds:
        m = measure(m)
        longer = verdict_of(m, goal)
        if longer.rounds <= v.rounds:
            raise RuntimeError("measure(previous) added no round")
        v = longer
    return settle(m, goal, max_rounds)


def measure_settled(teacher, student, lut: Lut, size: "int | tuple[int, int]", in_ch: int,
                    rounds: int, max_reps: int, goal: float | None, runtime: str = "torch",
                    runtime_nets: RuntimeNets | None = None) -> dict:
    """A verdict from a fresh measurement of ``student`` against ``teacher``: ``rounds``
    new interleaved rounds, up to twice as many while uncertain, then ``settle``d. What a
    prune job reports, and what the baselines are judged by."""
    return measure_until_settled(
        lambda prev: measure_pair(teacher, student, lut, size, in_ch, rounds, max_reps, goal,
                                  previous=prev, runtime=runtime, runtime_nets=runtime_nets),
        goal, 2 * rounds)


def settle(m: dict, goal: float | None, max_rounds: int) -> dict:
    """``m`` with ``settled`` (met or missed) and ``settled_by``: the interval's verdict
    when it has one, else the point estimate (the median per-round ratio) against ``goal``,
    which is what a quieter machine, whose interval would shrink around that median, says."""
    if goal is None:
        return m
    v = verdict_of(m, goal)
    if v.verdict != "uncertain":
        return {**m, "settled": v.verdict, "settled_by": "interval"}
    return {**m, "settled": "met" if v.ratio <= goal else "missed",
            "settled_by": f"point estimate (the interval still straddled the budget after "
                          f"{v.rounds} rounds, the limit being {max(max_rounds, v.rounds)})"}


__all__ = ["measure_pair", "summarize_pair", "measure_until_settled", "measure_settled",
           "settle"]
