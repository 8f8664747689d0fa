"""In-network calibration of a LUT: from the sum of operators timed alone to a network's latency.

An operator timed alone, thousands of times in a row, runs with everything warm: its
code in the instruction cache and branch predictors, its output buffer reused. Inside a
network every operator follows different ones, so on a CPU the same shapes take longer
(measured on the 2-core dev VM: convs 3-17%, BatchNorm and ReLU 2-5x, about 10 us each),
and the sum of rows underestimates a whole network by 10-25%, proportionally more than
by a constant. A calibration measures a few pruned variants of the model end to end in
the table's own mode, fits ``measured = slope x operator sum + per_op_ms x operators``
(the intercept, spread over the network's operators, so that it carries over to networks
of other depth) or ``measured = slope x operator sum``, whichever predicts left-out
variants better (``luts.fit``), and stores the fit in the table's metadata. ``Lut`` then reports
calibrated estimates; the pruner's delta query scales by the slope.

The calibration variants are random draws under their own seed, one at each of ``samples``
depths spread evenly from 15% of the channels to all (``spread_depths``), never the fixed variants
(original, uniform, lopsided, extreme) that ``lut validate`` always measures, and their
channel counts are stored so that validation can leave out any it happens to share.
Spread, because drawn at random depths the eight variants of an ONNX Runtime mobilenet_v2
table (2026-11-29) had operator sums of 0.52-1.77 ms where the model's own is 2.42 ms: the
fit extrapolated, and the largest of them, measured 1.92 ms in one run and 1.64 ms in
another, moved its slope from 1.14 to 0.94 (validation MAPE 5.4% and 8.5%).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hwprune.luts.estimate import estimate_trace
from hwprune.luts.fit import (NOISY_FIT_R2, TooFewVariants, choose_calibration, describe_holdout,
                      fit_calibration, holdout_check)
from hwprune.luts.lookup import DEFAULT_STAT, STATS, Lut, table_input_size
from hwprune.sizes import Size, hw, to_json
from hwprune.luts.variants import (VariantPlan, add_rounds, build_variant, lut_step, measure_interleaved,
                           on_table_speed, plan_variants, spread_depths, timing_of)
from hwprune.profiler.coupling import dimensions
from hwprune.profiler.drift import DriftReference, reference_config
from hwprune.profiler.keyspace import trace_model
from hwprune.profiler.runtime_timing import RuntimeNets, time_session
from hwprune.profiler.table import LutError, now_iso, read_lut, write_lut
from hwprune.profiler.timing import model_input, prepare_model
from hwprune.zoo import resolve_model

# Far from `lut validate`'s default seeds, so the two sets of random draws differ.
CALIBRATION_SEED = 1_000_003


@dataclass
class CalibrateConfig:
    model: str
    lut: Path
    samples: int = 8             # random pruned variants measured end to end
    input_size: Size | None = None
    seed: int = CALIBRATION_SEED
    rounds: int = 3              # interleaved passes over the variants
    max_reps: int = 1000
    progress: bool = True
    # Seconds of end-to-end measurement in all; None: as long as the table's own scan took
    # (its rows' device seconds), at least 5 and at most 60 (calibration_budget).
    budget_s: float | None = None


def calibration_budget(rows_seconds: float) -> float:
    """A calibration costs no more than the scan it calibrates, within [5, 60] s."""
    return min(60.0, max(5.0, rows_seconds))


def calibrate(cfg: CalibrateConfig) -> dict:
    """Measure ``cfg.samples`` pruned variants, fit, and store the calibration in the LUT."""
    t0 = time.perf_counter()
    raw = Lut.load(cfg.lut)
    raw.meta.pop("calibration", None)  # the fit is always against the plain operator sums
    require_grid(raw, cfg.lut)
    budget = cfg.budget_s if cfg.budget_s is not None else \
        calibration_budget(float(raw.rows["seconds"].sum()))
    tc = timing_of(raw, cfg.max_reps)
    resolved = resolve_model(cfg.model)
    size = table_input_size(raw.meta, resolved.name, cfg.input_size, resolved.input_size)
    trace = trace_model(resolved.module, size, resolved.in_channels)
    dims = dimensions(trace.layers, trace.frozen_dims)
    plans = calibration_plans(dims, lut_step(raw), cfg.samples, cfg.seed, cfg.lut, resolved.name)
    example = torch.randn(1, resolved.in_channels, *hw(size))
    # A runtime table is calibrated on its variants run in that runtime (exported, checked
    # against PyTorch and loaded once, like `lut validate --runtime`).
    runtime = RuntimeNets(raw.runtime, size, resolved.in_channels, tc.threads or 1) \
        if raw.runtime != "torch" else None
    try:
        cs = calibration_nets(raw, resolved.module, trace, dims, plans, example, size,
                              resolved.in_channels,
                              lambda tag, net: runtime.add(tag, net) if runtime
                              else prepare_model(net, tc))
        nets, sums, n_ops = cs.nets, cs.sums, cs.n_ops
        # Exporting to a runtime takes seconds per variant: the budget is for measuring.
        t_budget = time.perf_counter() if runtime else t0
        return _measure_and_store(cfg, raw, tc, resolved, size, nets, sums, n_ops, budget, t0,
                                  t_budget, runtime)
    finally:
        if runtime:
            runtime.close()


def _measure_and_store(cfg: CalibrateConfig, raw: Lut, tc, resolved, size: Size, nets: dict,
                       sums: dict, n_ops: int, budget: float, t0: float, t_budget: float,
                       runtime: RuntimeNets | None) -> dict:
    # What is left of the budget after building the variants, shared by every measurement,
    # caps each one's adaptive repetitions (which usually stop sooner, at the median's 1% CI).
    left = budget - (time.perf_counter() - t_budget)
    tc.max_seconds = max(0.2, left / (len(nets) * cfg.rounds) - 0.1)
    tc.validate()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(tc.threads)
    # The variants are put on the speed the table's rows were put on (profiler.drift), so
    # the fit is not bent by how fast the machine ran while they were measured.
    level, ref_key = raw.drift_level_ms, raw.drift_key
    reference = DriftReference(ref_key, reference_config(tc), runtime=raw.drift_runtime) \
        if ref_key else None
    x_in = model_input(tc, resolved.in_channels, size)
    first_r2 = None
    timer = (lambda s: time_session(s, x_in.numpy(), tc)) if runtime else None
    try:
        samples, stds = measure_interleaved(nets, x_in, tc, cfg.rounds, cfg.progress,
                                            reference, timer)
        fits = fit_all(sums, samples, nets, level, n_ops)
        if fits[DEFAULT_STAT]["r2"] < NOISY_FIT_R2:
            # The variants scatter about the line: the machine's speed moved under them.
            # As many rounds again (the budget once more, only in this case), medians over
            # all: one slow moment then moves no variant's median.
            first_r2 = fits[DEFAULT_STAT]["r2"]
            add_rounds((samples, stds), measure_interleaved(nets, x_in, tc, cfg.rounds,
                                                            cfg.progress, reference, timer))
            fits = fit_all(sums, samples, nets, level, n_ops)
    finally:
        torch.set_num_threads(old_threads)
        if reference:
            reference.close()
    result = {**calibration_record(resolved.name, size, cfg.seed, raw.runtime, list(nets),
                                   sums, samples, fits, level),
              "rounds": len(next(iter(samples.values()))[DEFAULT_STAT]),
              "remeasured_after_r2": first_r2,
              "budget_s": budget, "seconds": time.perf_counter() - t0}
    store_calibration(cfg.lut, result)
    return result


def require_grid(table: Lut, path) -> None:
    """A calibration is of a table that covers the model's whole grid: refuse another."""
    if any(s.get("keys") for s in table.meta.get("sources", [])):
        raise LutError(f"LUT {path} holds only listed keys (`--for-validation`): calibrate "
                       f"a table that covers the model's whole grid")


def calibration_plans(dims: list, step: int, samples: int, seed: int = CALIBRATION_SEED,
                      lut: object = "the table", model: str = "the model") -> list[VariantPlan]:
    """The random variants a calibration measures: one draw at each of ``samples`` depths.
    Fewer than 3 (a coarse grid) cannot be fitted: TooFewVariants names ``lut`` and ``model``."""
    plans = [p for p in plan_variants(dims, step, samples + 8, seed, spread_depths(samples))
             if p.kind == "random"][:samples]
    if len(plans) < 3:
        raise TooFewVariants(f"cannot calibrate {lut}: its grid gives only {len(plans)} "
                             f"random pruned variants of {model}, a fit needs at least 3")
    return plans


@dataclass
class CalibrationNets:
    nets: dict      # tag (channel counts) -> what the timer measures
    sums: dict      # statistic -> the uncalibrated operator sum of each net, in order
    n_ops: int      # operators in one net (the table's runtime's, for a runtime table)


def calibration_nets(table: Lut, module, trace, dims: list, plans: list[VariantPlan],
                     example: torch.Tensor, size: Size, in_channels: int,
                     prepare) -> CalibrationNets:
    """Each plan built, its operator sum looked up in ``table`` without any calibration,
    and ``prepare(tag, net)`` made of it (a loaded runtime model, or a prepared module)."""
    meta = {k: v for k, v in table.meta.items() if k != "calibration"}
    by_stat = {s: Lut(table.rows, meta, s, table.source) for s in STATS}  # indexed once
    nets, sums, n_ops = {}, {s: [] for s in STATS}, 0
    for plan in plans:
        net = build_variant(module, trace, dims, plan.channels, example)
        vt = trace_model(net, size, in_channels)
        for s, t in by_stat.items():
            est = estimate_trace(vt, t)
            sums[s].append(est.total_ms)
        n_ops = len(est.layers)
        tag = " ".join(map(str, plan.channels))
        nets[tag] = prepare(tag, net)
    return CalibrationNets(nets, sums, n_ops)


def calibration_record(model: str, size: Size, seed: int, runtime: str, tags: list[str],
                       sums: dict, samples: dict, fits: dict, level: float | None) -> dict:
    """What a table stores of a calibration (``samples`` keyed by ``tags``)."""
    return {"model": model, "input_size": to_json(size), "seed": seed, "runtime": runtime,
            "measured": now_iso(), "variants": tags, "fits": fits,
            "stat": DEFAULT_STAT, "operator_sum_ms": sums[DEFAULT_STAT],
            "measured_ms": [float(np.median(on_table_speed(samples[t], DEFAULT_STAT, level)))
                            for t in tags],
            "drift_corrected": level is not None,
            "measured_raw_ms": [float(np.median(samples[t][DEFAULT_STAT])) for t in tags]}


def store_calibration(path: Path, record: dict) -> None:
    """The table at ``path`` rewritten (atomically) with ``record`` as its calibration."""
    rows, meta = read_lut(path)
    meta["calibration"] = record
    write_lut(rows, meta, path)


def fit_all(sums: dict, samples: dict, nets: dict, level: float | None, n_ops: int) -> dict:
    """Both forms fitted for every statistic, on the variants put on the table's speed."""
    fits = {}
    for s in STATS:
        y = np.array([np.median(on_table_speed(samples[t], s, level)) for t in nets])
        fits[s] = choose_calibration(np.array(sums[s]), y, n_ops)
    return fits


__all__ = ["CalibrateConfig", "calibrate", "calibration_plans", "calibration_nets",
           "calibration_record", "store_calibration", "fit_all", "require_grid", "fit_calibration",
           "holdout_check", "describe_holdout", "CALIBRATION_SEED", "TooFewVariants"]
