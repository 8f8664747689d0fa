import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from hwprune.cli import cli
from luts import Lut, estimate
from pruner import PruneConfig, Pruner
from pruner.finetune import FineTuneConfig
from pruner.run import PruneJob, run_job
from zoo import resolve_model

FAST = dict(group_size=8, interval=2, batch_size=32)


def _target(teacher_ckpt, lut, fraction):
    return fraction * estimate(resolve_model(str(teacher_ckpt)).module, Lut.load(lut), 32,
                               1).total_ms


def _job(teacher_ckpt, lut, out, target, **kw):
    return PruneJob(str(teacher_ckpt), out, "digits", [str(lut)],
                    PruneConfig(target_latency_ms=target, **FAST, **kw),
                    FineTuneConfig(epochs=1, batch_size=64), val="digits-test",
                    measure_rounds=1, progress=False)


def test_prune_job_end_to_end_and_reload(teacher_ckpt, teacher_lut, tmp_path):
    target = _target(teacher_ckpt, teacher_lut, 0.7)
    rep = run_job(_job(teacher_ckpt, teacher_lut, tmp_path / "out", target))
    assert rep["after"]["estimated_ms"] <= target < rep["before"]["estimated_ms"]
    assert rep["trajectory"] and rep["trajectory"][-1]["estimated_ms"] <= target
    assert 0 < rep["filters_kept"] < 1
    assert rep["measured"]["pruned_ms"] > 0 and rep["accuracy"]["pruned"] > 0.1
    for name in ("pruned.pt", "report.json", "trajectory.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    # Reload without executing pickled code: same channels, identical outputs
    payload = torch.load(tmp_path / "out" / "pruned.pt", weights_only=True)
    assert payload["channels"] == rep["after"]["channels"]
    net = resolve_model(str(tmp_path / "out" / "pruned.pt")).module
    modules = dict(net.named_modules())
    for name, c in rep["after"]["channels"].items():
        assert modules[name].out_channels == c
    x = torch.randn(5, 1, 32, 32)
    again = resolve_model(str(tmp_path / "out" / "pruned.pt")).module
    assert torch.equal(net(x), again(x))
    assert CliRunner().invoke(cli, ["evaluate", str(tmp_path / "out" / "pruned.pt"), "--val",
                                    "digits-test"]).exit_code == 0
    # A finished run is not overwritten
    with pytest.raises(ValueError, match="finished run"):
        run_job(_job(teacher_ckpt, teacher_lut, tmp_path / "out", target))


def test_resume_after_interruption_equals_an_uninterrupted_run(teacher_ckpt, teacher_lut,
                                                               tmp_path, monkeypatch):
    # A filter target, so the number of steps does not depend on the LUT's numbers
    target, kw = None, dict(groups_per_step=1, target_ratio=0.6)
    whole = run_job(_job(teacher_ckpt, teacher_lut, tmp_path / "whole", target, **kw))
    assert len(whole["trajectory"]) >= 3
    real = Pruner.prune_step
    calls = {"n": 0}

    def flaky(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(Pruner, "prune_step", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_job(_job(teacher_ckpt, teacher_lut, tmp_path / "cut", target, **kw))
    assert (tmp_path / "cut" / "state" / "prune.pt").exists()
    assert not (tmp_path / "cut" / "report.json").exists()
    monkeypatch.setattr(Pruner, "prune_step", real)
    with pytest.raises(ValueError, match="other settings"):  # not mixed with another run
        run_job(_job(teacher_ckpt, teacher_lut, tmp_path / "cut", target, eta=3.0, **kw))
    resumed = run_job(_job(teacher_ckpt, teacher_lut, tmp_path / "cut", target, **kw))
    assert resumed["after"]["channels"] == whole["after"]["channels"]
    assert [r["loss"] for r in resumed["trajectory"]] == \
        pytest.approx([r["loss"] for r in whole["trajectory"]], rel=1e-5)
    a = torch.load(tmp_path / "whole" / "pruned.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "pruned.pt", weights_only=True)["state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def _cli(*args):
    return CliRunner().invoke(cli, ["prune", *map(str, args)])


def test_bad_inputs_fail_clearly_and_write_nothing(teacher_ckpt, teacher_lut, demo_lut,
                                                   tmp_path):
    out = tmp_path / "out"
    base = [teacher_ckpt, "--data", "digits", "--lut", teacher_lut, "--out", out,
            "--group-size", "8", "-q"]
    est = _target(teacher_ckpt, teacher_lut, 1.0)
    cases = {
        "not below the current": [*base, "--target-latency", est * 1.5],
        "below what pruning can reach": [*base, "--target-latency", est * 0.01],
        "outside the measured grid": [teacher_ckpt, "--data", "digits", "--lut", demo_lut,
                                      "--out", out, "--target-latency", 0.001, "-q"],
        "weights-only checkpoint": [tmp_path / "junk.pt", "--data", "digits", "--lut",
                                    teacher_lut, "--out", out, "--target-latency", 1, "-q"],
        "holds no images": [teacher_ckpt, "--data", tmp_path / "empty", "--lut", teacher_lut,
                            "--out", out, "--target-latency", est * 0.7, "-q"],
        "exactly one of": [*base],
    }
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "empty").mkdir()
    for why, args in cases.items():
        r = _cli(*args)
        assert r.exit_code == 2, (why, r.output)
        assert why in r.output, (why, r.output)
        assert not out.exists(), why


def test_cli_prunes_and_prints_the_result(teacher_ckpt, teacher_lut, tmp_path):
    target = _target(teacher_ckpt, teacher_lut, 0.75)
    r = _cli(teacher_ckpt, "--data", "digits", "--lut", teacher_lut, "--out", tmp_path / "o",
             "--target-latency", target, "--group-size", 8, "--interval", 2, "--epochs", 1,
             "--val", "digits-test", "--selector", "knapsack", "-q")
    assert r.exit_code == 0, r.output
    assert "measured" in r.output and "accuracy on digits held-out split" in r.output


@pytest.mark.timeout(600)
def test_torchrun_two_cpu_ranks_prune_together(teacher_ckpt, teacher_lut, tmp_path):
    target = _target(teacher_ckpt, teacher_lut, 0.7)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "hwprune", "prune", str(teacher_ckpt), "--data", "digits", "--lut",
           str(teacher_lut), "--out", str(tmp_path / "d"), "--target-latency", str(target),
           "--group-size", "8", "--interval", "2", "--epochs", "1", "--no-measure", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=580)
    assert run.returncode == 0, run.stderr[-3000:]
    rep = (tmp_path / "d" / "report.json").read_text()
    assert '"trajectory"' in rep
    assert resolve_model(str(tmp_path / "d" / "pruned.pt")).module(torch.zeros(1, 1, 32, 32)) \
        .shape == (1, 10)


def test_measured_target_prunes_on_until_the_measurement_meets_it(teacher_ckpt, teacher_lut):
    """The loop's decisions, with a measurement that adds a fixed overhead the LUT lacks
    (as a CPU's framework overhead does): the LUT target alone misses, the loop corrects."""
    from pruner.data import load_images
    from pruner.measured_target import close_loop

    r = resolve_model(str(teacher_ckpt))
    teacher = r.module.eval()
    student = resolve_model(str(teacher_ckpt)).module
    lut = Lut.load(teacher_lut)
    full = estimate(teacher, lut, 32, 1).total_ms
    overhead = 0.2 * full

    def measure(t, s):  # deterministic stand-in for measure_pair: est + overhead
        return {"teacher_ms": full + overhead,
                "pruned_ms": estimate(s, lut, 32, 1).total_ms + overhead}

    p = Pruner(student, teacher, PruneConfig(target_latency_ms=0.8 * full, **FAST), 32, 1, lut)
    data = load_images("digits", 32)
    p.run(data)
    goal = 0.65
    loop = close_loop(p, teacher, lut, goal, retries=6, measure=measure, data=data,
                      run_kwargs={})
    assert loop[0]["measured_ratio"] > goal  # the LUT target alone missed the goal
    assert loop[-1]["measured_ratio"] <= goal and loop[-1]["stopped"] == "met"
    ests = [h["estimated_ms"] for h in loop]
    assert all(a > b for a, b in zip(ests, ests[1:]))  # each correction pruned further


def test_measured_target_job_reports_its_loop(teacher_ckpt, teacher_lut, tmp_path):
    job = _job(teacher_ckpt, teacher_lut, tmp_path / "m", None)
    job.measured_ratio, job.finetune = 0.8, FineTuneConfig(epochs=0)
    rep = run_job(job)
    loop = rep["measured_target"]["loop"]
    assert loop and loop[-1]["stopped"] in ("met", "at the LUT's floor", "out of retries")
    assert rep["prune"]["target_latency_ms"] > 0  # a first guess was made from the LUT
    with pytest.raises(ValueError, match="strictly"):
        bad = _job(teacher_ckpt, teacher_lut, tmp_path / "b", None)
        bad.measured_ratio = 1.5
        run_job(bad)
