"""Speed-up of pruned models measured in PyTorch, ONNX Runtime and OpenVINO, side by side.

A model pruned and timed in PyTorch ships in a runtime that fuses Conv+BN+activation and
picks its own kernels, so its speed-up there can differ. This benchmark re-measures, now,
on this CPU (one thread by default), each pruned model and its unpruned original in all
three runtimes, in interleaved rounds (round r times every network in every runtime
before round r+1, so a drift of the machine hits all alike), and reports per runtime the
latency of each network and its speed-up over the original (median of the per-round
ratios, with the smallest and largest round).

Models:
  resnet18   pruned variants on a channel grid (the uniform 75/50/25%, the lopsided
             ones, random draws), physically cut with Torch-Pruning, at --input-size
  demo       the pruned students of a finished ``hwprune demo`` run (--demo DIR:
             DIR/teacher-*.pt and DIR/runs/*/pruned.pt); skipped when DIR has none

With ``--luts torch=A.parquet,onnxruntime=B.parquet,openvino=C.parquet`` (tables of
resnet18 at the same input size, e.g. from ``benchmarks/lut_validation.py --runtime``),
every table's estimate of every resnet18 network is compared with every runtime's
measurement of it: a 3x3 table of MAPE and R² (identity line), rows the table's runtime,
columns where the networks were measured. The diagonal is each runtime's own table; off
the diagonal, what a table timed in one runtime tells a user of another.

Writes OUT/runtime_gap.json (machine, torch, runtime versions and settings, every
measurement).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, write_json  # noqa: E402

RUNTIMES = ("torch", "onnxruntime", "openvino")


def resnet18_set(size: int, samples: int, step: int) -> tuple[dict, int]:
    from hwprune.luts.variants import build_variant, plan_variants
    from hwprune.profiler.coupling import dimensions
    from hwprune.profiler.keyspace import trace_model
    from hwprune.zoo import resolve_model

    r = resolve_model("resnet18")
    trace = trace_model(r.module, size, 3)
    dims = dimensions(trace.layers, trace.frozen_dims)
    example = torch.randn(1, 3, size, size)
    nets = {}
    for p in plan_variants(dims, step, samples, seed=0):
        tag = "original" if p.kind == "original" else f"{p.kind}-{len(nets)}"
        nets[tag] = r.module if p.kind == "original" else \
            build_variant(r.module, trace, dims, p.channels, example)
    return nets, 3


def demo_set(demo: Path) -> tuple[dict, int]:
    from hwprune.zoo import load_checkpoint

    teachers = sorted(demo.glob("teacher-*.pt"))
    students = sorted(demo.glob("runs/*/pruned.pt"))
    if not teachers or not students:
        return {}, 1
    nets = {"original": load_checkpoint(teachers[0]).module}
    for s in students:
        nets[s.parent.name] = load_checkpoint(s).module
    return nets, 1


def measure(nets: dict, size: int, in_ch: int, rounds: int, threads: int, max_reps: int,
            progress: bool) -> dict:
    from hwprune.luts.variants import measure_interleaved
    from hwprune.profiler.runtime_timing import RuntimeNets, time_session
    from hwprune.profiler.timing import TimingConfig, model_input, prepare_model, time_model

    tc = TimingConfig(threads=threads, max_reps=max_reps, max_seconds=3.0,
                      min_seconds=0.5).validate()
    x = model_input(tc, in_ch, size)
    runtimes = {rt: RuntimeNets(rt, size, in_ch, threads) for rt in RUNTIMES if rt != "torch"}
    torch_nets = {tag: prepare_model(m, tc) for tag, m in nets.items()}
    old = torch.get_num_threads()
    try:  # the runtimes' temporary directories go whatever happens
        for tag, m in nets.items():
            for rn in runtimes.values():
                rn.add(tag, m)
        # every network in every runtime, one after another in each round
        entries = {(tag, rt): (rt, torch_nets[tag] if rt == "torch"
                               else runtimes[rt].session(tag))
                   for tag in nets for rt in RUNTIMES}
        x_np = x.numpy()

        def timer(entry):
            rt, net = entry
            return time_model(net, x, tc) if rt == "torch" else time_session(net, x_np, tc)

        torch.set_num_threads(threads)
        got, _ = measure_interleaved(entries, x, tc, rounds, progress, timer=timer)
        ms = {rt: {tag: got[(tag, rt)]["median_ms"] for tag in nets} for rt in RUNTIMES}
        info = {rt: rn.session("original").info.as_dict() for rt, rn in runtimes.items()}
        exports = {rt: {t: e["max_abs_diff"] for t, e in rn.exports.items()}
                   for rt, rn in runtimes.items()}
    finally:
        torch.set_num_threads(old)
        for rn in runtimes.values():
            rn.close()
    return {"timing": tc.__dict__, "runtime_info": info, "export_max_abs_diff": exports,
            "networks": {tag: _row(ms, tag) for tag in nets}}


def _row(ms: dict, tag: str) -> dict:
    row = {}
    for rt in RUNTIMES:
        mine, orig = np.array(ms[rt][tag]), np.array(ms[rt]["original"])
        ratio = mine / orig  # per round: both measured in the same round
        row[rt] = {"median_ms": float(np.median(mine)), "rounds_ms": mine.tolist(),
                   "ratio": float(np.median(ratio)), "ratio_min": float(ratio.min()),
                   "ratio_max": float(ratio.max()), "speedup": float(1 / np.median(ratio))}
    return row


def lut_errors(nets: dict, size: int, luts: dict, result: dict) -> dict:
    """{lut runtime: {measured runtime: agreement}} over the networks of ``result``."""
    from hwprune.luts import Lut, estimate
    from hwprune.luts.metrics import agreement

    tags = list(result["networks"])
    out = {}
    for lut_rt, path in luts.items():
        lut = Lut.load(path)
        est = np.array([estimate(nets[t], lut, size, 3).total_ms for t in tags])
        out[lut_rt] = {"lut": str(path), "lut_runtime": lut.runtime,
                       "estimate_ms": dict(zip(tags, est.tolist()))}
        for rt in RUNTIMES:
            meas = np.array([result["networks"][t][rt]["median_ms"] for t in tags])
            a = agreement(est, meas)
            out[lut_rt][rt] = {k: a[k] for k in ("mape", "r2_identity", "r2_linear",
                                                 "max_abs_err_ms", "n_samples")}
    return out


def error_table(errors: dict) -> str:
    lines = ["LUT error against measurement: MAPE (R² identity); rows: the table's runtime, "
             "columns: where the networks were measured",
             f"  {'table':14s}" + "".join(f"{rt:>22s}" for rt in RUNTIMES)]
    for lut_rt, row in errors.items():
        lines.append(f"  {lut_rt:14s}" + "".join(
            f"{100 * row[rt]['mape']:>12.1f}% ({row[rt]['r2_identity']:6.3f})"
            for rt in RUNTIMES))
    return "\n".join(lines)


def table(name: str, result: dict) -> str:
    lines = [f"{name}: latency ratio to the original (median of rounds), speed-up in brackets",
             f"  {'network':24s}" + "".join(f"{rt:>24s}" for rt in RUNTIMES)]
    for tag, row in result["networks"].items():
        cells = "".join(f"{row[rt]['median_ms']:8.3f} ms {row[rt]['ratio']:5.3f} "
                        f"({row[rt]['speedup']:4.2f}x)" for rt in RUNTIMES)
        lines.append(f"  {tag:24s}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", default="resnet18,demo")
    ap.add_argument("--input-size", type=int, default=112, help="resnet18's input size")
    ap.add_argument("--samples", type=int, default=8, help="resnet18 networks, original included")
    ap.add_argument("--step", type=int, default=32, help="resnet18's channel grid")
    ap.add_argument("--demo", type=Path, default=Path("build/demo"),
                    help="a finished `hwprune demo` output directory")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-reps", type=int, default=200)
    ap.add_argument("--luts", default="", metavar="RT=PATH,...",
                    help="resnet18 tables per runtime, for the 3x3 LUT-error table")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    luts = dict(item.split("=", 1) for item in filter(None, args.luts.split(",")))
    unknown = set(luts) - set(RUNTIMES)
    if unknown:
        ap.error(f"--luts: unknown runtime(s) {sorted(unknown)} (choose {', '.join(RUNTIMES)})")
    t0 = time.perf_counter()
    payload = {"benchmark": "runtime_gap", "machine": machine("cpu"), "models": {}}
    for name in args.models.split(","):
        if name == "resnet18":
            nets, in_ch = resnet18_set(args.input_size, args.samples, args.step)
            size = args.input_size
        elif name == "demo":
            nets, in_ch = demo_set(args.demo)
            size = 32
            if not nets:
                print(f"demo: no teacher-*.pt and runs/*/pruned.pt under {args.demo}: skipped")
                payload["models"]["demo"] = {"skipped": f"nothing under {args.demo}"}
                continue
        else:
            ap.error(f"unknown model set '{name}' (resnet18, demo)")
        res = measure(nets, size, in_ch, args.rounds, args.threads, args.max_reps,
                      not args.quiet)
        res["input_size"] = size
        payload["models"][name] = res
        print(table(name, res), flush=True)
        if name == "resnet18" and luts:
            res["lut_errors"] = lut_errors(nets, size, luts, res)
            print(error_table(res["lut_errors"]), flush=True)
    payload["seconds"] = time.perf_counter() - t0
    path = write_json(args.out, "runtime_gap.json", payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
