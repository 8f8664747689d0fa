"""Rounds or repetitions: what a measured-budget verdict costs, and how narrow it is, with
few long rounds against more short ones (issue 30's test time; the prune job's defaults).

A pruned network is measured against its teacher in interleaved rounds
(``pruner.measure.measure_pair``); each round's median is one sample of the ratio, and the
verdict's interval is a sign-test interval over the rounds (``luts.verdict``). On a shared
machine the rounds differ far more than a round's median is uncertain, so the interval
should depend on the number of rounds, not on the calls in each. This measures the same
pair of networks alternately with each setting, several times, and reports per setting the
seconds per measurement, the ratio (median and range over the repeats) and the interval's
width. Settings are ROUNDSxMAX_REPS. Every run re-measures; results go to
OUT/measure_rounds.json with the machine's metadata.

    python benchmarks/measure_rounds.py --out DIR
    python benchmarks/measure_rounds.py --out DIR --settings 5x1000 8x100 8x30 --repeats 4
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, parser, write_json  # noqa: E402
from hwprune.luts import Lut  # noqa: E402
from hwprune.profiler import ProfileConfig, TimingConfig, profile_model  # noqa: E402
from hwprune.pruner.measure import measure_pair  # noqa: E402
from hwprune.zoo import resolve_model  # noqa: E402
from hwprune.zoo.models import shrink_to  # noqa: E402

# teacher, its builder arguments, the input size
PAIRS = {"demo": ({"width": 16}, 32), "resnet18": ({"num_classes": 10}, 64)}
SETTINGS = ["5x1000", "8x100"]


def _pair(name: str):
    """The teacher, and a student whose blocks' inner convolutions keep 3/4 of their filters
    (cut with Torch-Pruning's dependency graph, as hwprune's pruner cuts)."""
    kwargs, size = PAIRS[name]
    torch.manual_seed(0)
    resolved = resolve_model(name, **kwargs)
    teacher = resolved.module.eval()
    inner = {n: int(0.75 * m.out_channels) for n, m in teacher.named_modules()
             if isinstance(m, torch.nn.Conv2d) and ".conv1" in n}
    if not inner:
        raise SystemExit(f"{name}: no inner convolutions (BLOCK.conv1) to narrow")
    example = torch.zeros(1, resolved.in_channels, size, size)
    student = shrink_to(copy.deepcopy(teacher), inner, example).eval()
    return teacher, student, size, resolved.in_channels


def measure_setting(teacher, student, lut, size, in_ch, setting: str) -> dict:
    rounds, reps = map(int, setting.split("x"))
    t0 = time.perf_counter()
    m = measure_pair(teacher, student, lut, size, in_ch, rounds, reps)
    return {"seconds": time.perf_counter() - t0, "ratio": m["ratio"],
            "interval": [m["ratio_low"], m["ratio_high"]],
            "width": m["ratio_high"] - m["ratio_low"], "spread": m["spread"]}


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    ap.add_argument("--settings", nargs="+", default=SETTINGS, metavar="ROUNDSxREPS")
    ap.add_argument("--repeats", type=int, default=6)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    result = {"machine": machine("cpu"), "threads": 1, "repeats": args.repeats, "pairs": {}}
    for name in args.pairs:
        teacher, student, size, in_ch = _pair(name)
        with tempfile.TemporaryDirectory() as tmp:  # only the table's timing mode is used
            path = Path(tmp) / "t.parquet"
            profile_model(ProfileConfig(name, path, step=64, input_size=size, progress=False,
                                        timing=TimingConfig(max_reps=5, threads=1)))
            lut = Lut.load(path)
        runs = {s: [] for s in args.settings}
        for _ in range(args.repeats):  # settings alternate, so drift hits each alike
            for s in args.settings:
                runs[s].append(measure_setting(teacher, student, lut, size, in_ch, s))
        summary = {}
        for s, rs in runs.items():
            sec, ratio, width = (np.array([r[k] for r in rs]) for k in ("seconds", "ratio", "width"))
            summary[s] = {"seconds_median": float(np.median(sec)),
                          "seconds_range": [float(sec.min()), float(sec.max())],
                          "ratio_median": float(np.median(ratio)),
                          "ratio_range": [float(ratio.min()), float(ratio.max())],
                          "interval_width_median": float(np.median(width)), "runs": rs}
            print(f"{name} @ {size} px, {s}: {np.median(sec):.2f} s per measurement "
                  f"[{sec.min():.2f}-{sec.max():.2f}], ratio {np.median(ratio):.3f} "
                  f"[{ratio.min():.3f}-{ratio.max():.3f}], interval width "
                  f"{np.median(width):.3f}", flush=True)
        result["pairs"][name] = {"input_size": size, "settings": summary}
        write_json(args.out, "measure_rounds.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
