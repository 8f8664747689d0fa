"""The steps of benchmarks/gpu_check.py, each run in its own process (see its docstring).

Every step returns a dict with ``checks`` (name, value, target, ok) beside its figures,
written to WORK/STEP.json as it goes, so a step killed by its timeout still leaves what
it measured. ``smoke`` swaps in tiny sizes on the CPU; the code paths stay the same.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def check(name: str, value, target: str, ok: bool) -> dict:
    return {"name": name, "value": value, "target": target, "ok": bool(ok)}


class Step:
    def __init__(self, name: str, smoke: bool, work: Path, out: Path,
                 deadline: float | None = None) -> None:
        self.name, self.smoke, self.work, self.out = name, smoke, work, out
        self.device = "cpu" if smoke else "cuda"
        self.result: dict = {"checks": []}
        self.t_end = time.perf_counter() + (deadline or 1e9)

    def left(self) -> float:
        """Seconds until the parent kills this step."""
        return self.t_end - time.perf_counter()

    def save(self) -> None:
        # Atomic: the parent may kill this process at any moment and then reads the file.
        path = self.work / f"{self.name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=1, default=str))
        os.replace(tmp, path)

    def sh(self, cmd: list[str], timeout: float | None = None) -> int:
        print("$ " + " ".join(cmd), flush=True)
        return subprocess.run(cmd, cwd=ROOT, timeout=timeout).returncode

    def hw(self, *args: str) -> int:
        return self.sh([PY, "-m", "hwprune", *args])


# -- tests ---------------------------------------------------------------------------------
def step_tests(s: Step) -> None:
    # Smoke: one small test file with gpu-marked tests (skipped on a CPU: the JUnit counts
    # still come back), so the step's plumbing runs without collecting (importing) the whole
    # suite, or tests/zoo's ~90 parametrised torchvision cases, a second time in `make test`.
    where = "tests/zoo/test_models.py" if s.smoke else "tests"
    # Each test's verdict goes to the log as it happens (-v), so a step stopped at its
    # deadline still shows which tests passed; the JUnit file gives the totals.
    cmd = [PY, "-m", "pytest", "-v", "-m", "gpu", where, "-p", "no:cacheprovider",
           "-o", "addopts=-ra", "--junitxml", str(s.work / "tests.xml")]
    try:
        rc = subprocess.run(cmd, cwd=ROOT, timeout=max(10.0, s.left() - 10)).returncode
    except subprocess.TimeoutExpired:
        rc = 124
    counts, failures = _junit_counts(s.work / "tests.xml")
    failed = counts.get("failures", 0) + counts.get("errors", 0)
    s.result.update(pytest_rc=rc, counts=counts, failures=failures[:20])
    passed = counts.get("tests", 0) - failed - counts.get("skipped", 0)
    s.result["checks"] += [check("failed", failed, "0", failed == 0 and rc in (0, 5)),
                           check("passed", passed, "> 0 on a GPU", s.smoke or passed > 0)]
    if rc == 124:
        s.result["error"] = "pytest ran past the step's deadline (verdicts so far in the log)"


def _junit_counts(xml: Path) -> tuple[dict, list[str]]:
    """Totals and failed test ids from pytest's JUnit XML ({} when pytest did not finish)."""
    if not xml.is_file():
        return {}, []
    import xml.etree.ElementTree as ET

    root = ET.parse(xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failures = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                if c.find("failure") is not None or c.find("error") is not None]
    return counts, failures


# -- synth ---------------------------------------------------------------------------------
def _smooth_bn_stats(model: nn.Module, size: int, channels: int, device: str) -> None:
    """Give a randomly initialised net the BN statistics of smooth random images, so that
    synthesis starting from white noise has statistics to match (no weights can be
    downloaded on the GPU machine)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(4):
            low = torch.randn(16, channels, max(2, size // 16), max(2, size // 16), generator=gen)
            model(F.interpolate(low, size=(size, size), mode="bilinear").to(device))
    model.eval()


def step_synth(s: Step) -> None:
    from hwprune.synth import PRESETS, synthesize_batch
    from hwprune.zoo import resolve_model

    speed = s.work / "synth_speed"
    extra = ["--model", "demo", "--batch", "4", "--iterations", "2", "--repeats", "1",
             "--threads", "1"] if s.smoke else ["--iterations", "20", "--repeats", "2"]
    rc = s.sh([PY, "benchmarks/synth_speed.py", "--out", str(speed), "--device", s.device]
              + extra)
    if rc == 0:
        sp = json.loads((speed / "synth_speed.json").read_text())
        s.result["speed"] = {k: sp[k] for k in ("model", "batch", "input_size", "iterations",
                                                "images_per_second", "speedup",
                                                "hwprune_options")}
        s.result["checks"].append(check("hwprune / reference images/s", sp["speedup"], ">= 2",
                                        sp["speedup"] >= 2))
    else:
        s.result["checks"].append(check("synth_speed.py ran", rc, "rc 0", False))
    s.save()
    # fp16 convolutions are emulated on most CPUs (~5x slower than fp32): a narrow net there.
    name, batch, iters = ("demo", 8, 25) if s.smoke else ("resnet50", 64, 150)
    resolved = resolve_model(name, **({"width": 8} if s.smoke else {}))
    model = resolved.module.to(s.device)
    size, ch = resolved.input_size, resolved.in_channels
    _smooth_bn_stats(model, size, ch, s.device)
    if not s.smoke:  # as `synthesize` does with channels_last: NHWC weights for NHWC images
        model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    base = PRESETS["demo" if s.smoke else "kt"].with_(iterations=iters, log_every=1)
    targets = torch.arange(batch) % 10
    s.result["bn_fall"] = {}
    for amp in ("none", "fp16", "bf16"):
        t0 = time.perf_counter()
        res = synthesize_batch(model, targets, base.with_(amp=amp, channels_last=not s.smoke),
                               size, ch, torch.Generator().manual_seed(0))
        bn = res.history["bn"]
        fall = bn[0] / max(min(bn[-5:]), 1e-30)
        s.result["bn_fall"][amp] = {"first": bn[0], "last": bn[-1], "fall": fall,
                                    "seconds": time.perf_counter() - t0}
        s.result["checks"].append(check(f"BN loss fall, amp {amp}", fall, ">= 10", fall >= 10))
        s.save()


# -- profile + validate --------------------------------------------------------------------
def regime(smoke: bool) -> dict:
    if smoke:
        return {"model": "demo", "step": 32, "args": ["--device", "cpu", "--threads", "1"],
                "max_reps": "10", "calibrate": "4", "samples": "5", "rounds": "1",
                "tag": "demo-cpu-b1-s32"}
    return {"model": "resnet50", "step": 128,
            "args": ["--device", "cuda", "--batch", "256", "--dtype", "fp16",
                     "--channels-last", "--mode", "graph"],
            "max_reps": "200", "calibrate": "8", "samples": "16", "rounds": "3",
            "tag": "resnet50-cuda-fp16-b256-graph-cl-s128"}


def step_profile(s: Step) -> None:
    from hwprune.luts import read_meta
    from hwprune.luts.fit import describe_holdout
    from hwprune.luts.lookup import DEFAULT_STAT

    r = regime(s.smoke)
    lut = s.work / f"{r['tag']}.parquet"
    t0 = time.perf_counter()
    rc = s.hw("profile", r["model"], "--step", str(r["step"]), "--out", str(lut), "--max-reps",
              r["max_reps"], "--calibrate", r["calibrate"], "--time-budget",
              "30" if s.smoke else "110", "-q", *r["args"])
    s.result.update(profile_rc=rc, profile_seconds=time.perf_counter() - t0, lut=lut.name,
                    step=r["step"])
    meta = read_meta(lut) if lut.is_file() else {}
    fit = (meta.get("calibration") or {}).get("fits", {}).get(DEFAULT_STAT)
    s.result["calibration"] = fit
    # Stored, and applied unless it predicted held-out variants worse than the plain sum.
    s.result["checks"].append(check("calibration", describe_holdout(fit) if fit else "none",
                                    "stored", bool(fit)))
    if lut.is_file():
        shutil.copy(lut, s.out / lut.name)
    s.save()
    vdir = s.work / "validate"
    t0 = time.perf_counter()
    rc = s.hw("lut", "validate", r["model"], "--lut", str(lut), "--samples", r["samples"],
              "--rounds", r["rounds"], "--max-reps", r["max_reps"], "--out", str(vdir), "-q")
    s.result.update(validate_rc=rc, validate_seconds=time.perf_counter() - t0)
    if (vdir / "report.json").is_file():
        rep = json.loads((vdir / "report.json").read_text())
        s.result["validation"] = {k: rep.get(k) for k in (
            "estimator", "r2_identity", "r2_linear", "mape", "max_abs_err_ms", "spearman",
            "n_samples", "measured_range_ms", "operator_sum", "median_round_spread")}
        s.result["checks"] += [check("R² identity", rep["r2_identity"], ">= 0.98",
                                     rep["r2_identity"] >= 0.98),
                               check("MAPE", rep["mape"], "<= 0.05", rep["mape"] <= 0.05)]
    else:
        s.result["checks"].append(check("lut validate ran", rc, "rc 0", False))


# -- batch-1 floor -------------------------------------------------------------------------
def step_floor(s: Step) -> None:
    from hwprune.luts import Lut, estimate_trace, variant_keys
    from hwprune.luts.variants import build_variant, measure_interleaved, plan_variants
    from hwprune.profiler import ProfileConfig, TimingConfig, profile_model
    from hwprune.profiler.coupling import dimensions
    from hwprune.profiler.keyspace import trace_model
    from hwprune.profiler.timing import model_input, prepare_model
    from hwprune.zoo import resolve_model

    name, step = ("demo", 32) if s.smoke else ("resnet50", 128)
    tc = TimingConfig(device=s.device, dtype="fp32", batch=1, max_reps=10 if s.smoke else 300,
                      mode="eager" if s.smoke else "graph", threads=1 if s.smoke else None)
    lut_path = s.work / f"{name}-{s.device}-fp32-b1-{tc.mode}-floor.parquet"
    t0 = time.perf_counter()
    # Only the keys of the original and of the every-layer-at-one-group variant.
    res = profile_model(ProfileConfig(name, lut_path, step, timing=tc, progress=False,
                                      keys=variant_keys(name, step, 2)))
    lut = Lut.load(lut_path)
    s.result.update(model=name, step=step, keys=res.keys_total, weights=lut.meta.get("weights"),
                    profile_seconds=time.perf_counter() - t0)
    resolved = resolve_model(name)
    size = resolved.input_size
    trace = trace_model(resolved.module, size, resolved.in_channels)
    dims = dimensions(trace.layers, trace.frozen_dims)
    example = torch.randn(1, resolved.in_channels, size, size)
    nets, est = {}, {}
    for plan in plan_variants(dims, step, 2):
        net = build_variant(resolved.module, trace, dims, plan.channels, example)
        est[plan.kind] = estimate_trace(trace_model(net, size, resolved.in_channels), lut).total_ms
        nets[plan.kind] = prepare_model(net, tc.validate())
    samples, _ = measure_interleaved(nets, model_input(tc, resolved.in_channels, size), tc,
                                     rounds=3, progress=False)
    meas = {k: sorted(v["median_ms"])[1] for k, v in samples.items()}
    s.result.update(lut_ms=est, measured_ms=meas,
                    lut_speedup_bound=est["original"] / est["extreme-min"],
                    measured_speedup_bound=meas["original"] / meas["extreme-min"])
    err = est["extreme-min"] / meas["extreme-min"] - 1
    s.result["checks"].append(check("LUT floor vs measured floor", err, "within ±15%",
                                    abs(err) <= 0.15))


# -- the digits job on the device ----------------------------------------------------------
def step_digits(s: Step) -> None:
    from hwprune.luts import CalibrateConfig, Lut, calibrate, estimate
    from hwprune.luts.lookup import DEFAULT_STAT
    from hwprune.profiler import ProfileConfig, TimingConfig, profile_model
    from hwprune.pruner import PruneConfig, TargetError
    from hwprune.pruner.finetune import FineTuneConfig
    from hwprune.pruner.run import PruneJob, run_job
    from hwprune.synth import PRESETS, SynthConfig, synthesize
    from hwprune.zoo import build_demo, save_checkpoint
    from hwprune.zoo.digits import accuracy, load_digits, train_classifier

    q = s.smoke
    data = load_digits()
    t0 = time.perf_counter()
    width, budget = (32, 0.7) if q else (64, 0.5)
    net = build_demo(width=width).to(s.device)
    n = 256 if q else len(data.x_train)  # smoke: the plumbing, not a good teacher
    net = train_classifier(net, data.x_train[:n].to(s.device), data.y_train[:n].to(s.device),
                           epochs=1 if q else 6).cpu()
    ckpt = save_checkpoint(net, s.work / "digits-teacher.pt", "demo", {"width": width})
    s.result["teacher"] = {"accuracy": accuracy(net, data.x_test, data.y_test),
                           "seconds": time.perf_counter() - t0}
    s.save()
    step = 8 if q else 16
    tc = TimingConfig(threads=1, max_reps=10) if q else TimingConfig(
        device="cuda", dtype="fp16", batch=256, channels_last=True, mode="graph", max_reps=200)
    lut = s.work / "digits-lut.parquet"
    t0 = time.perf_counter()
    profile_model(ProfileConfig(str(ckpt), lut, step, timing=tc, progress=False))
    cal = calibrate(CalibrateConfig(str(ckpt), lut, 4, rounds=1 if q else 2,
                                    max_reps=int(tc.max_reps),
                                    progress=False))
    s.result["lut"] = {"seconds": time.perf_counter() - t0,
                       "calibration": cal["fits"][DEFAULT_STAT],
                       "teacher_estimated_ms": estimate(net, Lut.load(lut), 32, 1).total_ms}
    s.save()
    t0 = time.perf_counter()
    images = s.work / "digits-synth"
    summary = synthesize(SynthConfig(str(ckpt), images, 16 if q else 256, 16 if q else 128,
                                     PRESETS["demo"].with_(iterations=4 if q else 200,
                                                           amp="none" if q else "fp16"),
                                     device=s.device, progress=False))
    s.result["synth"] = {"seconds": time.perf_counter() - t0,
                         "teacher_top1": summary.get("teacher_top1")}
    s.save()
    s.result["rows"] = []
    for crit, eta in (("taylor-latency", 1.0), ("taylor", 0.0)):
        t0 = time.perf_counter()
        job = PruneJob(
            str(ckpt), s.work / f"digits-{crit}", str(images), [str(lut)],
            PruneConfig(criterion=crit, eta=eta, group_size=step, groups_per_step=4,
                        interval=1 if q else 10, batch_size=16 if q else 64, shift=2),
            FineTuneConfig(epochs=1 if q else 10, milestones=(7,), shift=2),
            val="digits-test", measure_rounds=2 if q else 3,
            measure_max_reps=int(tc.max_reps), device=s.device, progress=False,
            measured_ratio=budget, measured_retries=1 if q else 3)
        try:
            rep = run_job(job)
        except TargetError as exc:  # the LUT says the budget is out of reach: a finding
            s.result["rows"].append({"criterion": crit, "error": str(exc)})
            s.result["checks"].append(check(f"{crit} measured ratio", str(exc)[:80],
                                            f"<= {budget}", False))
            continue
        m, loop = rep["measured"], rep["measured_target"]["loop"]
        s.result["rows"].append({"criterion": crit, "measured_ratio": m["ratio"],
                                 "spread": m["spread"],
                                 "accuracy": rep["accuracy"]["pruned"],
                                 "teacher_accuracy": rep["accuracy"]["teacher"],
                                 "filters_kept": rep["filters_kept"],
                                 "loop_stopped": loop[-1].get("stopped"),
                                 "verdict": m.get("verdict"), "settled": m.get("settled"),
                                 "ratio_interval": [m.get("ratio_low"), m.get("ratio_high")],
                                 "seconds": time.perf_counter() - t0})
        s.result["checks"].append(check(f"{crit} measured ratio", s.result["rows"][-1]
                                        ["measured_ratio"], f"<= {budget} (fresh: met)",
                                        m.get("settled") == "met"))
        s.save()


# -- prune resnet50 to measured ratios -----------------------------------------------------
def step_prune(s: Step) -> None:
    r = regime(s.smoke)
    lut = s.work / f"{r['tag']}.parquet"
    if not lut.is_file():
        raise RuntimeError(f"needs the profile step's table {lut.name}, which is missing")
    out = s.work / "prune"
    args = ["--out", str(out), "--model", r["model"], "--lut", str(lut), "--measured",
            "--targets", "0.7", "0.5", "--device", s.device, "--rounds", "3",
            "--max-reps", r["max_reps"]]
    args += ["--images", "32", "--batch-size", "8", "--interval", "1", "--threads", "1",
             "--retries", "1"] if s.smoke else ["--images", "256", "--batch-size", "64",
                                                "--interval", "2", "--groups-per-step", "2"]
    rc = s.sh([PY, "benchmarks/prune_gpu.py", *args])
    rep = json.loads((out / "prune_gpu.json").read_text()) if (out / "prune_gpu.json").is_file() \
        else {}
    s.result.update(rc=rc, rows=rep.get("rows", []), weights="random",
                    unpruned_estimated_ms=rep.get("unpruned_estimated_ms"))
    for row in s.result["rows"]:
        ok = row.get("settled") == "met"  # the fresh measurement after the loop
        s.result["checks"].append(check(f"measured ratio, target {row['target_fraction']}",
                                        row.get("measured_fraction", row.get("error")),
                                        f"<= {row['target_fraction']} (fresh: met)", ok))
    if rc != 0:
        s.result["error"] = f"prune_gpu.py exited {rc}"


def run_step(name: str, smoke: bool, work: Path, out: Path, deadline: float | None = None) -> int:
    s = Step(name, smoke, work, out, deadline)
    if smoke:
        # One thread, as in the rest of `make test`: on a shared 2-core machine two OpenMP
        # threads spin against the other load (this step's child processes included).
        torch.set_num_threads(1)
    try:
        globals()[f"step_{name}"](s)
    except Exception as exc:  # recorded for the summary; the next step still runs
        traceback.print_exc()
        s.result["error"] = f"{type(exc).__name__}: {exc}"
        s.save()
        return 1
    s.save()
    return 0
