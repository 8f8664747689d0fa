"""``benchmarks/run_all.py``: summary.md from every result file, and a failed benchmark
listed as failed (its exit status too), not counted as a success."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
sys.path.insert(0, str(RESULTS.parent))

import run_all  # noqa: E402


def test_the_summary_has_a_line_for_every_result_file(tmp_path):
    for f in RESULTS.glob("*.json"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "mystery_cpu.json").write_text(json.dumps({"machine": {}}))
    (tmp_path / run_all.STATUS).write_text(json.dumps({}))  # each script's last run
    md = run_all.summarize(tmp_path).read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in md.splitlines()
            if line.startswith("| `")}
    assert set(rows) == {f.name for f in tmp_path.glob("*.json")} - {run_all.STATUS}
    assert "no headline" in rows["mystery_cpu.json"]
    assert not [n for n, line in rows.items() if "unreadable" in line]
    assert "work end to end" in rows["timm_coverage_cpu.json"]
    assert "work end to end" in rows["torchvision_coverage_cpu.json"]
    timing = [n for n in rows if n.startswith("make_test_time_")]  # one file per measured commit
    assert timing and all("median" in rows[n] for n in timing)
    assert "95% interval], 5 seeds, 449 test images" in rows["table9_cpu.json"]
    assert "interval width" in rows["measure_rounds_cpu.json"]
    assert "3 runs (full demo, seeds 0, 1, 2)" in rows["demo_runs_cpu.json"]
    assert "quick demo" in rows["demo_runs_quick_cpu.json"]
    assert "assembled by hand" in rows["lut_validation_runtimes_cpu.json"]
    assert "taylor" in rows["prune_digits_snap_cpu.json"]  # a variant's file, by its script
    # an entry that runs another script (table9 --setup-only): that script's headline
    assert "onnxruntime, step 4: table R²" in rows["table9_setup_onnxruntime_step4_cpu.json"]
    assert "openvino, step 4: table R²" in rows["table9_setup_openvino_step4_cpu.json"]
    assert "R² identity" in rows["lut_validation_openvino_cpu.json"]


def test_the_hour_subset_names_scripts_the_runner_knows():
    assert run_all.SUBSET and set(run_all.SUBSET) <= set(run_all.SCRIPTS)
    for name in run_all.SCRIPTS:  # each entry runs a script that exists
        assert (RESULTS.parent / f"{run_all.SCRIPT_OF.get(name, name)}.py").is_file(), name


def test_a_failing_benchmark_is_listed_as_failed(tmp_path, monkeypatch, capsys):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "boom.py").write_text("import sys\nsys.exit('boom: the device went away')\n")
    (scripts / "fine.py").write_text(
        "import json, sys, pathlib\nout = pathlib.Path(sys.argv[2]); out.mkdir()\n"
        "(out / 'fine.json').write_text(json.dumps({'machine': {'date': '2026-12-06'}}))\n")
    monkeypatch.setattr(run_all, "HERE", scripts)
    monkeypatch.setattr(run_all, "SCRIPTS", {"boom": ([], None), "fine": ([], None)})
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["run_all.py", "--out", str(out)])
    with pytest.raises(SystemExit) as exc:
        run_all.main()
    assert exc.value.code == 1
    assert "boom (cpu): FAILED rc=1" in capsys.readouterr().out
    md = (out / "summary.md").read_text()
    assert "| boom_cpu | **FAILED** (exit 1" in md and "boom: the device went away" in md
    assert "| fine_cpu | ok |" in md and (out / "fine_cpu.json").is_file()
    assert not (out / "boom_cpu.json").exists()
