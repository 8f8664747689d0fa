"""benchmarks/gpu_check.py --smoke: every step of the prepared GPU check, end to end on the
CPU with tiny sizes, so the script is known to run before a GPU is ever lent."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import only_when_asked

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.heavy
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_gpu_check_smoke_runs_every_step(tmp_path, request):
    # A minute of make test's five: `make gpu-smoke` runs it, and before a GPU session
    # it must pass (docs/results.md, "The prepared GPU check").
    only_when_asked(request, 60)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out",
                           str(out), "--work", str(tmp_path / "work")], cwd=ROOT,
                          capture_output=True, text=True)
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + log[-5000:]
    result = json.loads((out / "gpu_check.json").read_text())
    steps = result["steps"]
    assert list(steps) == ["tests", "synth", "profile", "floor", "digits", "prune"]
    for name, step in steps.items():
        # "missed" is allowed: tiny CPU sizes cannot meet GPU targets; an error is not.
        assert step["status"] in ("ok", "missed"), (name, step, log[-5000:])
        assert step["checks"] and all(isinstance(c["ok"], bool) for c in step["checks"]), name
    assert set(steps["synth"]["bn_fall"]) == {"none", "fp16", "bf16"}
    assert steps["floor"]["measured_ms"]["extreme-min"] < steps["floor"]["measured_ms"]["original"]
    assert len(steps["prune"]["rows"]) == 2 and len(steps["digits"]["rows"]) == 2
    assert result["versions"]["torch"] and result["versions"]["machine"]["device_kind"] == "cpu"
    summary = (out / "gpu_check.md").read_text()
    assert all(f"| {name} |" in summary for name in steps)
    # What the device tool brings back: at most 8 files in OUT.
    assert len(list(out.iterdir())) <= 8


def test_gpu_check_refuses_to_run_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr


@pytest.mark.heavy
@pytest.mark.slow
def test_a_step_past_its_deadline_is_killed_with_what_it_started(tmp_path, request):
    """The profile step runs `python -m hwprune profile` as a grandchild: at the step's
    timeout it must die too, not keep the device busy while later steps time."""
    only_when_asked(request, 10)  # with the smoke run in `make gpu-smoke`
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out",
                           str(tmp_path / "out"), "--work", str(work), "--only", "profile",
                           "--budget", "6"], cwd=ROOT, capture_output=True, text=True)
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert result["steps"]["profile"]["status"] == "timeout", result["steps"]
    assert proc.returncode == 1
    left = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True)
    assert left.stdout.strip() == "", "processes of the killed step still run"
