"""Which torchvision classifiers hwprune can profile, estimate, validate and prune.

For every classifier in ``torchvision.models`` (``zoo.torchvision_model_names``) the
script first decides whether it is in scope: a network with both ``BatchNorm2d`` and
``Conv2d`` layers (the LUT holds convolutions; the pruner's importance gates sit on
BatchNorms). Out-of-scope ones are listed with the reason. Each in-scope model, at a
small input size (``zoo.models.small_input_size``: 64 px unless the model needs more)
and a coarse channel step, then goes through every stage ``profile``, ``lut validate``
and ``prune`` rely on, each recorded as ok or with the exact exception:

  trace     one forward pass recording every operator (``profiler.trace_model``)
  profile   ``profiler.profile_model`` measuring a few keys (``--max-keys``) at very
            low repetition, plus one key of every operator kind the grid holds, so that
            every kind's timed callable (``profiler.ops.build_op``) is run
  estimate  the LUT estimate of the model over a stand-in table holding exactly its
            scan grid (latencies made up from MACs; strict: no interpolation)
  variant   one pruned variant as ``lut validate`` builds it (every dimension at its
            smallest grid value, ``luts.build_variant``), traced and estimated strictly
  groups    the pruner's Torch-Pruning groups matched to the latency model
            (``pruner.find_dims``, ``check_matches``), the delta query, ``--step``
            channels removed from a few groups, and a training step of the result

A refusal is *clean* when it is one of the project's own errors (the CLI prints it on
one line and exits with status 2); anything else is a bug. Writes
``OUT/torchvision_coverage.json``; prints one line per model.

    python benchmarks/torchvision_coverage.py --out DIR
    python benchmarks/torchvision_coverage.py --out DIR --models resnet18,efficientnet_b0
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from _common import machine, write_json  # noqa: E402
from delta_query import stand_in_lut  # noqa: E402
from hwprune.luts import LatencyModel, LutError, build_variant, estimate_trace, plan_variants  # noqa: E402
from hwprune.profiler import (KeySpaceError, ProfileConfig, ProfileError, TimingConfig,  # noqa: E402
                      TimingError, measure_key, profile_model, scan_keys, trace_model)
from hwprune.profiler.calls import kind  # noqa: E402
from hwprune.profiler.coupling import dimensions  # noqa: E402
from hwprune.pruner import GroupError, build_graph, check_matches, find_dims, remove_channels  # noqa: E402
from hwprune.zoo import ModelError, resolve_model, torchvision_model_names  # noqa: E402
from hwprune.zoo.models import classifier_scope, small_input_size  # noqa: E402

CLEAN = (ModelError, KeySpaceError, TimingError, LutError, ProfileError, GroupError)
STAGES = ("trace", "profile", "estimate", "variant", "groups")


def _error(exc: BaseException) -> dict:
    return {"ok": False, "clean": isinstance(exc, CLEAN), "error": type(exc).__name__,
            "message": str(exc).strip().splitlines()[0] if str(exc).strip() else "",
            "where": traceback.format_exception(exc)[-2].strip().splitlines()[0]}


def _stage(fn) -> dict:
    t0 = time.perf_counter()
    try:
        out = {"ok": True, **(fn() or {})}
    except Exception as exc:  # recorded: the point of the survey
        out = _error(exc)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def survey(name: str, args, tmp: Path, state: dict | None = None,
           input_size: int | None = None) -> dict:
    """Every stage on model ``name`` (any builder spec); ``state`` (when given) is left
    holding the model, its trace, the stand-in table and the pruned variant."""
    size = input_size or small_input_size(name, args.input_size)
    rec: dict = {"model": name, "input_size": size}
    t_build = time.perf_counter()
    resolved = resolve_model(name)
    model = resolved.module
    rec["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    rec["build_seconds"] = round(time.perf_counter() - t_build, 2)
    state = {} if state is None else state
    state.update(model=model, variant=None, in_channels=resolved.in_channels)
    step = args.step

    def trace():
        state["trace"] = t = trace_model(model, size, resolved.in_channels)
        state["keys"] = keys = scan_keys(t, step)
        return {"layers": len(t.layers), "ops": dict(Counter(kind(r.key.op) for r in t.layers)),
                "grid_keys": len(keys),
                "dims": len(dimensions(t.layers, t.frozen_dims))}

    def profile():
        tc = TimingConfig(max_reps=args.max_reps, min_reps=2, warmup=1, threads=1)
        res = profile_model(ProfileConfig(resolved, tmp / f"{name.replace(':', '_')}.parquet", step, size,
                                          max_keys=args.max_keys, timing=tc, progress=False,
                                          weights="hot"))
        kinds: dict[str, float] = {}
        smallest: dict[str, object] = {}
        for k in state["keys"]:  # the cheapest key of every operator kind
            # (every call key is a kind of its own: one of each function is timed here)
            if kind(k.op) not in smallest or (k.c_in * k.c_out, k.in_h) < \
                    (smallest[kind(k.op)].c_in * smallest[kind(k.op)].c_out,
                     smallest[kind(k.op)].in_h):
                smallest[kind(k.op)] = k
        for op, k in sorted(smallest.items()):
            kinds[op] = round(measure_key(k, tc.validate()).mean_ms, 4)
        return {"keys_measured": res.keys_measured, "ms_per_kind": kinds}

    def estimate():
        state["lut"] = lut = stand_in_lut(state["keys"])
        est = estimate_trace(state["trace"], lut, strict=True)
        return {"operators": len(est.layers)}

    def variant():
        t = state["trace"]
        dims = dimensions(t.layers, t.frozen_dims)
        plans = plan_variants(dims, step, 3)  # the smallest variant, if the grid has one
        plan = next((p for p in plans if p.kind == "extreme-min"), plans[0])
        example = torch.randn(1, resolved.in_channels, size, size)
        net = build_variant(model, t, dims, plan.channels, example)
        vt = trace_model(net, size, resolved.in_channels)
        est = estimate_trace(vt, state["lut"], strict=True)
        state["variant"] = net  # one that runs and the table answers
        params = sum(p.numel() for p in net.parameters())
        return {"plan": plan.kind, "params_m": round(params / 1e6, 2),
                "operators": len(est.layers)}

    def groups():
        t = state["trace"]
        example = torch.zeros(1, resolved.in_channels, size, size)
        student = __import__("copy").deepcopy(model)
        graph = build_graph(student, example)
        dims = find_dims(student, graph, t)
        check_matches(dims, t)
        latency = LatencyModel(t, state["lut"], strict=True)
        latency.delta_ms(step)
        cut = [d for d in dims if d.channels > step][:3]
        for d in cut:
            remove_channels(student, graph, d, list(range(d.channels - step, d.channels)))
        pt = trace_model(student, size, resolved.in_channels)
        estimate_trace(pt, state["lut"], strict=True)
        student.train()
        loss = student(torch.randn(2, resolved.in_channels, size, size))
        loss = (loss[0] if isinstance(loss, tuple) else loss).float().pow(2).mean()
        loss.backward()
        return {"groups": len(dims), "cut": [d.root for d in cut]}

    for stage, fn in zip(STAGES, (trace, profile, estimate, variant, groups)):
        if stage != "trace" and stage != "profile" and not rec["trace"]["ok"]:
            rec[stage] = {"ok": False, "skipped": "trace failed"}
            continue
        if stage == "variant" and not rec["estimate"]["ok"]:
            rec[stage] = {"ok": False, "skipped": "estimate failed"}
            continue
        if stage == "groups" and not rec["estimate"]["ok"]:
            rec[stage] = {"ok": False, "skipped": "estimate failed"}
            continue
        if stage == "profile" and args.no_profile:
            rec[stage] = {"ok": True, "skipped": "--no-profile"}
            continue
        rec[stage] = _stage(fn)
    rec["outcome"] = outcome(rec)
    return rec


def failed(rec: dict, stages=STAGES) -> dict:
    """The stages that failed (not those skipped), by name."""
    return {s: rec[s] for s in stages
            if s in rec and not rec[s]["ok"] and "skipped" not in rec[s]}


def outcome(rec: dict, stages=STAGES) -> str:
    """works; refused (every failure one of hwprune's own errors); fails (a bug)."""
    errors = failed(rec, stages).values()
    return "works" if not errors else \
        "refused" if all(e["clean"] for e in errors) else "fails"


def failure_text(rec: dict, stages=STAGES) -> str:
    return " | ".join(f"{s}: {e['error']}: {e['message']}"
                      for s, e in failed(rec, stages).items())


def _line(rec: dict) -> str:
    if rec["outcome"] == "out of scope":
        return f"{rec['model']:22s} out of scope: {rec['reason']}"
    head = f"{rec['model']:22s} {rec['outcome']:8s} @{rec['input_size']}px " \
           f"{rec.get('params_m', 0):6.1f}M"
    bad = failure_text(rec)
    return head + ("  " + bad if bad else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="directory for the JSON")
    ap.add_argument("--models", default=None,
                    help="comma-separated names [default: every torchvision classifier]")
    ap.add_argument("--input-size", type=int, default=64,
                    help="input resolution, raised per model where it needs more")
    ap.add_argument("--step", type=int, default=64, help="coarse channel step of the grid")
    ap.add_argument("--max-keys", type=int, default=3, help="keys profile_model measures")
    ap.add_argument("--max-reps", type=int, default=5, help="timed repetitions per key")
    ap.add_argument("--max-params", type=float, default=float("inf"), metavar="MILLIONS",
                    help="skip (and list as skipped) models with more parameters than this")
    ap.add_argument("--no-profile", action="store_true", help="skip the timing stage")
    args = ap.parse_args(argv)
    names = args.models.split(",") if args.models else torchvision_model_names()
    torch.set_num_threads(1)
    results = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            reason, params = classifier_scope(name)
            if reason:
                rec = {"model": name, "outcome": "out of scope", "reason": reason,
                       "params_m": round(params / 1e6, 1)}
            elif params / 1e6 > args.max_params:
                rec = {"model": name, "outcome": "skipped", "params_m": round(params / 1e6, 1),
                       "reason": f"more than --max-params {args.max_params:g}M parameters"}
            else:
                rec = survey(name, args, Path(tmp))
            results.append(rec)
            print(_line(rec) if rec["outcome"] != "skipped"
                  else f"{name:22s} skipped: {rec['reason']}", flush=True)
            gc.collect()
    counts = Counter(r["outcome"] for r in results)
    payload = {"machine": machine(), "settings": {k: v for k, v in vars(args).items()
                                                  if k != "out"} | {"out": str(args.out)},
               "counts": dict(counts), "seconds": round(time.perf_counter() - t0, 1),
               "models": results}
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_json(args.out, "torchvision_coverage.json", payload)
    print(f"{dict(counts)}; wrote {path}")
    return 0 if not counts.get("fails") else 1


if __name__ == "__main__":
    sys.exit(main())
