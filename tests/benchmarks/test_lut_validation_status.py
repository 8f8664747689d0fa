"""``benchmarks/lut_validation.py`` exits non-zero when a profile or a validation failed or
did not run: ``run_all.py`` counts a zero exit as a success."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "lut_validation.py"
sys.path.insert(0, str(BENCH.parent))

from lut_validation import failures  # noqa: E402


def test_a_failed_profile_makes_the_benchmark_exit_1_naming_it(tmp_path):
    run = subprocess.run([sys.executable, str(BENCH), "--out", str(tmp_path), "--device", "cpu",
                          "--mode", "eager", "--batch", "1", "--dtype", "fp32",
                          "--models", "no_such_model", "--budget", "120"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "no_such_model: profile exit 2" in run.stderr
    result = json.loads((tmp_path / "lut_validation.json").read_text())
    assert result["models"]["no_such_model"]["profile_rc"] == 2


def test_failures_names_each_kind_of_miss():
    models = {"a": {"profile_rc": 0, "validate_rc": 0, "report": {}},
              "b": {"profile_rc": 0},
              "c": {"profile_rc": 0, "validate_rc": 3},
              "d": {"profile_rc": 0, "validate_rc": 0, "report": {}, "extend": {"rc": 1}}}
    assert failures({"models": models}, ["a", "b", "c", "d"]) == [
        "b: not validated (no time left)", "c: validate exit 3", "d: extend exit 1"]
    assert failures({"models": {"a": models["a"]}}, ["a"]) == []
