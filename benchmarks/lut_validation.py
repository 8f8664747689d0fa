"""Profile and validate latency tables for several models in one regime, inside a time budget.

For each model: ``hwprune profile`` (the keys its validation variants need, with
``--for-validation``, or the whole grid with ``--full-grid``), then ``hwprune lut
validate`` on the same variants, both re-measured now. Models are done in the order
given; with time left, ``--extend`` tables are then grown to their full grid so that
the pruner can use them. Every phase runs as its own process under the time left,
so an overrun loses one phase, not the run. Writes ``OUT/lut_validation.json``
(device, torch, CUDA, cuDNN, each model's R², MAPE, max error, Spearman, conv-only and
proxy figures, key counts and seconds) beside the LUTs and reports.

Example (the H100 check of issue 4, the regime of ../shared/gpu-facts.md)::

    python benchmarks/lut_validation.py --out DIR --device cuda --mode graph --batch 256 \\
        --dtype fp16 --channels-last --models resnet18,resnet50 --extend resnet18 --budget 500

Tables of a deployment runtime (issue 18): keys timed in ONNX Runtime or OpenVINO, the
calibration and the validation variants exported and measured there::

    python benchmarks/lut_validation.py --out DIR --device cpu --mode eager --batch 1 \\
        --dtype fp32 --threads 1 --input-size 112 --step 32 --runtime onnxruntime \\
        --models resnet18,mobilenet_v2 --full-grid resnet18,mobilenet_v2

Whole-grid tables are validated with ``--recalibrate`` (``--no-recalibrate`` to turn it
off): the calibration is refitted on its own variants measured in the validation's
rounds, and the report keeps how the profile step's calibration, minutes older, did.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, write_json  # noqa: E402


def _run(cmd: list[str], seconds: float) -> tuple[int, float]:
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    try:
        rc = subprocess.run(cmd, timeout=max(1.0, seconds)).returncode
    except subprocess.TimeoutExpired:
        rc = 124
    return rc, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", default="resnet18,resnet50")
    ap.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    ap.add_argument("--mode", default="graph", choices=["eager", "graph"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dtype", default="fp16", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="cpu only")
    ap.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime", "openvino"],
                    help="where keys and variants are timed (the runtimes: --device cpu)")
    ap.add_argument("--step", type=int, default=16)
    ap.add_argument("--input-size", type=int, default=None, help="default: the model's own")
    ap.add_argument("--calibrate", type=int, default=8,
                    help="variants for the in-network calibration of whole-grid tables (0: none)")
    ap.add_argument("--recalibrate", default=True, action=argparse.BooleanOptionalAction,
                    help="whole-grid tables: validate with `--recalibrate` (the calibration "
                         "refitted on its variants measured in the validation's own rounds; "
                         "the report keeps how the profile step's calibration did)")
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-reps", type=int, default=200)
    ap.add_argument("--full-grid", default="", help="models profiled on their whole grid first")
    ap.add_argument("--extend", default="", help="models grown to their whole grid at the end")
    ap.add_argument("--budget", type=float, default=3600.0, help="seconds for everything")
    args = ap.parse_args(argv)
    t_end = time.perf_counter() + args.budget
    left = lambda: t_end - time.perf_counter()  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    hw = [sys.executable, "-m", "hwprune"]
    regime = ["--device", args.device, "--mode", args.mode, "--batch", str(args.batch),
              "--dtype", args.dtype] + (["--channels-last"] if args.channels_last else []) + \
        (["--threads", str(args.threads)] if args.threads else []) + \
        (["--input-size", str(args.input_size)] if args.input_size else []) + \
        (["--runtime", args.runtime] if args.runtime != "torch" else [])
    tag = f"{args.device}-{args.dtype}-b{args.batch}-{args.mode}" + \
        ("-cl" if args.channels_last else "") + \
        (f"-{args.runtime}" if args.runtime != "torch" else "")
    result = {"machine": machine(args.device), "regime": tag, "step": args.step,
              "input_size": args.input_size, "threads": args.threads,
              "runtime": args.runtime,
              "samples": args.samples, "models": {}}
    full = set(filter(None, args.full_grid.split(",")))
    models = args.models.split(",")
    for i, model in enumerate(models):
        lut = args.out / f"{model}-{tag}-s{args.step}.parquet"
        vdir = args.out / f"{model}-{tag}-s{args.step}.validate"
        prof = hw + ["profile", model, "--step", str(args.step), "--out", str(lut),
                     "--max-reps", str(args.max_reps), "--calibrate", str(args.calibrate),
                     "-q"] + regime
        if model not in full:
            prof += ["--for-validation", str(args.samples)]
        # An equal share of the time left for each model still to do, its validation
        # (about a minute and a half on an H100) set aside.
        share = max(30.0, (left() - 90 * (len(models) - i)) / (len(models) - i))
        rc_p, s_p = _run(prof + ["--time-budget", f"{share:.0f}"], left() - 60)
        entry = {"lut": lut.name, "profile_rc": rc_p, "profile_seconds": s_p,
                 "keys": "grid" if model in full else "validation variants"}
        if rc_p == 0 and lut.exists() and left() > 30:
            rc_v, s_v = _run(hw + ["lut", "validate", model, "--lut", str(lut), "--samples",
                                   str(args.samples), "--rounds", str(args.rounds),
                                   "--max-reps", str(args.max_reps), "--out", str(vdir), "-q"]
                             + (["--input-size", str(args.input_size)] if args.input_size
                                else [])
                             + (["--recalibrate"] if args.recalibrate and args.calibrate
                                and model in full else []), left())
            entry.update(validate_rc=rc_v, validate_seconds=s_v)
            if (vdir / "report.json").exists():
                rep = json.loads((vdir / "report.json").read_text())
                entry["report"] = {k: rep.get(k) for k in (
                    "estimator", "operator_sum", "calibration", "r2_identity", "r2_linear", "mape", "max_abs_err_ms", "spearman",
                    "n_samples", "measured_range_ms", "conv_only", "conv_only_share_of_measured",
                    "proxies", "machine_drift", "median_round_spread", "runtime",
                    "lut_runtime", "recalibration", "drift_corrected", "remeasured_after_spread")}
        result["models"][model] = entry
        write_json(args.out, "lut_validation.json", result)
    for model in filter(None, args.extend.split(",")):
        if left() < 30:
            break
        lut = args.out / f"{model}-{tag}-s{args.step}.parquet"
        rc, s = _run(hw + ["profile", model, "--step", str(args.step), "--out", str(lut),
                           "--max-reps", str(args.max_reps), "-q",
                           "--time-budget", str(max(1, left() - 60))] + regime, left())
        result["models"].setdefault(model, {})["extend"] = {"rc": rc, "seconds": s}
        write_json(args.out, "lut_validation.json", result)
    print(json.dumps({m: e.get("report", {}).get("r2_identity") for m, e in
                      result["models"].items()}))
    failed = failures(result, models)
    if failed:  # run_all.py and a shell read the exit status, not the JSON
        print(f"not done: {'; '.join(failed)} (see {args.out})", file=sys.stderr)
        return 1
    return 0


def failures(result: dict, models: list[str]) -> list[str]:
    """Each model whose profile or validation failed or did not run, and each failed
    extension, saying which."""
    out = []
    for model in models:
        e = result["models"].get(model, {})
        if e.get("profile_rc") != 0:
            out.append(f"{model}: profile exit {e.get('profile_rc')}")
        elif "validate_rc" not in e:
            out.append(f"{model}: not validated (no time left)")
        elif e["validate_rc"] != 0 or "report" not in e:
            out.append(f"{model}: validate exit {e['validate_rc']}")
    out += [f"{m}: extend exit {e['extend']['rc']}" for m, e in result["models"].items()
            if e.get("extend", {}).get("rc", 0) != 0]
    return out


if __name__ == "__main__":
    sys.exit(main())
