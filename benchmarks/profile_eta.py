"""How close the profile's ETA comes to the scan it predicts (issue 31: the ETA said
"~13.6 min" for a 67-s scan of mobilenet_v3_small at 224 px, step 16, one thread).

For each case (model, input size, step) this profiles a fresh CPU table at one thread,
exactly as ``hwprune profile`` does, and records the two ETAs the run prints: the pilot's,
before the scan (from a few calls of each layer config), and the refined one, once the
first keys of the (randomly ordered) scan are measured (``profiler.run._EtaRefinement``),
beside the scan's wall seconds. The refined ETA is judged: its ratio to the scan should
lie within [1/1.5, 1.5]. Every run re-measures; results go to OUT/profile_eta.json with
the machine's metadata.

    python benchmarks/profile_eta.py --out DIR
    python benchmarks/profile_eta.py --out DIR --cases demo:32:8 resnet18:64:32
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, parser, write_json  # noqa: E402
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


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cases", nargs="+", default=CASES, metavar="MODEL:PX:STEP")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    result = {"machine": machine("cpu"), "threads": args.threads, "bound": BOUND, "rows": []}
    for case in args.cases:
        row = run_case(case, args.threads)
        print(f"{case}: {row['keys']} keys, scan {row['scan_s']:.1f} s; pilot's ETA "
              f"{row['pilot_eta_s']:.1f} s (x{row['pilot_eta_over_scan']:.2f}); after "
              f"{row['refined_at_keys']} keys {row['refined_eta_s']:.1f} s "
              f"(x{row['refined_eta_over_scan']:.2f})", flush=True)
        result["rows"].append(row)
        write_json(args.out, "profile_eta.json", result)
    ok = sum(r["within_bound"] for r in result["rows"])
    result["within_bound"] = f"{ok} of {len(result['rows'])}"
    write_json(args.out, "profile_eta.json", result)
    print(f"ETA within x{BOUND} of the scan: {result['within_bound']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
