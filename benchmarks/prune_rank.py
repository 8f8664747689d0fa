"""Speed of one full ranking step of the pruner over every group of a large network.

For resnet50 at 224 px (default) the script builds the pruner's state (Torch-Pruning
groups matched to the latency model's dimensions) and times ``Pruner.rank``: for every
prunable dimension the error term of its least important group of 16 filters, the LUT
latency saving of removing it (the batched delta query: the group's convs, every
consumer's c_in, the channel-wise ops between) and their normalised combination.
Warm-up, then many repetitions; median and spread. Target: < 200 ms on a 2-core CPU.

Also reported, for context: one accumulation of the gate scores (after a backward pass)
and one physical removal of a group with Torch-Pruning (momentum carried), each timed
once per repetition on fresh state.

The ranking's speed does not depend on the latencies stored, only on the key space:
without ``--lut`` a stand-in table over the model's exact key space is used (made-up
latencies proportional to MACs, see delta_query.py); the JSON says which was used.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import machine, write_json  # noqa: E402
from delta_query import stand_in_lut  # noqa: E402
from hwprune.luts import Lut  # noqa: E402
from hwprune.profiler import scan_keys, trace_model  # noqa: E402
from hwprune.pruner import PruneConfig, Pruner  # noqa: E402
from hwprune.zoo import resolve_model  # noqa: E402


def _stats(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times),
            "stdev": statistics.stdev(times) if len(times) > 1 else 0.0, "n": len(times)}


def bench(name: str, args) -> dict:
    resolved = resolve_model(name)
    model = resolved.module
    trace = trace_model(model, args.input_size, resolved.in_channels)
    lut = Lut.load(args.lut) if args.lut else stand_in_lut(scan_keys(trace, args.group_size))
    t0 = time.perf_counter()
    p = Pruner(model, resolve_model(name).module, PruneConfig(target_ratio=0.5,
               group_size=args.group_size), args.input_size, resolved.in_channels, lut)
    setup = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    scores = [rng.random(d.channels) for d in p.dims]
    for _ in range(3):
        p.rank(scores)
    rank_ms = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        imp = p.rank(scores)
        int(np.nanargmin(imp))
        rank_ms.append((time.perf_counter() - t0) * 1e3)
    # Context: gate-score accumulation and one physical removal
    p.gates.install()
    x = torch.randn(1, resolved.in_channels, args.input_size, args.input_size)
    model.train()
    model(x).sum().backward()
    t0 = time.perf_counter()
    p.gates.accumulate()
    acc_ms = (time.perf_counter() - t0) * 1e3
    p.gates.remove()
    j = int(np.nanargmin(p.rank(scores)))
    t0 = time.perf_counter()
    p._remove(j, np.arange(args.group_size))
    remove_ms = (time.perf_counter() - t0) * 1e3
    med = statistics.median(rank_ms)
    return {"model": name, "input_size": args.input_size, "group_size": args.group_size,
            "lut": args.lut or "stand-in over the exact key space", "groups": len(p.dims),
            "setup_s": setup, "rank_ms": _stats(rank_ms), "accumulate_ms_once": acc_ms,
            "remove_one_group_ms_once": remove_ms, "target_ms": 200.0,
            "meets_target": med < 200.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="directory for prune_rank.json")
    ap.add_argument("--models", nargs="+", default=["resnet50"])
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--group-size", type=int, default=16)
    ap.add_argument("--lut", default=None, help="a real LUT covering the model (optional)")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = [bench(m, args) for m in args.models]
    path = write_json(args.out, "prune_rank.json", {"benchmark": "prune_rank",
                                                     "machine": machine("cpu"),
                                                     "results": results})
    for r in results:
        print(f"{r['model']}: {r['groups']} groups, one ranking step "
              f"{r['rank_ms']['median']:.1f} ms median (min {r['rank_ms']['min']:.1f}, max "
              f"{r['rank_ms']['max']:.1f}); gate accumulation {r['accumulate_ms_once']:.1f} ms; "
              f"one removal {r['remove_one_group_ms_once']:.0f} ms")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
