"""Summaries of a LUT file: its metadata, rows per operator and scan coverage per layer config."""

from __future__ import annotations

import os
from dataclasses import dataclass


from hwprune.luts.fit import describe_fit, describe_holdout
from hwprune.luts.lookup import DEFAULT_STAT, config_of, describe_config, drift_level_ms
from hwprune.profiler.calls import kind
from hwprune.profiler.keyspace import LayerRecord, OpKey, grid_for
from hwprune.profiler.ops import MAX_WEIGHT_COPIES, cold_shortfall, weight_bytes
from hwprune.profiler.table import key_of_row, read_lut
from hwprune.sizes import size_text


@dataclass
class ConfigCoverage:
    layers: list[str]
    key: OpKey
    grid: int       # keys the scan grid of this config holds
    measured: int   # of those, rows present in the file

    @property
    def coverage(self) -> float:
        return self.measured / self.grid if self.grid else 0.0


def _drift_lines(s: "LutSummary") -> list[str]:
    d = s.meta.get("drift")
    if not d or not d.get("key"):
        return []
    used = "rows put on its fastest reading's speed" if s.drift_level_ms is not None else \
        "rows used as measured (not every row has a reading)"
    return [f"  drift    {describe_config(config_of(OpKey(**d['key'])))} "
            f"{d['key']['c_in']}->{d['key']['c_out']} re-timed {d['readings']} times in the "
            f"last scan: {d['min_ms']:.3f}-{d['max_ms']:.3f} ms (x{d['range']:.2f}); {used}"]


@dataclass
class LutSummary:
    path: str
    meta: dict
    rows: int
    rows_per_op: dict[str, int]
    converged: float          # fraction of rows whose 95% CI reached the target
    device_seconds: float
    configs: list[ConfigCoverage]
    # Cold tables: (rows whose weights even the capped copies left partly cached, rows with
    # weights). None for a hot table.
    cold_shortfall: tuple[int, int] | None = None
    drift_level_ms: float | None = None  # the drift reading rows are put on (luts.lookup)


def cold_bytes_of(meta: dict) -> int:
    """The bytes a cold table's weight copies had to exceed (older tables: twice the cache)."""
    if meta.get("weights", "hot") != "cold":
        return 0
    return int(meta.get("cold_bytes") or 2 * int(meta.get("cache_bytes") or 0))


def summarize(path: str | os.PathLike) -> LutSummary:
    df, meta = read_lut(path)
    present = {key_of_row(r) for r in df.to_dict("records")}
    configs = []
    for c in meta.get("configs", []):
        rec = LayerRecord(c["layers"][0], OpKey(**c["key"]), c["fixed_in"], c["fixed_out"])
        grid = grid_for(rec, int(c["step"]))
        configs.append(ConfigCoverage(c["layers"], rec.key, len(grid),
                                      sum(k in present for k in grid)))
    per_op = df["op"].map(kind).value_counts()  # most rows first; one kind per call function
    cold = cold_bytes_of(meta)
    shortfall = None
    if cold:
        dtype = meta.get("dtype", "fp32")
        weighted = [k for k in present if weight_bytes(k, dtype) > 0]
        cap = int(meta.get("max_weight_copies", MAX_WEIGHT_COPIES))
        shortfall = (sum(cold_shortfall(k, dtype, cold, cap) for k in weighted), len(weighted))
    return LutSummary(str(path), meta, len(df), {k: int(v) for k, v in per_op.items()},
                      float(df["converged"].mean()) if len(df) else 0.0,
                      float(df["seconds"].sum()), configs, shortfall,
                      drift_level_ms(df, meta))


def _cold_notes(s: LutSummary) -> list[str]:
    """Where a cold table's weights were not in fact all read from memory."""
    m, notes = s.meta, []
    cold = cold_bytes_of(m)
    cap = int(m.get("max_weight_copies", MAX_WEIGHT_COPIES))
    if s.cold_shortfall and s.cold_shortfall[0]:
        notes.append(f"  cold     {s.cold_shortfall[0]} of {s.cold_shortfall[1]} rows with weights "
                     f"hold under {cold / cap / 2**10:.0f} KiB of them: {cap} copies (the cap) "
                     f"stay under {cold / 2**20:.0f} MiB, so those were timed with weights "
                     f"the cache could hold")
    unroll = (m.get("protocol") or {}).get("graph_unroll")
    if cold and m.get("timing_mode") == "graph" and "graph_calls" not in (m.get("protocol") or {}):
        notes.append(f"  cold     measured before a graph captured every weight copy: only "
                     f"{unroll} copies were read per replay, so keys whose weights are under "
                     f"{(m.get('cache_bytes') or cold / 2) / 2**20 / max(1, unroll or 1):.1f} "
                     f"MiB were timed with cached "
                     f"weights; re-measure for cold rows")
    return notes


def _runtime_line(m: dict) -> str:
    rt = m.get("runtime")
    if not rt:
        return "torch (eager PyTorch operators)"
    return (f"{rt.get('runtime')} {rt.get('version')}, {rt.get('provider')}, "
            f"{rt.get('threads')} threads, optimisation {rt.get('optimization')}")


def _skipped_lines(tally: dict | None) -> list[str]:
    """'  skipped  12 engine runs failed on 5 keys (fastest of the rest kept): ...'."""
    if not tally or not tally.get("errors"):
        return []
    errors = sorted(tally["errors"].items(), key=lambda e: -e[1])
    lines = [f"  skipped  {sum(n for _, n in errors)} engine runs failed on {tally['keys']} "
             f"keys (each key kept the fastest of the rest):"]
    lines += [f"           {n} x {err}" for err, n in errors[:3]]
    if len(errors) > 3:
        lines.append(f"           and {len(errors) - 3} other errors (metadata: engines_skipped)")
    return lines


def format_summary(s: LutSummary, all_ops: bool = False) -> str:
    m = s.meta
    lines = [f"LUT {s.path}  (schema v{m.get('schema_version')})",
             f"  device   {m.get('device_kind')}: {m.get('device_name')}"
             + (f"  [driver {m['driver']}]" if m.get("driver") else ""),
             f"  software torch {m.get('torch')}, CUDA {m.get('cuda')}, cuDNN {m.get('cudnn')}",
             f"  timing   {m.get('dtype')}, batch {m.get('batch')}, {m.get('memory_format')}, "
             f"{m.get('timing_mode')}, algos {m.get('algos')}, threads {m.get('threads')}",
             f"  runtime  " + _runtime_line(m),
             f"  protocol {m.get('protocol')}",
             f"  weights  {m.get('weights', 'hot')}"
             + (f" and hot, blended by the estimated network's weights: hot up to "
                f"{m['cache_blend']['hot_below_bytes'] / 2**20:.1f} MiB, cold from "
                f"{m['cache_blend']['cold_above_bytes'] / 2**20:.1f} MiB"
                if m.get("cache_blend") else "")
             + (f" (model {m['model_weight_bytes'] / 2**20:.1f} MiB, cache "
                f"{m['cache_bytes'] / 2**20:.1f} MiB)" if m.get("cache_bytes") else ""),
             *[f"  GUESSED  {g}" for g in m.get("cache_guessed") or []],
             *_skipped_lines(m.get("engines_skipped")),
             *_cold_notes(s),
             f"  hosts    {', '.join(m.get('hosts', [m.get('host')]) or [])}   "
             f"created {m.get('created')}  updated {m.get('updated')}"]
    for src in m.get("sources", []):
        lines.append(f"  source   {src['model']} @ {size_text(src['input_size'])}, step {src['step']}"
                     + (f", layers {' '.join(src['layers'])}" if src.get("layers") else "")
                     + (f", keys of the validation variants only ({src['keys']})"
                        if src.get("keys") else ""))
    ref = m.get("reference")
    if ref:
        lines.append(f"  reference {ref['model']} end to end: {ref['start_median_ms']:.3f} ms "
                     f"before the scan, {ref['end_median_ms']:.3f} ms after (medians)")
    lines += _drift_lines(s)
    cal = m.get("calibration")
    if cal and cal.get("fits", {}).get(DEFAULT_STAT):
        f = cal["fits"][DEFAULT_STAT]
        lines.append(f"  calibration {len(cal['variants'])} pruned {cal['model']} variants end to "
                     f"end ({cal['measured'][:16]}): {describe_fit(f)} (R2 {f['r2']:.3f})"
                     + (f"; {describe_holdout(f)}" if describe_holdout(f) else ""))
    else:
        lines.append("  calibration none: estimates are plain operator sums "
                     "(`hwprune lut calibrate`)")
    ops = ", ".join(f"{op} {n}" for op, n in s.rows_per_op.items())
    lines += [f"  rows     {s.rows} ({ops})",
              f"  {100 * s.converged:.0f}% of rows reached the 95% CI target; "
              f"{s.device_seconds:.1f} device-seconds of timing", ""]
    shown = [c for c in s.configs if all_ops or c.key.op == "conv2d"]
    if shown:
        lines.append(f"  {'layer(s)':<34} {'op':<12} {'k':>5} {'s':>3} {'fmap':>9} "
                     f"{'c_in x c_out':>13} {'grid':>5} {'have':>5} {'cover':>6}")
        for c in shown:
            k = c.key
            name = c.layers[0] + (f" +{len(c.layers) - 1}" if len(c.layers) > 1 else "")
            lines.append(f"  {name:<34} {k.op:<12} {f'{k.kernel_h}x{k.kernel_w}':>5} "
                         f"{k.stride_h:>3} {f'{k.in_h}x{k.in_w}':>9} "
                         f"{f'{k.c_in}x{k.c_out}':>13} {c.grid:>5} {c.measured:>5} "
                         f"{100 * c.coverage:>5.0f}%")
    return "\n".join(lines)
