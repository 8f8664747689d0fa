"""Bad input: one line naming the problem, a non-zero exit, nothing measured lost."""

import hashlib
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from hwprune.cli import cli

FAST = ["--step", "64", "--max-reps", "3", "--threads", "1", "-q"]


def _run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for frag in fragments:
        assert frag in lines[0], lines[0]


def test_unknown_model(tmp_path):
    _one_line_error(_run("profile", "resnet19", "--out", tmp_path / "x.parquet"),
                    "unknown model 'resnet19'", "resnet18")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu(tmp_path):
    _one_line_error(_run("profile", "demo", "--device", "cuda", "--out", tmp_path / "x.parquet"),
                    "no CUDA device")


def test_model_without_conv(tmp_path):
    # the builder's MLP takes 3x8x8 images; at 224 px it fails, and says so in one line
    _one_line_error(_run("profile", "tests.zoo.custom_nets:build_mlp", "--input-size", "8",
                         "--out", tmp_path / "x.parquet"), "no Conv2d")
    _one_line_error(_run("profile", "tests.zoo.custom_nets:build_mlp", "--out",
                         tmp_path / "x.parquet"), "fails on a 1x3x224x224 input", "--input-size")


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    _one_line_error(_run("profile", "demo", "--out", blocker / "lut.parquet", *FAST),
                    "cannot write output")
    _one_line_error(_run("profile", "demo", "--out", tmp_path, *FAST), "is a directory")


@pytest.mark.parametrize("change", [["--batch", "2"], ["--dtype", "bf16"], ["--threads", "2"]])
def test_resuming_into_a_lut_of_other_conditions_is_refused(tmp_path, change):
    out = tmp_path / "lut.parquet"
    first = _run("profile", "demo", "--out", out, *FAST)
    assert first.exit_code == 0, first.output
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    args = [a for a in FAST if a not in ("--threads", "1")] + (
        [] if "--threads" in change else ["--threads", "1"])
    _one_line_error(_run("profile", "demo", "--out", out, *args, *change), "other conditions")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest  # nothing lost


def test_interrupted_partial_run_of_other_conditions_is_refused(tmp_path):
    out = tmp_path / "lut.parquet"
    assert _run("profile", "demo", "--out", out, "--max-keys", "3", *FAST).exit_code == 0
    parts = sorted(p.name for p in (tmp_path / "lut.parquet.parts").iterdir())
    _one_line_error(_run("profile", "demo", "--out", out, "--batch", "4", *FAST),
                    "cannot resume", "batch 1 in the existing table, 4 in this run")
    assert sorted(p.name for p in (tmp_path / "lut.parquet.parts").iterdir()) == parts


def test_bad_shard_spec(tmp_path):
    _one_line_error(_run("profile", "demo", "--out", tmp_path / "x.parquet", "--shard", "3/2"),
                    "--shard 3/2")


def test_lut_info_and_merge(tmp_path):
    out = tmp_path / "lut.parquet"
    assert _run("profile", "demo", "--out", out, *FAST).exit_code == 0
    info = _run("lut", "info", out)
    assert info.exit_code == 0
    assert "stem.0" in info.output and "100%" in info.output and "rows" in info.output
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    _one_line_error(_run("lut", "info", bad), "bad.parquet", "not a readable Parquet")
    other = tmp_path / "b2.parquet"
    assert _run("profile", "demo", "--out", other, "--batch", "2", *FAST).exit_code == 0
    _one_line_error(_run("lut", "merge", out, other, "--out", tmp_path / "m.parquet"),
                    "batch 2 in b2.parquet, 1 in lut.parquet")
    assert not (tmp_path / "m.parquet").exists()


def test_console_script_help_runs():
    run = subprocess.run([sys.executable, "-m", "hwprune", "profile", "--help"],
                         capture_output=True, text=True, env={**os.environ})
    assert run.returncode == 0 and "--step" in run.stdout and "resume" in run.stdout
