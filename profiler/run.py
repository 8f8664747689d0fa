"""A profiling run: model -> key space -> scan grid -> timed rows -> LUT file.

Resumable (rows already in the output or its ``.parts`` directory are not
measured again), shardable (``shard=(i, n)`` measures a disjoint, stable
subset; under ``torchrun`` each rank takes its own and rank 0 merges).
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from hwprune.errors import HwpruneError
from hwprune.sizes import Size, canonical, size_text, to_json
from hwprune.profiler.clock import fmt_seconds
from hwprune.profiler.device import cache_bytes, cache_guesses, core_cache_bytes, describe_device
from hwprune.profiler.drift import DriftReference, choose_reference, reference_config
from hwprune.profiler.calls import kind
from hwprune.profiler.fusion import runtime_trace
from hwprune.profiler.keyspace import LayerRecord, OpKey, is_conv, Trace, grid_for, scan_keys, trace_model
from hwprune.profiler.ops import DTYPES, MAX_WEIGHT_COPIES, build_op, weight_copies
from hwprune.profiler.store import PartStore
from hwprune.profiler.table import (LutError, check_compatible, identity_of, merge_luts, now_iso,
                            read_lut, key_of_row)
from hwprune.profiler.runtime_ops import measure_runtime_key, runtime_copies, runtime_meta
from hwprune.profiler.timing import (TimingConfig, algorithm_count, cudnn_benchmark, measure_key,
                             model_input, prepare_model, time_callable, time_model)
from hwprune.zoo import resolve_model
from hwprune.zoo.runtimes import check_runtime


class ProfileError(HwpruneError):
    """The run cannot start or finish (output not writable, bad shard spec, ...)."""


@dataclass
class ProfileConfig:
    model: str
    out: Path
    step: int = 16                    # the pruning group size; 1 is the paper's full scan
    input_size: Size | None = None    # a side or (h, w); default: the model's own (224 torchvision)
    layers: Sequence[str] = ()        # glob patterns on layer names; empty = all
    max_keys: int | None = None       # measure at most this many missing keys, then stop
    shard: tuple[int, int] | None = None
    timing: TimingConfig = field(default_factory=TimingConfig)
    progress: bool = True
    # "auto": time with cold weights when the model's weights exceed the last-level cache,
    # as they then stream from memory in every forward pass; "hot" or "cold" to force.
    weights: str = "auto"
    # Exactly these keys instead of the model's grid: e.g. only what the validation
    # variants of a model too big to scan in full need (`luts.variant_keys`).
    keys: Sequence[OpKey] | None = None
    # Stop measuring after this many seconds (a rented GPU); rerun to continue.
    max_seconds: float | None = None
    # Where the keys are timed: torch, or a deployment runtime (onnxruntime, openvino) on the
    # CPU, whose table holds fused Conv+BN(+add)(+activation) chains (``profiler.fusion``).
    runtime: str = "torch"


@dataclass
class ProfileResult:
    out: Path
    keys_total: int        # the scan grid of this run (after --layers and sharding)
    keys_before: int       # already measured when the run started
    keys_measured: int     # measured by this run
    keys_left: int         # still missing (stopped by --max-keys or the time budget)
    wall_seconds: float
    device_seconds: float  # sum of per-key timing time, warm-up and all algorithms included
    merged: Path | None = None
    eta_seconds: float | None = None  # the pilot's guess at the scan (torch tables; not printed)
    # wall seconds per stage: setup (model, trace, earlier work), pilot, reference (the
    # whole model before and after), scan (keys and drift readings), finalize
    stages: dict = field(default_factory=dict)
    # The scan's length as predicted once its first keys were measured (_EtaRefinement),
    # and after how many keys.
    eta_refined_seconds: float | None = None
    eta_refined_at_keys: int | None = None

    @property
    def keys_per_second(self) -> float:
        return self.keys_measured / self.wall_seconds if self.wall_seconds > 0 else 0.0


def cold_bytes_for(module: torch.nn.Module, tc: TimingConfig, weights: str = "auto",
                   device_index: int = 0) -> tuple[int, int, int]:
    """(cold_bytes for TimingConfig, last-level cache bytes, model weight bytes).

    "auto" times with cold weights exactly when the model's weights exceed the cache,
    because then every forward pass reads them from memory.
    """
    if weights not in ("auto", "hot", "cold"):
        raise ProfileError(f"weights must be auto, hot or cold, not '{weights}'")
    llc = cache_bytes(tc.device, device_index)
    model_bytes = sum(p.numel() for p in module.parameters()) * \
        torch.finfo(DTYPES[tc.dtype]).bits // 8
    cold = weights == "cold" or (weights == "auto" and model_bytes > llc)
    return (2 * llc if cold else 0), llc, model_bytes


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ProfileError(f"--shard expects I/N (e.g. 0/4), got '{text}'") from None
    if not 0 <= i < n:
        raise ProfileError(f"--shard {text}: need 0 <= I < N")
    return i, n


def shard_from_env() -> tuple[int, int] | None:
    """(rank, world size) when launched by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else None


def shard_path(out: Path, shard: tuple[int, int]) -> Path:
    return out.with_name(f"{out.stem}.shard-{shard[0]}-of-{shard[1]}{out.suffix}")


def in_shard(key: OpKey, shard: tuple[int, int] | None) -> bool:
    """Stable assignment by key hash, so resuming with another key list keeps shards disjoint."""
    if shard is None:
        return True
    return int.from_bytes(key.digest()[:8], "big") % shard[1] == shard[0]


def check_writable(out: Path) -> None:
    if out.is_dir():
        raise ProfileError(f"output '{out}' is a directory; give a file name such as lut.parquet")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".hwprune-probe-"):
            pass
    except OSError as exc:
        raise ProfileError(f"cannot write output '{out}': {exc.strerror or exc}") from None


def _configs(trace: Trace, step: int) -> list[dict]:
    """Each distinct layer config with its grid size, so `lut info` can report coverage."""
    seen: dict[tuple, dict] = {}
    for rec in trace.layers:
        tag = (rec.key, rec.fixed_in, rec.fixed_out)
        if tag not in seen:
            seen[tag] = {"key": rec.key.as_dict(), "fixed_in": rec.fixed_in,
                         "fixed_out": rec.fixed_out, "step": step, "layers": [],
                         "grid": len(grid_for(rec, step))}
        seen[tag]["layers"].append(rec.name)
    return list(seen.values())


def _work_ratio(small: OpKey, big: OpKey) -> float:
    if is_conv(small.op) or small.op == "linear":
        return (small.c_in * small.c_out) / max(1, big.c_in * big.c_out)
    return small.c_in / max(1, big.c_in)


PILOT_REPS = 5


@dataclass
class Pilot:
    """One layer config timed at full size, for the ETA."""

    key: OpKey
    seconds_per_call: float
    cv: float              # std / mean of the pilot's calls
    build_seconds: float   # building the op (weight copies included)
    algorithms: int        # algorithms ``measure_key`` will time for each key of the config


def pilot_configs(trace: Trace, keys: Sequence[OpKey], cfg: TimingConfig) -> dict[tuple, Pilot]:
    """``min_reps`` timed calls of each wanted layer config at full size."""
    pilot: dict[tuple, Pilot] = {}
    wanted = {k.config() for k in keys}
    with torch.inference_mode(), cudnn_benchmark():
        for rec in trace.layers:
            conf = rec.key.config()
            if conf in pilot or conf not in wanted:
                continue
            copies = weight_copies(rec.key, cfg.dtype, cfg.cold_bytes)
            t_build = time.perf_counter()
            fn = build_op(rec.key, cfg.batch, cfg.dtype, cfg.device, cfg.channels_last, copies)
            t_build = time.perf_counter() - t_build
            # An ETA needs the order of magnitude, not 1%: a few calls per config keep the
            # pilot to seconds before the first key even for a 224 px resnet50.
            probe = TimingConfig(**{**cfg.__dict__, "warmup": 1, "min_reps": PILOT_REPS,
                                    "max_reps": PILOT_REPS})
            s = time_callable(fn, probe.validate(), copies=copies)
            pilot[conf] = Pilot(rec.key, s.median_ms / 1e3, _robust_cv(s), t_build,
                                algorithm_count(rec.key, cfg))
    return pilot


def _robust_cv(s) -> float:
    """The pilot's spread as the adaptive stop sees it: that stop bounds the CI of the
    *median*, which one slow call of a cold start hardly moves, while it inflates the std
    of 5 calls: std / mean made the ETA 16x the scan of mobilenet_v3_small at 224 px
    (4,276 keys, 2026-12-06). The gap between median and fastest call, over what it is
    for 5 normal draws (1.16 sigma), stands in for sigma; 1.25 is the median's standard
    error over the mean's."""
    return 1.25 * (s.median_ms - s.min_ms) / 1.16 / max(s.median_ms, 1e-12)


def eta_seconds(pilot: dict[tuple, Pilot], keys: Sequence[OpKey], cfg: TimingConfig) -> float:
    """Each key's cost: the pilot's per-call time scaled by the key's share of the work,
    times the repetitions the pilot's spread implies for the 95% CI target,
    (1.96 * cv / rel_ci)^2 clipped to [min_reps, max_reps], once per algorithm timed.

    Under ``--algos all`` on CUDA every cuDNN plan is costed as fast as the pilot's
    (cudnn.benchmark's pick) and plan building is left out: a lower bound there.
    """
    total = 0.0
    for key in keys:
        p = pilot.get(key.config())
        if p is None:  # not in the traced model: a guess, counted once per algorithm
            p = Pilot(key, 1e-4, 0.3, 1e-3, algorithm_count(key, cfg) if cfg.device == "cpu"
                      else 1)
        reps = min(cfg.max_reps, max(cfg.min_reps, (1.96 * p.cv / cfg.rel_ci) ** 2))
        per_algo = p.seconds_per_call * _work_ratio(key, p.key) * (cfg.warmup + reps)
        total += p.algorithms * (per_algo + p.build_seconds + 5e-3)
    return total


class _EtaRefinement:
    """The scan's ETA, from the keys measured so far.

    The pilot gets each key's time per call right within about 2x, but not how many calls
    the adaptive stop will take on this machine (its 5 calls make a poor spread): as an ETA
    it was 0.29-1.98x the scan on three models (2026-12-06), 1.38-5.72x and then 21x on
    mobilenet_v3_small at 224 px (2026-12-07), so it is not printed. The scan measures its
    keys in a random order, so the first ones are a sample of the rest: the scan's length
    is predicted as elapsed x (pilot's total / pilot's estimate for the keys done), a ratio
    estimator that keeps the pilot's weighting of big and small keys. Taken after 10% of
    the keys it was 0.85-1.58x the scan (profile_eta_20261207a_cpu.json), after 20%
    0.82-1.57x, 8 of 9 within 1.5x (benchmarks/results/profile_eta_cpu.json), so it waits for ``max(8, 20%)`` keys and 5 s, or for 32
    keys and 2 minutes on a long scan, whichever comes first. A machine whose speed changes
    during the scan moves the scan after the estimate: nothing before the end can see that.
    """

    FRACTION, MIN_KEYS, MIN_SECONDS = 0.2, 8, 5.0
    LONG_KEYS, LONG_SECONDS = 32, 120.0

    def __init__(self, per_key: list[float], show: bool) -> None:
        self.per_key, self.show, self.done = per_key, show, 0.0
        self.total = sum(per_key)
        self.scan_seconds: float | None = None
        self.at_keys: int | None = None

    def ready(self, measured: int, elapsed: float) -> bool:
        sampled = measured >= max(self.MIN_KEYS, self.FRACTION * len(self.per_key)) \
            and elapsed >= self.MIN_SECONDS
        long_scan = measured >= self.LONG_KEYS and elapsed >= self.LONG_SECONDS
        return sampled or long_scan

    def after(self, measured: int, elapsed: float) -> None:
        if self.scan_seconds is not None or not self.total or measured > len(self.per_key):
            return
        self.done += self.per_key[measured - 1]
        if not self.done or not self.ready(measured, elapsed):
            return
        self.scan_seconds, self.at_keys = elapsed * self.total / self.done, measured
        _log(f"ETA ~{fmt_seconds(self.scan_seconds - elapsed)} more (the first {measured} "
             f"keys took {elapsed / self.done:.2g} x the pilot's estimate for them)", self.show)


def _log(msg: str, enabled: bool) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


def _run_meta(cfg: ProfileConfig, resolved_name: str, input_size: Size, trace: Trace,
              device_index: int) -> dict:
    tc = cfg.timing
    info = describe_device(tc.device, device_index)
    protocol = {k: getattr(tc, k) for k in ("warmup", "min_reps", "max_reps", "rel_ci", "ci_of",
                                             "max_seconds", "graph_unroll")}
    # Tables from before this rule captured graph_unroll calls whatever the weight copies;
    # `lut info` tells them apart by this entry.
    protocol["graph_calls"] = "graph_unroll, rounded up to whole rounds of the weight copies"
    return {**info, **tc.identity(), "device_name": info["device_name"], "protocol": protocol,
            "created": now_iso(), "updated": now_iso(),
            "sources": [{"model": resolved_name, "input_size": to_json(input_size), "step": cfg.step,
                         "layers": list(cfg.layers),
                         **({"keys": f"{len(cfg.keys)} listed, not the grid"}
                            if cfg.keys is not None else {})}],
            "configs": _configs(trace, cfg.step)}


def profile_model(cfg: ProfileConfig) -> ProfileResult:
    """Measure every missing key of ``cfg.model``'s scan grid and write the LUT."""
    t_start = time.perf_counter()  # the time budget counts set-up and pilot too
    stages: dict[str, float] = {}
    clock = [t_start]

    def lap(name: str) -> None:
        now = time.perf_counter()
        stages[name] = stages.get(name, 0.0) + now - clock[0]
        clock[0] = now

    tc = cfg.timing.validate()
    if check_runtime(cfg.runtime) != "torch" and (tc.device != "cpu" or tc.mode != "eager"):
        raise ProfileError(f"--runtime {cfg.runtime} times keys on the CPU: use --device cpu "
                           f"(eager mode)")
    shard = cfg.shard or shard_from_env()
    distributed = cfg.shard is None and shard is not None
    device_index = int(os.environ.get("LOCAL_RANK", "0")) if tc.device == "cuda" else 0
    if tc.device == "cuda":
        torch.cuda.set_device(device_index)
    out = Path(cfg.out)
    check_writable(out)
    resolved = resolve_model(cfg.model)
    input_size = canonical(cfg.input_size or resolved.input_size)
    torch_trace = trace_model(resolved.module, input_size, resolved.in_channels)
    trace = runtime_trace(torch_trace, cfg.runtime).filtered(cfg.layers)
    tc.cold_bytes, llc, model_bytes = cold_bytes_for(resolved.module, tc, cfg.weights,
                                                     device_index)
    blend = None
    if cfg.runtime != "torch" and cfg.weights == "auto":
        # Pruning takes a network from weights that stream from memory to weights that stay
        # in the caches: a runtime table times every key both ways (luts.lookup blends them
        # by the size of the network being estimated).
        tc.cold_bytes = 2 * llc
        blend = {"hot_below_bytes": core_cache_bytes(), "cold_above_bytes": llc // 2}
    meta = _run_meta(cfg, resolved.name, input_size, trace, device_index)
    if cfg.runtime != "torch":
        meta["runtime"] = runtime_meta(cfg.runtime, tc)
    if blend:
        meta["cache_blend"] = blend
    # cold_bytes and the copy cap let `lut info` tell which rows' weights stayed partly cached.
    meta.update(cache_bytes=llc, model_weight_bytes=model_bytes, cold_bytes=tc.cold_bytes,
                max_weight_copies=MAX_WEIGHT_COPIES,
                cache_guessed=cache_guesses(tc.device, device_index, blend is not None))

    grid = scan_keys(trace, cfg.step) if cfg.keys is None else list(dict.fromkeys(cfg.keys))
    keys = [k for k in grid if in_shard(k, shard)]
    target = shard_path(out, shard) if shard else out
    store = PartStore(target, meta)
    done = store.open()
    if shard and out.exists():  # a merged table from an earlier sharded run counts as done
        df, other = read_lut(out)
        check_compatible(identity_of(meta), identity_of(other), f"cannot add to {out}")
        done.update(key_of_row(r) for r in df.to_dict("records"))
    missing = [k for k in keys if k not in done]
    # Shuffled (with a fixed seed), so a slow drift of the machine spreads as noise over the
    # grid instead of biasing whole rows of it.
    random.Random(0).shuffle(missing)
    todo = missing[: cfg.max_keys] if cfg.max_keys is not None else missing
    show = cfg.progress
    old_threads = torch.get_num_threads()
    torch.set_num_threads(tc.threads)
    drift = None
    try:
        lap("setup")
        # The pilot times keys in torch: for a runtime the rate shows on the progress bar.
        per_key = [0.0] * len(todo)
        if todo and cfg.runtime == "torch":
            pilot = pilot_configs(trace, todo, tc)
            per_key = [eta_seconds(pilot, [k], tc) for k in todo]
        eta = sum(per_key)
        refine = _EtaRefinement(per_key, show)
        lap("pilot")
        where = f" (shard {shard[0]}/{shard[1]})" if shard else ""
        _log(f"{resolved.name} @ {size_text(input_size)}, step {cfg.step}{where}: {len(trace.layers)} "
             f"layers, {len(keys)} keys in the grid, {len(keys) - len(missing)} already measured, "
             f"{len(todo)} to measure on {meta['device_name']} "
             f"({tc.dtype}, batch {tc.batch}, {tc.threads} threads, "
             f"{'cold' if tc.cold_bytes else 'hot'} weights"
             + (f", in {cfg.runtime}); " if cfg.runtime != "torch" else "); ")
             + ("an ETA follows once a fifth of the keys (or 2 minutes' worth) is measured"
                if cfg.runtime == "torch" else "rate on the progress bar"),
             show)
        # The whole-model yardstick is a torch timing: a runtime table has none (its
        # calibration and validation time whole networks in the runtime itself).
        reference = _Reference(resolved.module, resolved.in_channels, input_size, tc,
                               reference_seconds(eta)) if todo and cfg.runtime == "torch" \
            else None
        lap("reference")
        # A runtime table's gauge is read in the runtime (profiler.drift): a torch conv read
        # between a runtime's keys read 0.36 ms in a mobilenet_v2 scan in ONNX Runtime and
        # 0.19 ms beside whole networks (2026-11-29), and put the calibration on a speed 1.85x
        # too slow (slope 2.08).
        drift = _drift_reference(store, trace, tc, cfg.runtime) if todo else None
        t0 = time.perf_counter()
        device_seconds = 0.0
        measured = 0
        with tqdm(total=len(todo), unit="key", disable=not show, dynamic_ncols=True) as bar:
            for key in todo:
                # At least one key per run, so a budget spent in set-up on a slow machine
                # still moves a resumed scan forward instead of redoing set-up for nothing.
                if cfg.max_seconds is not None and measured and \
                        time.perf_counter() - t_start > cfg.max_seconds:
                    _log(f"time budget of {cfg.max_seconds:.0f} s spent: stopping", show)
                    break
                bar.set_postfix_str(f"{kind(key.op)} {key.c_in}->{key.c_out} @{key.in_h}", refresh=False)
                ref_ms = drift.current() if drift else float("nan")
                row = _measure_row(key, tc, cfg.runtime, blend is not None)
                stats = row.pop("stats")
                if stats.skipped:
                    _count_skipped(store.meta, stats.skipped)
                store.add(key, {**row, "ref_ms": ref_ms})
                device_seconds += stats.seconds
                measured += 1
                bar.update()
                refine.after(measured, time.perf_counter() - t0)
        if drift and measured:
            drift.read()  # the speed at the end, as the whole-model reference has it
            store.meta["drift"] = drift.summary()
        wall = time.perf_counter() - t0
        lap("scan")
        if reference:
            store.meta["reference"] = reference.finish(resolved.name)
        lap("reference")
    finally:
        torch.set_num_threads(old_threads)
        if drift:  # a runtime gauge holds a loaded session
            drift.close()
    store.compact()
    if measured == len(missing):  # complete: fold the parts into the output file
        store.finalize()
    merged = _merge_ranks(out, shard) if distributed else None
    lap("finalize")
    return ProfileResult(target, len(keys), len(keys) - len(missing), measured,
                         len(missing) - measured, wall, device_seconds, merged,
                         eta if todo and cfg.runtime == "torch" else None, stages,
                         refine.scan_seconds, refine.at_keys)


def _count_skipped(meta: dict, skipped: tuple[str, ...]) -> None:
    """Add one key's failed candidates to the table's tally (``lut info`` shows it): how
    many keys lost a candidate, and how often each engine's error came up."""
    tally = meta.setdefault("engines_skipped", {"keys": 0, "errors": {}})
    tally["keys"] += 1
    for err in skipped:
        tally["errors"][err] = tally["errors"].get(err, 0) + 1


def _measure_row(key: OpKey, tc: TimingConfig, runtime: str, both: bool) -> dict:
    """One key's row: timed in torch, or in a runtime (with ``both``: with cold weights and
    again with hot ones, into the ``hot_*`` columns)."""
    if runtime == "torch":
        stats = measure_key(key, tc)
        return {**stats.as_dict(), "stats": stats}
    copies = runtime_copies(key, tc)
    stats = measure_runtime_key(key, tc, runtime, copies)
    row = {**stats.as_dict(), "stats": stats}
    if both:
        hot = measure_runtime_key(key, tc, runtime, 1) if copies > 1 else stats
        row.update(hot_mean_ms=hot.mean_ms, hot_median_ms=hot.median_ms, hot_min_ms=hot.min_ms,
                   seconds=stats.seconds + (hot.seconds if hot is not stats else 0.0))
        stats.seconds = row["seconds"]
    return row


def _drift_reference(store: PartStore, trace: Trace, tc: TimingConfig,
                     runtime: str = "torch") -> DriftReference | None:
    """The key whose readings track the machine's speed through the scan, read in
    ``runtime``: the one an existing table already used (its rows' readings must stay
    comparable; none when its rows have none), else the model's own choice
    (``profiler.drift.choose_reference``)."""
    existing = store.existing_meta
    if existing is not None and "drift" not in existing:
        return None
    prior = (existing or {}).get("drift") or {}
    key = OpKey(**prior["key"]) if prior.get("key") else choose_reference(trace)
    return DriftReference(key, reference_config(tc), runtime=runtime) if key else None


def reference_seconds(eta_s: float) -> float:
    """Time for each of the two whole-model references: 2% of the scan's ETA, between
    0.5 and 5 s, so a 40-key run does not spend 40 s on its yardstick."""
    return min(5.0, max(0.5, 0.02 * eta_s))


class _Reference:
    """The whole model timed end to end before and after the scan: how much the machine's
    speed moved while the table was measured, and a yardstick for later validation."""

    def __init__(self, module, in_channels: int, size: Size, tc: TimingConfig,
                 seconds: float) -> None:
        import copy

        self.cfg = TimingConfig(**{**tc.__dict__, "cold_bytes": 0, "warmup": 3,
                                   "min_reps": 10, "max_seconds": seconds})
        self.net = prepare_model(copy.deepcopy(module), self.cfg)
        self.x = model_input(self.cfg, in_channels, size)
        self.size = size
        self.start = time_model(self.net, self.x, self.cfg)

    def finish(self, name: str) -> dict:
        end = time_model(self.net, self.x, self.cfg)
        return {"model": name, "input_size": to_json(self.size), "measured": now_iso(),
                **{f"start_{s}": getattr(self.start, s) for s in ("mean_ms", "median_ms",
                                                                  "min_ms")},
                **{f"end_{s}": getattr(end, s) for s in ("mean_ms", "median_ms", "min_ms")}}


def _merge_ranks(out: Path, shard: tuple[int, int]) -> Path | None:
    """Under torchrun: wait for every rank, then rank 0 joins the shard files into ``out``."""
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        # Profiling shards can differ by hours: the barrier must outwait them.
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=48))
    dist.barrier()
    merged = None
    if shard[0] == 0:
        files = [p for i in range(shard[1]) if (p := shard_path(out, (i, shard[1]))).exists()]
        if out.exists():
            files.insert(0, out)
        if files:
            merged = merge_luts(files, out)
            for p in files:
                if p != out:
                    p.unlink()
    dist.barrier()
    dist.destroy_process_group()
    return merged


__all__ = ["ProfileConfig", "ProfileResult", "ProfileError", "profile_model", "parse_shard",
           "shard_path", "LutError", "LayerRecord"]
