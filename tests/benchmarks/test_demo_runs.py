"""``benchmarks/demo_runs.py``: its summary over seeds (a real quick run is slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import only_when_asked

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "demo_runs.py"
sys.path.insert(0, str(BENCH.parent))

from demo_runs import format_summary, summarize  # noqa: E402


def _run(seed, total, acc, settled, r2):
    rows = [{"budget": 0.5, "criterion": c, "measured_ratio": 0.45, "accuracy": acc,
             "verdict": "uncertain", "settled": settled, "error": None}
            for c in ("taylor-latency", "taylor")]
    return {"seed": seed, "rc": 0, "install_s": 60.0, "demo_s": total - 60.0,
            "total_s": total, "teacher_acc": 0.95, "rows": rows,
            "lut_validation": {"r2_identity": r2, "mape": 0.05, "n_samples": 10}}


def test_the_summary_has_intervals_over_seeds_and_skips_failed_runs():
    runs = [_run(0, 400.0, 0.90, "met", 0.95), _run(1, 460.0, 0.94, "missed", 0.99),
            {"seed": 2, "rc": 2, "install_s": 50.0, "error": "boom"}]
    s = summarize(runs)
    assert s["total_s"] == {"median": 430.0, "min": 400.0, "max": 460.0, "n": 2}
    assert s["lut_r2_identity"]["median"] == pytest.approx(0.97)
    cell = s["cells"][0]
    assert cell["accuracy"]["mean"] == pytest.approx(0.92) and cell["accuracy"]["n"] == 2
    assert cell["accuracy"]["low"] < 0.90 < 0.94 < cell["accuracy"]["high"]
    # met by the settled (fresh) verdict, not by the interval's "uncertain"
    assert cell["met"] == 1 and cell["runs"] == 2
    text = format_summary({"quick": False, "runs": runs, "summary": s})
    assert "2 runs (full demo, seeds 0, 1; failed: seed 2)" in text and "met 1 of 2" in text
    assert summarize([runs[2]]) == {}


@pytest.mark.slow
def test_a_quick_run_from_a_clean_clone_writes_its_result(tmp_path, request):
    only_when_asked(request, 300)
    run = subprocess.run([sys.executable, str(BENCH), "--out", str(tmp_path), "--quick",
                          "--seeds", "1"], capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads((tmp_path / "demo_runs_quick.json").read_text())
    (one,) = result["runs"]
    assert one["seed"] == 1 and one["n_test"] > 0 and len(one["rows"]) == 6
    assert result["summary"]["cells"]
