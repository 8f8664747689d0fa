"""One prepared run of every CUDA path hwprune has, for the few minutes a GPU is lent.

A GPU is available to this project only now and then, for about 15 minutes, so every
CUDA path is exercised by this one script, sized to finish within ``--budget``
seconds (default 540, i.e. 9 minutes on one H200). Each step runs as its own process
under its own timeout; a step that fails, crashes or times out is recorded and the
next one runs. Steps, in order:

  tests    the gpu-marked tests (pytest -m gpu)
  synth    DeepInversion on resnet50 at 224 px, batch 64: a plain fp32 reference loop
           vs hwprune's fastest settings, images/s as a ratio in the same run (target
           >= 2x, benchmarks/synth_speed.py); the BN-statistics loss must fall >= 10x in
           fp32, fp16 and bf16 alike (random weights, BN statistics of smooth images)
  profile  resnet50 LUT at batch 256, fp16, channels_last, graph mode, step 128 (508
           keys: the grid that completes in the time given), calibrated, then
           `lut validate` on 16 variants (target R² identity >= 0.98, MAPE <= 5%)
  floor    batch-1 resnet50 in graph mode (fp32, cold weights where they exceed the
           L2): LUT estimate and measurement of the original and of every layer at one
           group, i.e. the largest speed-up pruning can give at batch 1
  digits   the embedded digits job on CUDA: teacher, LUT (batch 256 fp16 graph),
           DeepInversion (fp16, loss-scaled), hardware-aware vs latency-blind pruning to
           50% of the measured teacher latency, accuracy on the real held-out digits
  prune    resnet50 (random weights: latency does not depend on them) pruned to measured
           ratios 0.7 and 0.5 on the profile step's table (benchmarks/prune_gpu.py)

Writes to OUT: gpu_check.json (device, driver, torch, CUDA, cuDNN versions, every step's
figures and checks), gpu_check.md (the summary to commit under benchmarks/results/),
gpu_check.log (every step's output) and the LUTs it profiled. Scratch files go to
``--work`` (default: a temporary directory), so OUT stays within what the device tool
brings back (8 files).

What the GPU machine lacks (torch-pruning; cudnn-frontend for ``--algos all``) is
installed from wheels in ``--wheels`` (default .whl, git-ignored; `make gpu-wheels`
downloads them here). On the device machine::

    python3 benchmarks/gpu_check.py --out $OUT          # carry: [".whl"]

``--smoke`` runs the same steps on the CPU with tiny sizes; it is part of `make test`,
so the script is known to run end to end before a GPU is ever lent. Its figures say
nothing about any target: a smoke step is "ok" or "missed" once it ran, and only an
error or a timeout fails it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

# Seconds set aside for each step on the GPU (they sum to the default budget) and on the
# CPU in smoke mode (generous: a busy 2-core VM can be twice as slow as a quiet one). A
# step may use what earlier steps left unused, never what later steps are owed.
STEPS = {"tests": (140, 150), "synth": (55, 150), "profile": (165, 200), "floor": (35, 120),
         "digits": (65, 240), "prune": (80, 200)}


def _install_wheels(wheels: Path, work: Path, device: str) -> dict:
    """pip-install the wheels of what this machine cannot import, into ``work/site``."""
    wanted = {"torch_pruning": "torch_pruning-*.whl"}
    if device == "cuda":
        wanted["cudnn"] = "nvidia_cudnn_frontend-*.whl"
    missing = [m for m in wanted if importlib.util.find_spec(m) is None]
    files = [str(f) for m in missing for f in sorted(wheels.glob(wanted[m]))]
    info = {"missing": missing, "wheels": [Path(f).name for f in files], "site": None}
    if files:
        site = work / "site"
        rc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                             "--no-deps", "--no-compile", "--target", str(site), *files]).returncode
        info.update(site=str(site), pip_rc=rc)
    return info


def _versions(device: str, site: str | None) -> dict:
    code = ("import json, torch, importlib.metadata as md\n"
            "out = {'torch': torch.__version__, 'cuda': torch.version.cuda,\n"
            "       'cudnn': torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}\n"
            "for p in ('torch-pruning', 'nvidia-cudnn-frontend', 'torchvision', 'onnxruntime'):\n"
            "    try: out[p] = md.version(p)\n"
            "    except md.PackageNotFoundError: out[p] = None\n"
            "print(json.dumps(out))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env(site))
    versions = json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-500:]}
    from _common import machine

    versions["machine"] = machine(device)
    return versions


def _env(site: str | None) -> dict:
    paths = [p for p in (site, str(ROOT), os.environ.get("PYTHONPATH")) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


def _run_step(name: str, args, site: str | None, seconds: float, log) -> dict:
    out_json = args.work / f"{name}.json"
    out_json.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--out", str(args.out),
           "--work", str(args.work)] + (["--smoke"] if args.smoke else [])
    log.write(f"\n===== {name} (timeout {seconds:.0f} s) =====\n")
    log.flush()
    t0 = time.perf_counter()
    # Its own process group: on a timeout everything the step started (pytest, `hwprune
    # profile`, a benchmark script) is killed too, so none of it keeps the GPU busy while
    # the next step times.
    env = _env(site)
    if args.smoke:
        # One thread in the step and everything it starts (pytest, `hwprune`, the benchmark
        # scripts), as in the rest of `make test`: on a shared 2-core CPU two OpenMP threads
        # per process spin against the other load (synth + digits: 116 s with two, 27 s with one)
        env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.Popen(cmd + ["--deadline", f"{seconds:.0f}"], stdout=log,
                            stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                            start_new_session=True)
    try:
        rc = proc.wait(timeout=max(1.0, seconds))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc = 124
    try:
        res = json.loads(out_json.read_text()) if out_json.is_file() else {}
    except ValueError:  # cannot happen with atomic saves; never lose the later steps to it
        res = {"error": f"{out_json.name} unreadable"}
    res["seconds"] = time.perf_counter() - t0
    res["rc"] = rc
    if rc == 124:
        res["status"] = "timeout"
    elif rc != 0 or "error" in res:
        res["status"] = "error"
    else:
        res["status"] = "ok" if all(c["ok"] for c in res.get("checks", [])) else "missed"
    return res


def _summary(result: dict) -> str:
    v = result["versions"]
    m = v.get("machine", {})
    lines = [f"# gpu_check{' --smoke' if result['smoke'] else ''}: "
             f"{m.get('device_name')} ({result['device']})", "",
             f"- date {m.get('date')}, driver {m.get('driver')}, torch {v.get('torch')}, "
             f"CUDA {v.get('cuda')}, cuDNN {v.get('cudnn')}, torch-pruning "
             f"{v.get('torch-pruning')}, cudnn-frontend {v.get('nvidia-cudnn-frontend')}",
             f"- {result['seconds']:.0f} s in all (budget {result['budget']:.0f} s)", "",
             "| step | status | seconds | checks |", "|---|---|---|---|"]
    for name, r in result["steps"].items():
        checks = "; ".join(f"{c['name']} {_fmt(c['value'])} (target {c['target']})"
                           f"{'' if c['ok'] else ' MISSED'}" for c in r.get("checks", []))
        if "error" in r:
            checks = (checks + "; " if checks else "") + f"error: {r['error'][:300]}"
        lines.append(f"| {name} | {r['status']} | {r.get('seconds', 0):.0f} | {checks} |")
    if result["smoke"]:
        lines += ["", "Smoke mode: tiny sizes on the CPU; the figures test the plumbing, "
                  "not any target."]
    return "\n".join(lines) + "\n"


def _fmt(x) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--out", type=Path, required=True, help="directory for the results")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (make test)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for all steps [default: 540 on a GPU, 1200 in smoke mode]")
    ap.add_argument("--only", nargs="+", choices=list(STEPS), default=None,
                    help="run these steps only (prune needs profile's table)")
    ap.add_argument("--wheels", type=Path, default=ROOT / ".whl",
                    help="wheels of what the GPU machine lacks [default: .whl]")
    ap.add_argument("--work", type=Path, default=None, help="scratch directory [default: temp]")
    ap.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)  # one child step
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step:
        from _gpu_steps import run_step

        return run_step(args.step, args.smoke, args.work, args.out, args.deadline)
    import torch

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device here; use --smoke on a CPU", file=sys.stderr)
        return 2
    budget = args.budget or (1200.0 if args.smoke else 540.0)
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="gpu_check-")
        args.work = Path(tmp.name)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    wheels = _install_wheels(args.wheels, args.work, device)
    result = {"benchmark": "gpu_check", "smoke": args.smoke, "device": device,
              "budget": budget, "wheels": wheels,
              "versions": _versions(device, wheels["site"]), "steps": {}}
    t_steps = time.perf_counter()  # the budget is for the steps; set-up is reported apart
    result["setup_seconds"] = t_steps - t0
    names = [n for n in STEPS if not args.only or n in args.only]
    scale = min(1.0, budget / sum(STEPS[n][args.smoke] for n in names))  # a shorter --budget
    with open(args.out / "gpu_check.log", "a") as log:
        for i, name in enumerate(names):
            left = budget - (time.perf_counter() - t_steps)
            seconds = left - scale * sum(STEPS[n][args.smoke] for n in names[i + 1:])
            if seconds < 5:
                result["steps"][name] = {"status": "skipped", "error": "no time left"}
                continue
            result["steps"][name] = _run_step(name, args, wheels["site"], seconds, log)
            print(f"{name}: {result['steps'][name]['status']} "
                  f"({result['steps'][name]['seconds']:.0f} s)", flush=True)
            result["seconds"] = time.perf_counter() - t0
            _write(args.out, result)
    result["seconds"] = time.perf_counter() - t0
    _write(args.out, result)
    print(_summary(result))
    if tmp is not None:
        tmp.cleanup()
    failed = [n for n, r in result["steps"].items() if r["status"] in ("error", "timeout")]
    return 1 if failed else 0


def _write(out: Path, result: dict) -> None:
    from _common import write_json
    from hwprune.profiler.table import atomic_write_bytes

    write_json(out, "gpu_check.json", result)
    atomic_write_bytes(out / "gpu_check.md", lambda f: f.write(_summary(result).encode()))


if __name__ == "__main__":
    sys.exit(main())
