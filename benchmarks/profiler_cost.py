"""What profiling a device costs, and what adaptive repetitions save against the paper's protocol.

For each model (default resnet18 and resnet50 at 224 px, step 16) this script
builds the scan grid, draws a random sample of its keys and times each key
twice, in alternating order:

* adaptive: hwprune's default (the library's own algorithm choice, repetitions
  until the 95% CI of the mean is within 1%, at most 1000);
* paper: every algorithm (oneDNN and native kernels on CPU; every cuDNN engine
  through cudnn-frontend on CUDA) x 1000 runs each, keeping the fastest mean.

It reports device-seconds per key for both, the total for the whole grid
(per-key mean x grid size: an extrapolation from the sample, labelled so),
the cost ratio paper / adaptive, and the median relative difference between
the latencies the two protocols would store.

Then (``--stages``, on by default; ``--no-stages`` to skip) it runs what a user runs,
as subprocesses of the CLI, and records each command's wall time and the seconds per
stage that ``hwprune profile`` prints (setup, pilot, reference, scan, finalize; then the
calibration and its budget), and the validation's R² and MAPE:

  1. profile resnet18 --step 128 --input-size 64 --max-keys 40   (a partial run)
  2. the same command without --max-keys                         (completes, calibrates)
  3. lut validate resnet18 --samples 12                          (the table checked)

``--src DIR`` runs these commands from another checkout of hwprune (e.g. an older
commit, for a before/after comparison in the same conditions). Everything is
re-measured on every run; results go to OUT/profiler_cost.json with the machine's
metadata.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from _common import machine, write_json  # noqa: E402
from hwprune.profiler import TimingConfig, measure_key, scan_keys, trace_model  # noqa: E402
from hwprune.profiler.run import cold_bytes_for  # noqa: E402
from hwprune.zoo import resolve_model  # noqa: E402


def _paper_config(device: str, reps: int) -> TimingConfig:
    algos = "all"
    if device == "cuda":
        try:
            import cudnn  # noqa: F401
        except ImportError:
            algos = "auto"  # no engine enumeration without cudnn-frontend; noted in the JSON
    return TimingConfig(device=device, algos=algos, min_reps=reps, max_reps=reps, rel_ci=0.0,
                        max_seconds=float("inf")).validate()


def bench_model(name: str, args: argparse.Namespace, rng: random.Random) -> dict:
    resolved = resolve_model(name)
    keys = scan_keys(trace_model(resolved.module, args.input_size, resolved.in_channels), args.step)
    sample = rng.sample(keys, min(args.keys, len(keys)))
    adaptive_cfg = TimingConfig(device=args.device).validate()
    paper_cfg = _paper_config(args.device, args.paper_reps)
    # Both protocols time weights as `hwprune profile` would (cold when the model's
    # weights exceed the last-level cache), so only repetitions and algorithms differ.
    adaptive_cfg.cold_bytes = paper_cfg.cold_bytes = cold_bytes_for(resolved.module,
                                                                     adaptive_cfg)[0]
    rows = []
    for i, key in enumerate(sample):
        order = [("adaptive", adaptive_cfg), ("paper", paper_cfg)]
        if i % 2:
            order.reverse()  # alternate so slow drift of the machine biases neither side
        res = {label: measure_key(key, cfg) for label, cfg in order}
        rows.append({"key": key.as_dict(),
                     **{f"{lab}_{f}": getattr(s, f) for lab, s in res.items()
                        for f in ("mean_ms", "median_ms", "reps", "seconds", "algo",
                                  "converged")}})
        print(f"  {name} {i + 1}/{len(sample)} {key.op} {key.c_in}->{key.c_out} @{key.in_h}: "
              f"adaptive {res['adaptive'].seconds:.2f} s ({res['adaptive'].reps} reps), "
              f"paper {res['paper'].seconds:.2f} s", flush=True)
    ad = [r["adaptive_seconds"] for r in rows]
    pa = [r["paper_seconds"] for r in rows]
    rel = [(r["adaptive_mean_ms"] - r["paper_mean_ms"]) / r["paper_mean_ms"] for r in rows]
    rel_med = [abs(r["adaptive_median_ms"] - r["paper_median_ms"]) / r["paper_median_ms"]
               for r in rows]
    # Where both protocols ended on the same algorithm, a difference is timing noise alone.
    same = [abs(v) for v, r in zip(rel, rows) if r["adaptive_algo"] == r["paper_algo"]]
    return {
        "model": name, "input_size": args.input_size, "step": args.step,
        "grid_keys": len(keys), "sampled_keys": len(rows),
        "adaptive_seconds_per_key": {"mean": statistics.mean(ad), "median": statistics.median(ad)},
        "paper_seconds_per_key": {"mean": statistics.mean(pa), "median": statistics.median(pa)},
        "adaptive_total_seconds_estimated": statistics.mean(ad) * len(keys),
        "paper_total_seconds_estimated": statistics.mean(pa) * len(keys),
        "cost_ratio_paper_over_adaptive": sum(pa) / sum(ad),
        "median_abs_rel_diff_of_stored_latency": statistics.median(abs(v) for v in rel),
        "median_signed_rel_diff_adaptive_minus_paper": statistics.median(rel),
        "median_abs_rel_diff_of_medians": statistics.median(rel_med),
        "median_abs_rel_diff_same_algo": statistics.median(same) if same else None,
        "keys_where_paper_chose_another_algo": len(rows) - len(same),
        "adaptive_converged_fraction": sum(r["adaptive_converged"] for r in rows) / len(rows),
        "paper_algos": paper_cfg.algos, "paper_reps": args.paper_reps,
        "weights": adaptive_cfg.identity()["weights"],
        "keys": rows,
    }


_STAGE_LINE = re.compile(r"seconds per stage: (.*)")
_CAL_LINE = re.compile(r"; (\d+) s \(budget (\d+) s\)")


def _cli(src: Path, args: list[str], env: dict) -> tuple[float, str, int]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", "from hwprune.cli import main; main()", *args],
                       cwd=src, env={**env, "PYTHONPATH": str(src)}, capture_output=True,
                       text=True)
    return time.perf_counter() - t0, p.stdout + p.stderr, p.returncode


def _stages(text: str) -> dict:
    found = _STAGE_LINE.search(text)
    stages = {}
    if found:
        for part in found.group(1).split(", "):
            name, value = part.rsplit(" ", 1)
            stages[name] = float(value)
    cal = _CAL_LINE.search(text)
    if cal:
        stages["calibration"] = float(cal.group(1))
        stages["calibration_budget"] = float(cal.group(2))
    return stages


def bench_stages(src: Path) -> dict:
    """The user's three commands, timed end to end, with the stages the CLI reports."""
    work = Path(tempfile.mkdtemp(prefix="hwprune-cost-"))
    lut = work / "t.parquet"
    base = ["profile", "resnet18", "--device", "cpu", "--step", "128", "--input-size", "64",
            "--out", str(lut), "-q"]
    runs = [("profile --max-keys 40", base + ["--max-keys", "40"]),
            ("profile (completes, calibrates)", base),
            ("lut validate --samples 12", ["lut", "validate", "resnet18", "--lut", str(lut),
                                           "--samples", "12", "--out", str(work / "val"), "-q"])]
    env = dict(os.environ)
    out = []
    for label, args in runs:
        wall, text, rc = _cli(src, args, env)
        row = {"command": label, "args": args[:-1] if args[-1] == "-q" else args,
               "wall_seconds": wall, "rc": rc, "stages": _stages(text)}
        if label.startswith("lut validate") and (work / "val" / "report.json").is_file():
            rep = json.loads((work / "val" / "report.json").read_text())
            row["validation"] = {k: rep.get(k) for k in ("r2_identity", "r2_linear", "mape",
                                                         "median_round_spread", "seconds")}
        if rc:
            row["output_tail"] = text[-2000:]
        out.append(row)
        print(f"  {label}: {wall:.1f} s wall, stages {row['stages']}"
              + (f", validation {row.get('validation')}" if "validation" in row else ""),
              flush=True)
    return {"src": str(src), "commands": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="directory for profiler_cost.json")
    ap.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--step", type=int, default=16)
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--keys", type=int, default=12, help="sampled keys per model")
    ap.add_argument("--paper-reps", type=int, default=1000, help="fixed runs per algorithm")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-stages", dest="stages", action="store_false",
                    help="skip the per-stage costs of the profile/calibrate/validate commands")
    ap.add_argument("--no-keys", dest="keys_part", action="store_false",
                    help="skip the per-key adaptive-vs-paper comparison")
    ap.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1],
                    help="checkout of hwprune whose CLI the stage costs run (default: this one)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rng = random.Random(args.seed)
    results = [bench_model(m, args, rng) for m in args.models] if args.keys_part else []
    stages = bench_stages(args.src.resolve()) if args.stages else None
    payload = {"benchmark": "profiler_cost", "machine": machine(args.device),
               "wall_seconds": time.perf_counter() - t0, "seed": args.seed, "models": results,
               "stages": stages}
    path = write_json(args.out, "profiler_cost.json", payload)
    for r in results:
        print(f"{r['model']}: {r['grid_keys']} keys at step {r['step']}; per key adaptive "
              f"{r['adaptive_seconds_per_key']['mean']:.2f} s vs paper "
              f"{r['paper_seconds_per_key']['mean']:.2f} s; grid total (estimated) "
              f"{r['adaptive_total_seconds_estimated'] / 3600:.2f} h vs "
              f"{r['paper_total_seconds_estimated'] / 3600:.2f} h; cost ratio "
              f"{r['cost_ratio_paper_over_adaptive']:.1f}x; median |rel diff| of stored "
              f"latency {100 * r['median_abs_rel_diff_of_stored_latency']:.1f}% (of medians "
              f"{100 * r['median_abs_rel_diff_of_medians']:.1f}%); another algorithm won on "
              f"{r['keys_where_paper_chose_another_algo']}/{r['sampled_keys']} keys")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
