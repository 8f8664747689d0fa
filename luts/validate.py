"""Prove a LUT: estimate pruned variants of a model, measure them end to end, compare.

Variants are built physically (Torch-Pruning) from channel counts on the LUT's
grid, measured in the LUT's own mode (device, dtype, batch, memory format,
threads) with the profiler's timing discipline, and compared with the
all-operator estimate, the conv-only estimate (paper Eq. 14) and FLOPs and
parameter-count proxies fitted on the same variants. Measured variants are saved
to ``variants.csv``; rerunning the same command reuses them.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hwprune.luts.estimate import estimate_trace
from hwprune.luts.fit import describe_holdout
from hwprune.luts.lookup import DEFAULT_STAT, STATS, Lut, as_lut, table_input_size
from hwprune.sizes import Size, canonical, hw, size_text, to_json
from hwprune.luts.metrics import agreement, macs, proxy_agreement
from hwprune.luts.recalibrate import Recalibration
from hwprune.luts.variants import (add_rounds, build_variant, lut_step, measure_interleaved,
                           on_table_speed, plan_variants, round_spread, timing_of)
from hwprune.luts.verdict import SPREAD_WARN, spread_warning
from hwprune.profiler.coupling import dimensions
from hwprune.profiler.drift import DriftReference, reference_config
from hwprune.profiler.fusion import runtime_trace
from hwprune.profiler.keyspace import OpKey, trace_model
from hwprune.profiler.runtime_timing import RuntimeNets, time_session
from hwprune.profiler.table import LutError, atomic_write_bytes
from hwprune.profiler.timing import TimingConfig, model_input, prepare_model, time_model
from hwprune.zoo import model_label, resolve_model
from hwprune.zoo.models import MODEL_SUFFIXES
from hwprune.zoo.runtimes import check_runtime


@dataclass
class ValidateConfig:
    model: str
    luts: "list[str] | Lut"  # file path(s), or a table held in memory
    out: Path
    samples: int = 30
    input_size: Size | None = None
    seed: int = 0
    stat: str = DEFAULT_STAT     # the statistic summed (luts.lookup: why not the paper's mean)
    max_reps: int = 1000
    rounds: int = 3              # each variant is measured in `rounds` interleaved passes
    strict: bool = False
    allow_mismatch: bool = False
    # Where the variants are measured: torch (the LUT's own mode), or a deployment runtime
    # on the CPU (each variant exported, checked against PyTorch and loaded once).
    # None: the runtime the LUT was timed in.
    runtime: str | None = None
    progress: bool = True
    extra: dict = field(default_factory=dict)
    # Measure the table's calibration variants in the same interleaved rounds as these,
    # refit its calibration on them and store it (``luts.recalibrate``): the fit and the
    # check then see the same machine, which a calibration minutes older need not.
    recalibrate: bool = False
    calibration_samples: int = 8   # when the table has no calibration yet
    fresh: bool = False  # measure every variant again, reusing nothing from ``out``


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, lambda f: f.write(df.to_csv(index=False).encode()))


def validate(cfg: ValidateConfig) -> dict:
    lut = as_lut(cfg.luts, cfg.stat)
    cfg.runtime = cfg.runtime or lut.runtime
    lut.check_runtime(check_runtime(cfg.runtime), cfg.allow_mismatch)
    # One measurement serves every statistic: the report compares each with its own column.
    others = _other_stats(lut, cfg.stat)
    tc = timing_of(lut, cfg.max_reps)  # time_model turns cudnn.benchmark on while it times
    resolved = resolve_model(cfg.model)
    size = table_input_size(lut.meta, resolved.name, cfg.input_size, resolved.input_size)
    trace = trace_model(resolved.module, size, resolved.in_channels)
    estimate_trace(trace, lut, cfg.strict)  # fail early: the LUT must cover the model
    dims = dimensions(trace.layers, trace.frozen_dims)
    plans = plan_variants(dims, lut_step(lut), cfg.samples, cfg.seed)
    cfg.out.mkdir(parents=True, exist_ok=True)
    csv = cfg.out / "variants.csv"
    setting = measurement_setting(tc, cfg.runtime, resolved.name, size)
    # Measurements of an earlier run are reused only for the same variants measured the
    # same way (rows written before the setting was recorded are measured again).
    wanted = {" ".join(map(str, p.channels)) for p in plans}
    rows = {} if cfg.fresh else {tag: r for tag, r in _load_rows(csv).items()
                                 if tag in wanted and r.get("setting") == setting}
    reused = _reused(rows)
    calibrated = set((lut.meta.get("calibration") or {}).get("variants", []))
    example = torch.randn(1, resolved.in_channels, *hw(size))
    x = model_input(tc, resolved.in_channels, size)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(tc.threads)
    t0 = time.perf_counter()
    runtime = RuntimeNets(cfg.runtime, size, resolved.in_channels, tc.threads) \
        if cfg.runtime != "torch" else None
    try:
        nets, traces = {}, {}
        for i, plan in enumerate(plans):
            tag = " ".join(map(str, plan.channels))
            net = build_variant(resolved.module, trace, dims, plan.channels, example)
            vt = trace_model(net, size, resolved.in_channels)
            traces[tag] = vt
            # Estimates are recomputed on every run (the table may have been extended or
            # calibrated since); measurements of an earlier run are reused.
            row = {"variant": i, "kind": plan.kind, "channels": tag, "measured_in": cfg.runtime,
                   "setting": setting,
                   **_estimates(vt, lut, others, cfg.strict),
                   "in_calibration": tag in calibrated,
                   "macs": sum(macs(r.key) for r in vt.layers),
                   "params": sum(p.numel() for p in net.parameters())}
            if tag in rows:
                rows[tag].update(row)
            else:
                rows[tag] = {**row, "measured_ms": np.nan, "measured_std_ms": np.nan, "rounds": 0}
                nets[tag] = runtime.add(tag, net) if runtime else prepare_model(net, tc)
        timer = (lambda s: time_session(s, x.numpy(), tc)) if runtime else None
        recal = Recalibration.build(cfg, lut, resolved, trace, dims, example, size, runtime,
                                    tc) if cfg.recalibrate else None
        cal_samples = _measure(nets, rows, x, tc, cfg, csv, lut, timer,
                               recal.nets if recal else None)
        if recal:  # every row's estimate again, from the table as now calibrated
            lut = recal.store(cal_samples, rows)
            others = _other_stats(lut, cfg.stat)
            calibrated = set(lut.meta["calibration"]["variants"])
            for tag, vt in traces.items():
                rows[tag].update(**_estimates(vt, lut, others, cfg.strict),
                                 in_calibration=tag in calibrated)
            _write_csv(pd.DataFrame(list(rows.values())).sort_values("variant"), csv)
        where = runtime.sessions[next(iter(runtime.sessions))].info.as_dict() \
            if runtime and runtime.sessions else {"runtime": cfg.runtime}
    finally:
        torch.set_num_threads(old_threads)
        if runtime:
            runtime.close()
    df = pd.DataFrame(list(rows.values())).sort_values("variant")
    return _report(df, lut, cfg, tc, size, time.perf_counter() - t0, where,
                   recal.summary(df) if recal else None, reused)


def measurement_setting(tc: TimingConfig, runtime: str, model: str, size: Size) -> str:
    """Everything besides the variant that determines its measurement, as one string: a
    variant measured another way (another thread count, batch, dtype, runtime ...) is not
    the same measurement."""
    return json.dumps({"device": tc.device, "dtype": tc.dtype, "batch": tc.batch,
                       "threads": tc.threads, "mode": tc.mode,
                       "channels_last": tc.channels_last, "runtime": runtime,
                       "model": model, "input_size": to_json(size)}, sort_keys=True)


def _reused(rows: dict) -> dict | None:
    """How many earlier measurements are reused, and when they were made."""
    if not rows:
        return None
    when = sorted(str(r.get("measured_at")) for r in rows.values() if r.get("measured_at"))
    return {"rows": len(rows), "measured_from": when[0] if when else None,
            "measured_to": when[-1] if when else None}


def _other_stats(lut: Lut, stat: str) -> dict:
    """The table read in each other statistic (one measurement serves every statistic)."""
    return {s: Lut(lut.rows, lut.meta, s, lut.source) for s in STATS if s != stat}


def _estimates(vt, lut: Lut, others: dict, strict: bool) -> dict:
    """One variant's estimates from ``lut`` (and from ``others``, each statistic's table)."""
    est = estimate_trace(vt, lut, strict)
    return {"estimate_ms": est.total_ms, "operator_sum_ms": est.operator_sum_ms,
            "conv_only_ms": est.conv_ms,
            **{f"estimate_{s}": estimate_trace(vt, t, strict).total_ms
               for s, t in others.items()},
            "interpolated_layers": est.interpolated}


def variant_keys(model: str, step: int, samples: int, seed: int = 0,
                 input_size: Size | None = None, runtime: str = "torch") -> list[OpKey]:
    """Every operator key that ``validate`` with the same step, samples and seed will look up.

    For a model whose full grid takes too long to profile (resnet50 at step 16 has about
    25,000 keys), profiling just these checks the estimate on the same variants; the
    pruner still needs the whole grid.
    """
    resolved = resolve_model(model)
    size = canonical(input_size or resolved.input_size)
    trace = trace_model(resolved.module, size, resolved.in_channels)
    dims = dimensions(trace.layers, trace.frozen_dims)
    example = torch.randn(1, resolved.in_channels, *hw(size))
    keys: dict[OpKey, None] = {}
    for plan in plan_variants(dims, step, samples, seed):
        net = build_variant(resolved.module, trace, dims, plan.channels, example)
        vt = runtime_trace(trace_model(net, size, resolved.in_channels), runtime)
        keys.update(dict.fromkeys(r.key for r in vt.layers))
    return list(keys)


def _load_rows(csv: Path) -> dict:
    if not csv.exists():
        return {}
    df = pd.read_csv(csv, dtype={"channels": str})
    return {r["channels"]: r for r in df.to_dict("records") if r["rounds"] > 0}


def _measure(nets: dict, rows: dict, x: torch.Tensor, tc: TimingConfig, cfg: ValidateConfig,
             csv: Path, lut: Lut, timer=None, extra: dict | None = None) -> dict:
    """``nets`` measured into their rows (and ``csv``); ``extra`` nets in the same rounds,
    spread among them, their samples returned."""
    ref_key, level = lut.drift_key, lut.drift_level_ms
    extra = extra or {}
    # The gauge is read as the table's rows read it (in the table's runtime), wherever the
    # variants are measured.
    reference = DriftReference(ref_key, reference_config(tc), runtime=lut.drift_runtime) \
        if ref_key and (nets or extra) else None
    order, first_spread = interleave(nets, extra), None
    try:
        samples, stds = measure_interleaved(order, x, tc, cfg.rounds, cfg.progress, reference,
                                            timer)
        spread = _median_spread(samples, cfg.stat)
        if spread > SPREAD_WARN:
            # The machine's speed moved under these rounds (a 30-variant OpenVINO validation
            # on the 2-core VM: 15% median, a best line through estimate and measured at R²
            # 0.96 where the quiet runs reach 0.99): as many rounds again, once, medians over
            # all of them, so that a slow stretch moves no variant's median.
            first_spread = spread
            add_rounds((samples, stds), measure_interleaved(order, x, tc, cfg.rounds,
                                                            cfg.progress, reference, timer))
    finally:
        if reference:
            reference.close()
    for tag in nets:
        mine = samples[tag][cfg.stat]
        rows[tag].update(measured_ms=float(np.median(mine)),
                         ref_ms=float(np.median(samples[tag]["ref_ms"])),
                         measured_on_table_speed_ms=float(np.median(
                             on_table_speed(samples[tag], cfg.stat, level))),
                         **{f"measured_{s}": float(np.median(samples[tag][s])) for s in STATS
                            if s != cfg.stat},
                         measured_std_ms=float(np.median(stds[tag])),
                         measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                         measured_round_spread=round_spread(mine),
                         rounds=len(mine), remeasured_after_spread=first_spread)
    _write_csv(pd.DataFrame(list(rows.values())).sort_values("variant"), csv)
    return {tag: samples[tag] for tag in extra}


def _median_spread(samples: dict, stat: str) -> float:
    """The median over nets of (max - min) / median of their per-round ``stat``."""
    per = [round_spread(v[stat]) for v in samples.values() if len(v[stat]) > 1]
    return float(np.median(per)) if per else 0.0


def interleave(a: dict, b: dict) -> dict:
    """``a`` and ``b`` merged (their keys differ), ``b``'s entries spread evenly among
    ``a``'s, so that neither set alone meets the start or the end of each round."""
    n = len(a) + len(b)
    slots = {int((j + 0.5) * n / len(b)): k for j, k in enumerate(b)}  # distinct: n/len(b) >= 1
    rest = iter(a)
    return {k: (b if k in b else a)[k]
            for k in (slots[i] if i in slots else next(rest) for i in range(n))}


def _report(df: pd.DataFrame, lut: Lut, cfg: ValidateConfig, tc: TimingConfig, size: Size,
            seconds: float, where: dict | None = None, recalibration: dict | None = None,
            reused: dict | None = None) -> dict:
    meas = df["measured_ms"].to_numpy()
    drift = _drift(df, lut, cfg.stat)
    # Variants the table's calibration was fitted on are not evidence for it: leave them out.
    held = ~df["in_calibration"].to_numpy(dtype=bool) if lut.calibration else \
        np.ones(len(df), dtype=bool)
    cal = lut.meta.get("calibration") or {}
    report = {
        "model": model_label(cfg.model), "input_size": to_json(size), "lut": lut.source, "stat": cfg.stat,
        # where the variants were measured, and where the table's rows were timed
        "runtime": where or {"runtime": cfg.runtime}, "lut_runtime": lut.runtime,
        "estimator": ("in-network calibrated operator sum" if lut.calibration
                      else "operator sum"),
        **agreement(df["estimate_ms"].to_numpy()[held], meas[held]),
        "operator_sum": agreement(df["operator_sum_ms"].to_numpy(), meas),
        "calibration": {**lut.calibration, "model": cal.get("model"),
                        "variants": len(cal.get("variants", [])),
                        "shared_with_validation": int((~held).sum())}
        if lut.calibration else None,
        "recalibration": recalibration,
        # A stored fit that lost to the plain sum on held-out variants (luts.calibrate).
        "calibration_not_applied": describe_holdout(cal["fits"][cfg.stat])
        if cal.get("fits", {}).get(cfg.stat) and not lut.calibration else None,
        "conv_only": agreement(df["conv_only_ms"].to_numpy(), meas),
        "conv_only_share_of_measured": float((df["conv_only_ms"] / df["measured_ms"]).mean()),
        "by_stat": {s: agreement(df[f"estimate_{s}"].to_numpy(), df[f"measured_{s}"].to_numpy())
                    for s in STATS if s != cfg.stat and f"measured_{s}" in df},
        "proxies": {"flops": proxy_agreement(df["macs"].to_numpy(), meas),
                    "params": proxy_agreement(df["params"].to_numpy(), meas)},
        "measured_range_ms": [float(meas.min()), float(meas.max())],
        "machine_drift": drift,
        "drift_corrected": _drift_corrected(df, drift),
        "median_round_spread": float(df["measured_round_spread"].median())
        if "measured_round_spread" in df else None,
        # the first rounds' spread, where it was over SPREAD_WARN and the variants were
        # measured in as many rounds again
        "remeasured_after_spread": float(df["remeasured_after_spread"].max())
        if "remeasured_after_spread" in df and df["remeasured_after_spread"].notna().any()
        else None,
        "timing": asdict(tc), "lut_meta": {k: lut.meta.get(k) for k in (
            "device_name", "device_kind", "dtype", "batch", "memory_format", "timing_mode",
            "threads", "torch", "cuda", "cudnn", "created")},
        "seconds": seconds, "seed": cfg.seed,
    }
    # One line when the variants varied more between rounds than verdict.SPREAD_WARN: the
    # measured side of every metric above is then as uncertain as that.
    report["spread_warning"] = spread_warning(
        report["median_round_spread"],
        consequence=f"median over {len(df)} variants; R² and MAPE carry that noise (more "
                    f"--rounds or a quieter machine narrow it)")
    report["noise"] = noise_line(report)
    report["reused"] = reused  # earlier measurements of the same variants, measured alike
    for line in (report["spread_warning"], report["noise"]):
        if line:
            print(line, file=sys.stderr, flush=True)
    atomic_write_bytes(cfg.out / "report.json",
                       lambda f: f.write(json.dumps(report, indent=2).encode()))
    _scatter(df, report, cfg.out / "estimate_vs_measured.png")
    return report


def _drift_corrected(df: pd.DataFrame, drift: dict | None) -> dict | None:
    """The estimates against the measurements put on the table's speed: each variant by
    the drift reference read beside it, else all by the original model's factor."""
    if not drift:
        return None
    est = df["estimate_ms"].to_numpy()
    if drift.get("source") == "drift reference":
        return agreement(est, df["measured_on_table_speed_ms"].to_numpy())
    return agreement(est * drift["factor"], df["measured_ms"].to_numpy())


def _drift(df: pd.DataFrame, lut: Lut, stat: str) -> dict | None:
    level = lut.drift_level_ms
    if level is not None and "ref_ms" in df and df["ref_ms"].notna().all() and \
            "measured_on_table_speed_ms" in df and df["measured_on_table_speed_ms"].notna().all():
        now = float(df["ref_ms"].median())
        d = lut.meta["drift"]
        return {"source": "drift reference", "key": d["key"], "level_ms": level,
                "now_ms": now, "factor": now / level,
                "during_profiling": d.get("range"), "stat": "median_ms"}
    return _drift_of_original(df, lut, stat)


def _drift_of_original(df: pd.DataFrame, lut: Lut, stat: str) -> dict | None:
    """How much faster or slower the machine ran the unpruned model now than when the LUT was
    measured (its end-to-end reference). Only reported, and used for the metrics labelled
    drift-corrected; the headline metrics use the LUT as it is. Medians on both sides: one
    burst on a shared machine can move a mean of the reference several-fold."""
    ref = lut.meta.get("reference")
    original = df[df["kind"] == "original"]
    col = "measured_median_ms" if "measured_median_ms" in df else "measured_ms"
    if not ref or original.empty or "end_median_ms" not in ref:
        return None
    then = (ref["start_median_ms"] + ref["end_median_ms"]) / 2
    now = float(original[col].iloc[0])
    return {"source": "original model", "reference_at_profiling_ms": then,
            "original_now_ms": now, "factor": now / then,
            "during_profiling": ref["end_median_ms"] / ref["start_median_ms"],
            "stat": "median_ms"}


# Below this R² even the best straight line through (estimate, measured) leaves the
# variants' order and spacing unexplained: the measurements, not the table, are the limit.
NOISY_R2_LINEAR = 0.95


def noise_line(report: dict) -> str | None:
    """One line when the machine was too noisy for any table to be checked here."""
    r2 = report.get("r2_linear")
    if r2 is None or not np.isfinite(r2) or r2 >= NOISY_R2_LINEAR:
        return None
    spread = report.get("median_round_spread")
    return (f"too noisy to check a latency table: even the best straight line through "
            f"estimate and measured reaches R² {r2:.3f} (threshold {NOISY_R2_LINEAR})"
            + (f", the variants varied {100 * spread:.0f}% between rounds" if spread else "")
            + "; no table can be shown to hold on this machine now (rerun on a quieter one, "
              "or with more --rounds)")


def describe_drift(report: dict) -> str | None:
    """How fast the machine ran now against the table's scan, and the agreement once the
    measurements are put on the table's speed."""
    drift, d = report.get("machine_drift"), report.get("drift_corrected")
    if not drift or not d:
        return None
    if drift.get("source") == "drift reference":
        k = drift["key"]
        what = (f"the drift reference (conv {k['c_in']}->{k['c_out']} at {k['in_h']}px) read "
                f"{drift['now_ms']:.3f} ms now, {drift['level_ms']:.3f} ms for the table's rows")
        how = "put on the table's speed by the reading beside each variant"
    else:
        what = (f"the unpruned model ran {drift['original_now_ms']:.3f} ms now, "
                f"{drift['reference_at_profiling_ms']:.3f} ms while the LUT was measured")
        how = "scaled by that factor"
    return (f"machine speed: {what} (x{drift['factor']:.2f}); {how}, the estimate gives R2 "
            f"identity {d['r2_identity']:.3f}, MAPE {100 * d['mape']:.1f}%")


def plot_title(report: dict, n_variants: int) -> str:
    """What the scatter is evidence for: the model, the device, the timing regime.

    "demo · cpu 1 thread · fp32 b1 eager" over "32px, 30 variants". A MODEL given as a
    file shows as its name without directory or suffix: a plot is shared, a path is not.
    """
    model = str(report["model"]).split(" (")[0]  # a builder spec less where its weights came from
    if Path(model).suffix in MODEL_SUFFIXES or Path(model).name != model:
        model = Path(model).stem
    m = report.get("lut_meta") or {}
    kind = m.get("device_kind") or "?"
    if kind == "cpu" and m.get("threads"):
        device = f"cpu {m['threads']} thread{'s' if int(m['threads']) != 1 else ''}"
    elif kind == "cuda" and m.get("device_name"):
        device = f"cuda {m['device_name']}"
    else:
        device = kind
    regime = " ".join(str(x) for x in (
        m.get("dtype"), f"b{m['batch']}" if m.get("batch") else None, m.get("timing_mode"),
        "channels_last" if m.get("memory_format") == "channels_last" else None) if x)
    return (" · ".join(x for x in (model, device, regime) if x)
            + f"\n{size_text(report['input_size'])}, {n_variants} variants")


def _scatter(df: pd.DataFrame, report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    meas = df["measured_ms"]
    if report.get("calibration"):
        o = report["operator_sum"]
        ax.scatter(meas, df["operator_sum_ms"], s=14, marker="^", alpha=0.6,
                   label=f"operator sum, uncalibrated (R² identity {o['r2_identity']:.3f}, "
                         f"MAPE {100 * o['mape']:.1f}%)")
    ax.scatter(meas, df["estimate_ms"], s=18, label=f"{report['estimator']} (R² identity "
               f"{report['r2_identity']:.3f}, MAPE {100 * report['mape']:.1f}%)")
    ax.scatter(meas, df["conv_only_ms"], s=18, marker="x", label=f"convs only (MAPE "
               f"{100 * report['conv_only']['mape']:.0f}%)")
    lo = min(meas.min(), df["conv_only_ms"].min()) * 0.95
    hi = max(meas.max(), df["estimate_ms"].max()) * 1.05
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="identity")
    ax.set(xlabel="measured latency (ms)", ylabel="LUT estimate (ms)")
    ax.set_title(plot_title(report, len(df)), fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
