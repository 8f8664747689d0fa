"""How close the profile's ETA comes to the scan it predicts (issue 31: the ETA said
"~13.6 min" for a 67-s scan of mobilenet_v3_small at 224 px, step 16, one thread).

For each case (model, input size, step) and each of ``--runs`` runs this profiles a
fresh CPU table at one thread, exactly as ``hwprune profile`` does, and records the ETA the
run prints once a fifth of the (randomly ordered) keys is measured
(``profiler.run._EtaRefinement``) beside the scan's wall seconds, and the pilot's guess,
which is no longer printed. The printed ETA is judged: its ratio to the scan should lie
within [1/1.5, 1.5]. The summary gives, per case, the median and range of that ratio and
of the scan's seconds (the machine's own run-to-run spread, which no ETA can foresee).
Every run re-measures; results go to OUT/profile_eta.json with the machine's metadata.

    python benchmarks/profile_eta.py --out DIR                 # 3 cases x 3 runs, ~10 min
    python benchmarks/profile_eta.py --out DIR --runs 1 --cases demo:32:8 resnet18:64:32
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, median_range, parser, write_json  # noqa: E402
from hwprune.profiler import ProfileConfig, TimingConfig, profile_model  # noqa: E402

CASES = ["demo:32:8", "resnet18:64:32", "mobilenet_v3_small:224:16"]
BOUND = 1.5


def run_case(case: str, threads: int) -> dict:
    model, size, step = case.split(":")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = profile_model(ProfileConfig(model, Path(tmp) / "t.parquet", step=int(step),
                                          input_size=int(size), progress=False,
                                          timing=TimingConfig(threads=threads)))
        wall = time.perf_counter() - t0
    scan = res.wall_seconds  # the key loop alone (stages' "scan" adds the drift reading)
    pilot = res.eta_seconds / scan if res.eta_seconds and scan else None
    refined = res.eta_refined_seconds / scan if res.eta_refined_seconds and scan else None
    return {"case": case, "model": model, "input_size": int(size), "step": int(step),
            "keys": res.keys_measured, "scan_s": scan, "wall_s": wall, "stages_s": res.stages,
            "pilot_eta_s": res.eta_seconds, "pilot_eta_over_scan": pilot,
            "refined_eta_s": res.eta_refined_seconds,
            "refined_at_keys": res.eta_refined_at_keys, "refined_eta_over_scan": refined,
            "within_bound": refined is not None and 1 / BOUND <= refined <= BOUND}


def summarize(rows: list[dict]) -> dict:
    out = {}
    for case in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == case]
        ratios = [r["refined_eta_over_scan"] for r in mine if r["refined_eta_over_scan"]]
        pilots = [r["pilot_eta_over_scan"] for r in mine if r["pilot_eta_over_scan"]]
        out[case] = {"runs": len(mine), "eta_over_scan": median_range(ratios) if ratios else None,
                     "pilot_over_scan": median_range(pilots) if pilots else None,
                     "scan_s": median_range([r["scan_s"] for r in mine]),
                     "within_bound": sum(r["within_bound"] for r in mine)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cases", nargs="+", default=CASES, metavar="MODEL:PX:STEP")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3, help="runs of each case (default 3)")
    args = ap.parse_args(argv)
    result = {"machine": machine("cpu"), "threads": args.threads, "bound": BOUND,
              "runs": args.runs, "rows": []}
    for run in range(args.runs):
        for case in args.cases:
            row = {"run": run, **run_case(case, args.threads)}
            eta = row["refined_eta_over_scan"]
            print(f"run {run}, {case}: {row['keys']} keys, scan {row['scan_s']:.1f} s; ETA "
                  + (f"after {row['refined_at_keys']} keys {row['refined_eta_s']:.1f} s "
                     f"(x{eta:.2f})" if eta else "never printed")
                  + f"; pilot's guess x{row['pilot_eta_over_scan'] or float('nan'):.2f}",
                  flush=True)
            result["rows"].append(row)
            write_json(args.out, "profile_eta.json", result)
    ok = sum(r["within_bound"] for r in result["rows"])
    result["within_bound"] = f"{ok} of {len(result['rows'])}"
    result["summary"] = summarize(result["rows"])
    write_json(args.out, "profile_eta.json", result)
    for case, s in result["summary"].items():
        e, sc = s["eta_over_scan"], s["scan_s"]
        eta = f"median {e['median']:.2f} [{e['min']:.2f}-{e['max']:.2f}]" if e else "none"
        print(f"{case}: ETA/scan {eta}, scan {sc['median']:.0f} s "
              f"[{sc['min']:.0f}-{sc['max']:.0f}], "
              f"{s['within_bound']} of {s['runs']} within x{BOUND}")
    print(f"ETA within x{BOUND} of the scan: {result['within_bound']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
