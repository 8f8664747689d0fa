"""Speed of the pruner's latency question: the delta query over every prunable dimension.

For each model (default resnet50 at 224 px) the script traces the network,
finds its prunable channel dimensions (residual coupling included) and times
``LatencyModel.delta_ms(k)``, the latency change of removing k channels from
every dimension at once (each answer sums the LUT changes of the producing
convs, the consuming convs' c_in and the channel-wise ops between). Warm-up,
then many repetitions; median and spread are reported. Target: < 50 ms for
resnet50 on a 2-core CPU.

The answer's speed does not depend on the latencies stored, only on the key
space. With ``--lut`` a real table is used (it must cover the model's grid at
``--step``); without it the script builds a stand-in table over the model's
exact key space with made-up latencies (proportional to MACs), so it runs in
seconds on any machine. The JSON says which was used.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from _common import machine, write_json  # noqa: E402
from hwprune.luts import LatencyModel, Lut, macs  # noqa: E402
from hwprune.profiler import scan_keys, trace_model  # noqa: E402
from hwprune.zoo import resolve_model  # noqa: E402


def stand_in_lut(keys, stat_cols=("mean_ms", "median_ms", "min_ms")) -> Lut:
    rows = []
    for k in keys:
        ms = 1e-3 + macs(k) * 1e-8 + k.c_in * 1e-6
        rows.append({**k.as_dict(), **{c: ms for c in stat_cols}, "std_ms": 0.0, "reps": 1,
                     "ci95_rel": 0.0, "converged": True, "algo": "stand-in", "seconds": 0.0})
    return Lut(pd.DataFrame(rows), {"device_name": "stand-in"}, source="<stand-in>")


def bench(name: str, args) -> dict:
    resolved = resolve_model(name)
    trace = trace_model(resolved.module, args.input_size, resolved.in_channels)
    lut = Lut.load(args.lut) if args.lut else stand_in_lut(scan_keys(trace, args.step))
    t0 = time.perf_counter()
    model = LatencyModel(trace, lut)
    setup = time.perf_counter() - t0
    for _ in range(3):
        model.delta_ms(args.step)
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        model.delta_ms(args.step)
        times.append((time.perf_counter() - t0) * 1e3)
    members = len(model._layer)
    return {"model": name, "input_size": args.input_size, "step": args.step,
            "lut": args.lut or "stand-in over the exact key space",
            "dimensions": len(model.dims), "member_keys": members, "layers": len(trace.layers),
            "setup_ms": setup * 1e3, "reps": args.reps,
            "delta_query_ms": {"median": statistics.median(times), "min": min(times),
                               "max": max(times), "stdev": statistics.stdev(times)},
            "target_ms": 50.0, "meets_target": statistics.median(times) < 50.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="directory for delta_query.json")
    ap.add_argument("--models", nargs="+", default=["resnet50"])
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--step", type=int, default=16, help="channels removed per query (group size)")
    ap.add_argument("--lut", default=None, help="a real LUT covering the model (optional)")
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    results = [bench(m, args) for m in args.models]
    path = write_json(args.out, "delta_query.json",
                      {"benchmark": "delta_query", "machine": machine("cpu"), "models": results})
    for r in results:
        d = r["delta_query_ms"]
        print(f"{r['model']}: {r['dimensions']} prunable dimensions, {r['member_keys']} keys "
              f"per query; delta query median {d['median']:.2f} ms (min {d['min']:.2f}, max "
              f"{d['max']:.2f}) over {r['reps']} reps; target < 50 ms: "
              f"{'met' if r['meets_target'] else 'NOT met'}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
