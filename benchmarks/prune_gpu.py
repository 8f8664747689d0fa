"""Hardware-aware pruning of a torchvision model to latency targets, measured on this device.

1. Profile the model's LUT here, in the deployment regime (default: CUDA, batch 256,
   fp16, channels_last, graph mode), on a grid of ``--step`` channels, which is also the
   pruning group size. resnet50 at step 64 is 1,747 keys, about two minutes on an H100
   at the 15 keys/s measured there; ``--lut`` reuses a table instead.
2. The teacher has random weights and the "data" are random Gaussian images: nothing
   can be downloaded, and latency does not depend on the weights' values. The Taylor
   term therefore ranks on noise, so accuracy means nothing here and is not reported;
   ``--interval`` is short for the same reason (it only matters for accuracy).
3. For each target (default 70%, 50%, 35% of the unpruned model's LUT estimate; with
   ``--measured``, of its latency measured in the LUT's mode, the fraction as a LUT
   target being only the first guess) the pruner (taylor-latency, no fine-tuning) runs on
   ``--device``; teacher and pruned model are then measured end to end in the LUT's mode
   in interleaved rounds.

Writes OUT/prune_gpu.json: the machine, the LUT (keys, seconds), and ``rows`` with
target_ms, estimated_ms (LUT), measured_ms, teacher_measured_ms, measured ratio,
filters kept and seconds per target (or the LUT's refusal of an unreachable target).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from _common import machine, write_json  # noqa: E402
from hwprune.luts import Lut, estimate  # noqa: E402
from hwprune.profiler import ProfileConfig, TimingConfig, profile_model  # noqa: E402
from hwprune.pruner import PruneConfig, TargetError  # noqa: E402
from hwprune.pruner.finetune import FineTuneConfig  # noqa: E402
from hwprune.pruner.run import JobError, PruneJob, run_job  # noqa: E402
from hwprune.zoo import resolve_model, save_checkpoint  # noqa: E402


def _lut(args) -> tuple[Path, dict]:
    if args.lut:
        return Path(args.lut), {"reused": args.lut}
    out = args.out / f"{args.model}-{args.device}-{args.dtype}-b{args.batch}-s{args.step}.parquet"
    timing = TimingConfig(device=args.device, dtype=args.dtype, batch=args.batch,
                          channels_last=args.channels_last, mode=args.mode,
                          threads=args.threads, max_reps=args.max_reps)
    r = profile_model(ProfileConfig(args.model, out, args.step, timing=timing,
                                    progress=False, max_seconds=args.profile_budget))
    info = {"keys": r.keys_total, "measured": r.keys_measured, "left": r.keys_left,
            "seconds": r.wall_seconds, "keys_per_second": r.keys_per_second}
    print(f"LUT {out.name}: {info}", flush=True)
    if r.keys_left:
        raise SystemExit(f"profiling stopped with {r.keys_left} keys left: rerun to continue")
    return out, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--lut", default=None, help="reuse this LUT instead of profiling one")
    ap.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    ap.add_argument("--mode", default="graph", choices=["eager", "graph"])
    ap.add_argument("--batch", type=int, default=256, help="LUT and measurement batch")
    ap.add_argument("--dtype", default="fp16", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--step", type=int, default=64, help="LUT grid step = pruning group size")
    ap.add_argument("--max-reps", type=int, default=200)
    ap.add_argument("--profile-budget", type=float, default=400.0, help="seconds")
    ap.add_argument("--targets", type=float, nargs="+", default=[0.70, 0.50, 0.35],
                    help="fractions of the unpruned model's LUT estimate")
    ap.add_argument("--measured", action="store_true",
                    help="targets are fractions of the measured latency (pruner's measured loop)")
    ap.add_argument("--retries", type=int, default=3, help="measured-loop corrections")
    ap.add_argument("--groups-per-step", type=int, default=2, help="groups removed per step")
    ap.add_argument("--images", type=int, default=256, help="random images to rank on")
    ap.add_argument("--batch-size", type=int, default=64, help="pruning minibatch")
    ap.add_argument("--interval", type=int, default=3, help="minibatches between removals")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lut_path, lut_info = _lut(args)
    lut = Lut.load([lut_path])
    steps = {int(src["step"]) for src in lut.meta.get("sources", [])}
    step = steps.pop() if len(steps) == 1 else args.step  # a reused table's own grid
    torch.manual_seed(args.seed)
    resolved = resolve_model(args.model)
    teacher = save_checkpoint(resolved.module, args.out / "teacher.pt", resolved.name)
    size = resolved.input_size
    images = args.out / "images.pt"
    torch.save({"images": torch.randn(args.images, resolved.in_channels, size, size)}, images)
    full_ms = estimate(resolved.module, lut, size, resolved.in_channels).total_ms
    result = {"benchmark": "prune_gpu", "machine": machine(args.device), "model": args.model,
              "weights": "random", "images": "random Gaussian", "lut": lut_path.name,
              "lut_profile": lut_info, "lut_meta": {k: lut.meta.get(k) for k in (
                  "device_name", "dtype", "batch", "memory_format", "timing_mode")},
              "unpruned_estimated_ms": full_ms, "args": {k: str(v) for k, v in vars(args).items()},
              "rows": []}
    for frac in args.targets:
        target = frac * full_ms
        row = {"target_fraction": frac, "target_ms": target, "criterion": "taylor-latency",
               "target_kind": "measured ratio" if args.measured else "LUT fraction"}
        t1 = time.perf_counter()
        job = PruneJob(teacher=str(teacher), out=args.out / f"pruned-{round(100 * frac)}",
                       data=str(images), luts=[str(lut_path)],
                       prune=PruneConfig(target_latency_ms=None if args.measured else target,
                                         group_size=step, groups_per_step=args.groups_per_step,
                                         interval=args.interval, batch_size=args.batch_size,
                                         seed=args.seed),
                       finetune=FineTuneConfig(epochs=0), measure_rounds=args.rounds,
                       measure_max_reps=args.max_reps, device=args.device, progress=False,
                       measured_ratio=frac if args.measured else None,
                       measured_retries=args.retries)
        try:
            rep = run_job(job)
        except (TargetError, JobError) as exc:  # unreachable, or --out holds a finished run
            row["error"] = str(exc)
        else:
            m = rep["measured"]
            row.update(estimated_ms=rep["after"]["estimated_ms"], measured_ms=m["pruned_ms"],
                       teacher_measured_ms=m["teacher_ms"], measured_spread=m["pruned_spread"],
                       measured_fraction=m["ratio"],
                       estimate_error=rep["after"]["estimated_ms"] / m["pruned_ms"] - 1,
                       filters_kept=rep["filters_kept"], steps=len(rep["trajectory"]),
                       verdict=m.get("verdict"), settled=m.get("settled"),
                       settled_by=m.get("settled_by"))
            if "measured_target" in rep:
                loop = rep["measured_target"]["loop"]
                row.update(loop_stopped=loop[-1].get("stopped"), corrections=len(loop) - 1)
        row["seconds"] = time.perf_counter() - t1
        print(row, flush=True)
        result["rows"].append(row)
        write_json(args.out, "prune_gpu.json", result)
    images.unlink(missing_ok=True)  # hundreds of MB of noise
    result["seconds"] = time.perf_counter() - t0
    write_json(args.out, "prune_gpu.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
