"""A user's own network on the command line: MODEL as package.module:callable with
--weights through profile, lut validate, synth and prune to a measured budget; the pruned
checkpoint reloaded in a fresh process gives the outputs the job recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import only_when_asked

ROOT = Path(__file__).resolve().parents[1]
SPEC = "tests.zoo.custom_nets:build_branchy"


def _hw(*args) -> subprocess.CompletedProcess:
    # from the repository root: the builder's package imports as it would from a user's
    run = subprocess.run([sys.executable, "-m", "hwprune", *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (args[0], run.stderr[-2000:])
    return run


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_callable_builder_goes_through_the_whole_job(request, tmp_path):
    # the README's Python example (tests/test_api.py) runs the same job in `make test`
    only_when_asked(request, 40)
    from tests.zoo.custom_nets import build_branchy

    torch.manual_seed(0)
    torch.save(build_branchy(num_classes=10).state_dict(), tmp_path / "w.pth")
    own = ["--weights", tmp_path / "w.pth"]
    lut, synth, out = tmp_path / "lut.parquet", tmp_path / "synth", tmp_path / "pruned"
    _hw("profile", SPEC, *own, "--input-size", 32, "--step", 8, "--threads", 1,
        "--calibrate", 4, "--out", lut, "-q")
    val = _hw("lut", "validate", SPEC, *own, "--lut", lut, "--samples", 5, "--out",
              tmp_path / "val", "-q")
    assert "R2" in val.stdout or "R²" in val.stdout, val.stdout
    _hw("synth", SPEC, *own, "--input-size", 32, "--n-images", 16, "--batch-size", 16,
        "--iterations", 10, "--out", synth, "-q")
    pruned = _hw("prune", SPEC, *own, "--data", synth, "--lut", lut, "--group-size", 8,
                 "--target-measured-ratio", 0.9, "--epochs", 1, "--out", out, "-q")
    rep = json.loads((out / "report.json").read_text())
    assert rep["input_size"] == 32 and rep["measured"]["verdict"] != "missed", pruned.stdout
    assert rep["saved"]["reload_max_abs_diff"] == 0
    code = ("import json, sys, torch\n"
            "from hwprune.zoo import load_checkpoint\n"
            "from hwprune.zoo.models import seeded_input\n"
            f"m = load_checkpoint({str(out / 'pruned.pt')!r}, allow_builder={SPEC!r})\n"
            "with torch.no_grad():\n"
            "    y = m.module(seeded_input(m.in_channels, m.input_size))\n"
            "print(json.dumps([m.input_size, y.flatten().tolist()]))\n")
    fresh = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    size, outputs = json.loads(fresh.stdout)
    assert size == 32
    torch.testing.assert_close(torch.tensor(outputs), torch.tensor(rep["saved"]["outputs"]),
                               atol=1e-5, rtol=0)
    refused = subprocess.run([sys.executable, "-m", "hwprune", "export", str(out / "pruned.pt"),
                              "--out", str(tmp_path / "p.onnx")], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "--builder" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
