"""How much a table's validation varies from run to run, beside the simple baselines.

For each case (model, input size, step) this profiles one CPU table at one thread (the
whole grid, calibrated as ``hwprune profile`` does by default), then runs ``hwprune lut
validate --fresh`` on it ``--repeats`` times (default 3), each measuring the same
``--samples`` pruned variants again. Reported per case: each run's calibrated R²
(identity line) and MAPE, the plain operator sum's, and the fitted FLOPs and
parameter-count lines' (a linear fit of each proxy on the same measurements, in-sample),
then the median and range over the runs. A table earns its keep only where it beats
those lines. Every run re-measures; results go to OUT/lut_validation_repeat.json with
the machine's metadata; exits 1 when a step failed.

    python benchmarks/lut_validation_repeat.py --out DIR
    python benchmarks/lut_validation_repeat.py --out DIR --cases resnet18:64:64 --repeats 5
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, median_range, parser, write_json  # noqa: E402

CASES = ["resnet18:64:64", "demo:32:16"]
HW = [sys.executable, "-m", "hwprune"]


def _figures(report: dict) -> dict:
    pick = lambda a: {"r2_identity": a.get("r2_identity"), "r2_linear": a.get("r2_linear"),  # noqa: E731
                      "mape": a.get("mape")}
    return {"table": pick(report), "operator_sum": pick(report.get("operator_sum") or {}),
            "flops_line": pick(report["proxies"]["flops"]),
            "params_line": pick(report["proxies"]["params"]),
            "calibrated": bool(report.get("calibration")),
            "median_round_spread": report.get("median_round_spread"),
            "n_samples": report.get("n_samples")}


def _spread(runs: list[dict]) -> dict:
    """Median and range over the runs of every figure."""
    out = {}
    for est in ("table", "operator_sum", "flops_line", "params_line"):
        out[est] = {}
        for k in ("r2_identity", "mape"):
            vals = [r[est][k] for r in runs if r[est].get(k) is not None]
            if vals:
                out[est][k] = median_range(vals)
    return out


def run_case(case: str, out: Path, samples: int, repeats: int) -> dict:
    model, size, step = case.split(":")
    lut = out / f"{model}-{size}px-s{step}.parquet"
    t0 = time.perf_counter()
    rc = subprocess.run(HW + ["profile", model, "--input-size", size, "--step", step,
                              "--threads", "1", "--out", str(lut), "-q"]).returncode
    entry = {"case": case, "model": model, "input_size": int(size), "step": int(step),
             "samples": samples, "profile_rc": rc, "profile_seconds": time.perf_counter() - t0,
             "runs": []}
    if rc != 0:
        return entry
    for i in range(repeats):
        vdir = out / f"{model}-{size}px-s{step}.validate"
        rc = subprocess.run(HW + ["lut", "validate", model, "--lut", str(lut), "--input-size",
                                  size, "--samples", str(samples), "--out", str(vdir),
                                  "--fresh", "-q"]).returncode
        if rc != 0:
            entry["runs"].append({"rc": rc})
            continue
        entry["runs"].append({"rc": 0, **_figures(json.loads((vdir / "report.json").read_text()))})
    good = [r for r in entry["runs"] if r["rc"] == 0]
    entry["over_runs"] = _spread(good) if good else None
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cases", nargs="+", default=CASES, metavar="MODEL:PX:STEP")
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine("cpu"), "threads": 1, "repeats": args.repeats, "cases": []}
    for case in args.cases:
        result["cases"].append(run_case(case, args.out, args.samples, args.repeats))
        write_json(args.out, "lut_validation_repeat.json", result)
        e = result["cases"][-1]
        for est, figs in (e.get("over_runs") or {}).items():
            r2, mape = figs.get("r2_identity"), figs.get("mape")
            print(f"{case} {est:13}: R² {r2['median']:.3f} [{r2['min']:.3f}-{r2['max']:.3f}], "
                  f"MAPE {100 * mape['median']:.1f}% [{100 * mape['min']:.1f}-"
                  f"{100 * mape['max']:.1f}%]" if r2 and mape else f"{case} {est}: -", flush=True)
    failed = [c["case"] for c in result["cases"]
              if c["profile_rc"] != 0 or any(r["rc"] != 0 for r in c["runs"])]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
