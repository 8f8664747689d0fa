"""`make demo` from clean clones, over seeds: its wall time and its table with intervals.

Each run clones the repository's committed HEAD into a new temporary directory and times,
one after the other, ``make install`` (a new virtual environment) and ``make demo`` with
``DEMO_ARGS="--seed S"`` (``--quick`` added with --quick), as a new user would type them.
The seed changes the data split, the teacher's training, the synthesized images and the
pruning runs, so the runs are independent repetitions of the whole job. From each run's
``build/demo/demo.json`` it keeps the teacher's accuracy, the LUT's validation, and each
budget's measured latency ratio, verdict and accuracy on the real held-out digits.

Writes ``OUT/demo_runs.json`` (``demo_runs_quick.json`` with --quick) after every run, with
the commit, each run's seconds (install, demo, total) and demo results, and over the runs:
the median and range of the times and of the LUT's R² and MAPE, and per budget and
criterion the mean accuracy and measured ratio with 95% t-intervals over seeds and how
many runs met their budget. Exits 1 when a run failed.

    python benchmarks/demo_runs.py --out DIR                   # 3 runs, seeds 0 1 2
    python benchmarks/demo_runs.py --out DIR --quick           # the quick demo's plumbing
    python benchmarks/demo_runs.py --out DIR --seeds 0 1 2 3 4

A full run takes 7-9 minutes on the 2-vCPU development VM, a quick one about 2-3.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (budget_cells, clean_clone, head_commit, interval,  # noqa: E402
                     machine, median_range, parser, timed, write_json)

ROOT = Path(__file__).resolve().parents[1]
CRITERIA = ("taylor-latency", "taylor")


def _kept(demo: dict) -> dict:
    """What the summary reads from one run's demo.json."""
    v = demo["lut_validation"]
    rows = [{k: r.get(k) for k in ("budget", "criterion", "measured_ratio", "ratio_low",
                                    "ratio_high", "verdict", "settled", "settled_by", "accuracy",
                                    "error")} for r in demo["rows"]]
    return {"teacher_acc": demo["teacher_acc"], "teacher_ms": demo["teacher_ms"],
            "lut_validation": {k: v.get(k) for k in ("r2_identity", "mape", "n_samples")},
            "operator_sum": v.get("operator_sum"), "rows": rows,
            "stage_seconds": demo["stage_seconds"], "demo_seconds": demo["seconds"],
            "n_test": demo.get("n_test")}


def one_run(repo: Path, seed: int, quick: bool, timeout: float) -> dict:
    args = f"--seed {seed} -q" + (" --quick" if quick else "")
    with clean_clone(repo, prefix="hwprune-demo-") as clone:
        rc_i, install_s, out_i = timed(["make", "install"], clone, timeout)
        if rc_i != 0:
            return {"seed": seed, "install_s": round(install_s, 1), "rc": rc_i,
                    "error": out_i[-2000:]}
        rc_d, demo_s, out_d = timed(["make", "demo", f"DEMO_ARGS={args}"], clone, timeout)
        run = {"seed": seed, "install_s": round(install_s, 1), "demo_s": round(demo_s, 1),
               "total_s": round(install_s + demo_s, 1), "rc": rc_d}
        result = clone / "build" / "demo" / "demo.json"
        if rc_d != 0 or not result.is_file():
            return {**run, "rc": rc_d or 1, "error": out_d[-3000:]}
        # the table exactly as the demo printed it
        return {**run, "printed": out_d[out_d.find("teacher:"):][-3000:],
                **_kept(json.loads(result.read_text()))}


def summarize(runs: list[dict]) -> dict:
    ok = [r for r in runs if r["rc"] == 0]
    if not ok:
        return {}
    # a run's budget that pruning could not reach is "unreachable" (demo.json's error)
    cells = budget_cells([row for r in ok for row in r["rows"]], CRITERIA, "unreachable")
    return {"total_s": median_range([r["total_s"] for r in ok]),
            "demo_s": median_range([r["demo_s"] for r in ok]),
            "install_s": median_range([r["install_s"] for r in ok]),
            "teacher_acc": interval([r["teacher_acc"] for r in ok]),
            "lut_r2_identity": median_range([r["lut_validation"]["r2_identity"] for r in ok]),
            "lut_mape": median_range([r["lut_validation"]["mape"] for r in ok]),
            "cells": cells}


def format_summary(result: dict) -> str:
    s = result.get("summary")
    if not s:
        return "no run finished"
    t, r2 = s["total_s"], s["lut_r2_identity"]
    failed = [str(r["seed"]) for r in result["runs"] if r["rc"] != 0]
    lines = [f"{t['n']} runs ({'quick' if result['quick'] else 'full'} demo, seeds "
             f"{', '.join(str(r['seed']) for r in result['runs'] if r['rc'] == 0)}"
             + (f"; failed: seed {', '.join(failed)}" if failed else "")
             + f"): make install + make demo median {t['median']:.0f} s "
             f"[{t['min']:.0f}-{t['max']:.0f}]; LUT R² (identity) median "
             f"{r2['median']:.3f} [{r2['min']:.3f}-{r2['max']:.3f}]"]
    pct = lambda iv: ("n/a" if iv["mean"] is None else f"{100 * iv['mean']:.1f}" + (  # noqa: E731
        f" [{100 * iv['low']:.1f}-{100 * iv['high']:.1f}]" if iv["low"] is not None else ""))
    for c in s["cells"]:
        lines.append(f"{100 * c['budget']:>4.0f}% {c['criterion']:<15} accuracy "
                     f"{pct(c['accuracy']):<20} measured % teacher {pct(c['measured_ratio'])}"
                     f"  met {c['met']} of {c['runs']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="one clean-clone run per seed, one after the other")
    ap.add_argument("--quick", action="store_true", help="time `hwprune demo --quick`")
    ap.add_argument("--repo", type=Path, default=ROOT, help="the repository to clone")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per make call")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine("cpu"), "commit": head_commit(args.repo), "quick": args.quick,
              "runs": []}
    name = "demo_runs_quick.json" if args.quick else "demo_runs.json"
    for seed in args.seeds:
        run = one_run(args.repo, seed, args.quick, args.timeout)
        result["runs"].append(run)
        result["summary"] = summarize(result["runs"])
        write_json(args.out, name, result)
        print(f"seed {seed}: install {run['install_s']} s, demo {run.get('demo_s')} s"
              + (f", LUT R² {run['lut_validation']['r2_identity']:.3f}" if run["rc"] == 0
                 else f", FAILED: {run.get('error', '')[-300:]}"), flush=True)
    print(format_summary(result))
    return 1 if any(r["rc"] != 0 for r in result["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
