import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import hwprune.pruner.measure as measure_mod
import hwprune.pruner.run as run_mod
from hwprune.cli import cli
from hwprune.luts import Lut, estimate
from hwprune.pruner import PruneConfig, Pruner
from hwprune.pruner.data import load_images
from hwprune.pruner.finetune import FineTuneConfig, finetune
from hwprune.pruner.measured_target import close_loop
from hwprune.pruner.run import PruneJob, measure_pair, run_job, summarize_pair
from hwprune.zoo import resolve_model

FAST = dict(group_size=8, interval=2, batch_size=32)


def _target(teacher_ckpt, lut, fraction):
    return fraction * estimate(resolve_model(str(teacher_ckpt)).module, Lut.load(lut), 32,
                               1).total_ms


def _reachable_target(teacher_ckpt, lut, fraction):
    """``fraction`` of the teacher's estimate, or halfway down to the LUT's floor if that is
    higher: on a GPU LUT the fixed per-layer costs can keep the floor above 70%."""
    teacher = resolve_model(str(teacher_ckpt)).module
    p = Pruner(resolve_model(str(teacher_ckpt)).module, teacher,
               PruneConfig(target_ratio=0.5, **FAST), 32, 1, Lut.load(lut))
    full, floor = p.latency.total_ms, p.floor_ms()
    return max(fraction * full, (full + floor) / 2)


def _job(teacher_ckpt, lut, out, target, device="cpu", job_kw=None, **kw):
    job_kw = dict(job_kw or {})
    return PruneJob(str(teacher_ckpt), out, "digits", [str(lut)],
                    PruneConfig(target_latency_ms=target, **FAST, **kw),
                    job_kw.pop("finetune", FineTuneConfig(epochs=1, batch_size=64)),
                    val="digits-test", measure_rounds=1, progress=False, device=device,
                    **job_kw)


@pytest.fixture
def training_benchmark_flags():
    """``torch.backends.cudnn.benchmark`` as seen by every module called in training mode
    (the student while pruning and fine-tuning; the teacher and timed copies run in eval).
    The flag starts True, as CUDA timing or a caller may leave it; it is put back after."""
    seen: list[bool] = []

    def hook(module, args):
        if module.training:
            seen.append(torch.backends.cudnn.benchmark)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield seen
    finally:
        handle.remove()
        torch.backends.cudnn.benchmark = old


def _storage_locations(path) -> set[str]:
    """The device every storage in a torch file was saved from, as torch.load reports it."""
    seen: list[str] = []
    torch.load(path, weights_only=True,
               map_location=lambda storage, loc: (seen.append(loc), storage)[1])
    return set(seen)


def test_prune_job_end_to_end_and_reload(teacher_ckpt, device, device_lut, tmp_path,
                                         training_benchmark_flags):
    target = _reachable_target(teacher_ckpt, device_lut, 0.7)
    # An hour between checkpoints (the default, 60 s, is far from this run's few seconds,
    # but a loaded CI machine must not decide the count)
    rep = run_job(_job(teacher_ckpt, device_lut, tmp_path / "out", target, device,
                       dict(checkpoint_every=3600)))
    # The pruner does not train under the benchmark flag left on before it, and restores it
    assert training_benchmark_flags and not any(training_benchmark_flags)
    assert torch.backends.cudnn.benchmark is True and rep["cudnn_benchmark"] is False
    # Pruning took less than the period: its state is written once, when pruning ended
    assert rep["prune_checkpoints"]["writes"] == 1
    state = torch.load(tmp_path / "out" / "state" / "prune.pt", weights_only=True,
                       map_location="cpu")
    assert state["step"] == len(rep["trajectory"])
    assert rep["after"]["estimated_ms"] <= target < rep["before"]["estimated_ms"]
    assert rep["trajectory"] and rep["trajectory"][-1]["estimated_ms"] <= target
    assert 0 < rep["filters_kept"] < 1
    assert rep["measured"]["pruned_ms"] > 0 and rep["accuracy"]["pruned"] > 0.1
    for name in ("pruned.pt", "report.json", "trajectory.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    # Reload without executing pickled code: same channels, identical outputs
    payload = torch.load(tmp_path / "out" / "pruned.pt", weights_only=True)
    assert payload["channels"] == rep["after"]["channels"]
    assert _storage_locations(tmp_path / "out" / "pruned.pt") == {"cpu"}
    if device == "cuda":  # what a CPU-only machine does with it: a plain load must work
        code = ("import sys, torch; assert not torch.cuda.is_available(); "
                "p = torch.load(sys.argv[1], weights_only=True); "
                "assert all(v.device.type == 'cpu' for v in p['state_dict'].values())")
        run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out" / "pruned.pt")],
                             env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
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
        run_job(_job(teacher_ckpt, device_lut, tmp_path / "out", target, device))


def interrupt_prune_step(monkeypatch, at: int | None) -> dict:
    """``Pruner.prune_step`` raises KeyboardInterrupt when it begins its ``at``-th call
    (Ctrl-C in the middle of a run). Returns the counter: ``n`` steps begun, ``at`` (None:
    no interruption), both for the test to reset between runs."""
    real, calls = Pruner.prune_step, {"n": 0, "at": at}

    def flaky(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == calls["at"]:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(Pruner, "prune_step", flaky)
    return calls


def test_resume_after_interruption_equals_an_uninterrupted_run(teacher_ckpt, device,
                                                               device_lut, tmp_path,
                                                               monkeypatch):
    # A filter target, so the number of steps does not depend on the LUT's numbers; the
    # state is written after every step, so the resumed run starts where this one stopped.
    teacher_lut = device_lut
    target, kw = None, dict(groups_per_step=1, target_ratio=0.6, device=device,
                            job_kw=dict(checkpoint_every=0))
    if device == "cuda":  # heuristics may pick atomics-based backward kernels: not bitwise
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    whole = run_job(_job(teacher_ckpt, teacher_lut, tmp_path / "whole", target, **kw))
    assert len(whole["trajectory"]) >= 3
    assert whole["prune_checkpoints"]["writes"] == len(whole["trajectory"])
    calls = interrupt_prune_step(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_job(_job(teacher_ckpt, teacher_lut, tmp_path / "cut", target, **kw))
    assert (tmp_path / "cut" / "state" / "prune.pt").exists()
    assert not (tmp_path / "cut" / "report.json").exists()
    calls["at"] = None
    with pytest.raises(ValueError, match="other settings"):  # not mixed with another run
        run_job(_job(teacher_ckpt, teacher_lut, tmp_path / "cut", target, eta=3.0, **kw))
    resumed = run_job(_job(teacher_ckpt, teacher_lut, tmp_path / "cut", target, **kw))
    _assert_same_run(whole, resumed, tmp_path / "whole", tmp_path / "cut")


def test_time_policy_writes_less_and_resumes_from_an_older_step(teacher_ckpt, teacher_lut,
                                                                tmp_path, monkeypatch):
    """With a checkpoint every 2 "seconds" of a clock that ticks once per step, the state
    is written at steps 2, 4, ... and at the end; a run cut during step 4 resumes from
    step 2, replays steps 3 and 4 from their own seeds, and ends as an uncut run does."""
    begun = interrupt_prune_step(monkeypatch, None)
    monkeypatch.setattr(run_mod, "_clock", lambda: float(begun["n"]))
    # At least 5 steps whichever groups go: 72 of the 144 filters must, at most 16 a step
    kw = dict(groups_per_step=1, target_ratio=0.5, job_kw=dict(checkpoint_every=2))
    whole = run_job(_job(teacher_ckpt, teacher_lut, tmp_path / "whole", None, **kw))
    n = len(whole["trajectory"])
    assert n >= 5
    assert whole["prune_checkpoints"]["writes"] == n // 2 + n % 2 < n
    begun.update(n=0, at=4)
    with pytest.raises(KeyboardInterrupt):
        run_job(_job(teacher_ckpt, teacher_lut, tmp_path / "cut", None, **kw))
    state = tmp_path / "cut" / "state" / "prune.pt"
    assert torch.load(state, weights_only=True, map_location="cpu")["step"] == 2
    begun.update(n=0, at=None)
    resumed = run_job(_job(teacher_ckpt, teacher_lut, tmp_path / "cut", None, **kw))
    assert [r["step"] for r in resumed["trajectory"]] == list(range(1, n + 1))
    _assert_same_run(whole, resumed, tmp_path / "whole", tmp_path / "cut")


def test_cudnn_benchmark_is_off_while_training_even_after_timing(teacher_ckpt, device,
                                                                device_lut,
                                                                training_benchmark_flags):
    """The library calls on their own (no run_job around them): a real measurement in the
    LUT's mode first, then pruning, a measured loop that prunes on after measuring, and
    fine-tuning. None of them may train with the flag the measurement left on."""
    teacher = resolve_model(str(teacher_ckpt)).module.to(device).eval()
    student = resolve_model(str(teacher_ckpt)).module.to(device)
    lut = Lut.load(device_lut)

    def measure(t, s):
        return measure_pair(t, s, lut, 32, 1, rounds=1, max_reps=20)

    measure(teacher, student)
    target = _reachable_target(teacher_ckpt, device_lut, 0.9)
    p = Pruner(student, teacher, PruneConfig(target_latency_ms=target, **FAST), 32, 1, lut)
    data = load_images("digits", 32)
    p.run(data)
    steps = p.step
    # An unreachable goal: after each measurement the loop prunes on (until its retry)
    close_loop(p, teacher, lut, 0.01, retries=1, measure=measure, data=data, run_kwargs={})
    assert p.step > steps, "the loop did not train after a measurement"
    finetune(student, teacher, data, FineTuneConfig(epochs=1, batch_size=256))
    assert training_benchmark_flags and not any(training_benchmark_flags)
    assert torch.backends.cudnn.benchmark is True  # the caller's value, back
    # Asked for, it is on while training, and still restored afterwards
    training_benchmark_flags.clear()
    torch.backends.cudnn.benchmark = False
    finetune(student, teacher, data, FineTuneConfig(epochs=1, batch_size=256),
             cudnn_benchmark=True)
    assert training_benchmark_flags and all(training_benchmark_flags)
    assert torch.backends.cudnn.benchmark is False


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


@pytest.mark.heavy
def test_cli_prunes_and_prints_the_result(teacher_ckpt, teacher_lut, tmp_path,
                                          training_benchmark_flags):
    target = _target(teacher_ckpt, teacher_lut, 0.75)
    torch.backends.cudnn.benchmark = False
    r = _cli(teacher_ckpt, "--data", "digits", "--lut", teacher_lut, "--out", tmp_path / "o",
             "--target-latency", target, "--group-size", 8, "--interval", 2, "--epochs", 1,
             "--val", "digits-test", "--selector", "knapsack", "--cudnn-benchmark",
             "--checkpoint-every", 0, "-q")
    assert r.exit_code == 0, r.output
    assert "measured" in r.output and "accuracy on digits held-out split" in r.output
    assert "measured ratio" in r.output and "budget" not in r.output  # no measured target
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    # --checkpoint-every 0: the state after every step; --cudnn-benchmark: on while training
    assert rep["prune_checkpoints"]["writes"] == len(rep["trajectory"]) > 0
    assert training_benchmark_flags and all(training_benchmark_flags)
    assert torch.backends.cudnn.benchmark is False and rep["cudnn_benchmark"] is True


@pytest.mark.heavy
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
    from hwprune.pruner.data import load_images
    from hwprune.pruner.measured_target import close_loop

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
    # The table is measured in this session: on a busy machine its floor moves, so the goal
    # is kept clear of what the floor can measure (else the loop rightly stops there).
    floor_ratio = (p.floor_ms() + overhead) / (full + overhead)
    # The LUT target's own result (what the loop measures first) also moves with the table:
    # the goal lies between it and the floor, so the loop has something to correct.
    first_ratio = (estimate(student, lut, 32, 1).total_ms + overhead) / (full + overhead)
    goal = max(min(0.65, first_ratio - 0.02), (floor_ratio + first_ratio) / 2)
    assert floor_ratio < goal < first_ratio, \
        f"this table's floor ({floor_ratio:.3f}) leaves nothing below {first_ratio:.3f} to test"
    loop = close_loop(p, teacher, lut, goal, retries=6, measure=measure, data=data,
                      run_kwargs={})
    why = f"goal {goal:.3f}, floor ratio {floor_ratio:.3f}, loop {loop}"
    assert loop[0]["measured_ratio"] > goal, why  # the LUT target alone missed the goal
    assert loop[-1]["measured_ratio"] <= goal and loop[-1]["stopped"] == "met", why
    ests = [h["estimated_ms"] for h in loop]
    assert all(a > b for a, b in zip(ests, ests[1:])), why  # each correction pruned further


def test_the_reported_verdict_is_a_fresh_measurement_not_the_loops_lucky_stop(
        teacher_ckpt, teacher_lut, tmp_path, monkeypatch):
    """A scripted timer: the loop's measurement meets the budget on lucky rounds, the fresh
    one afterwards misses it. The report's verdict is the fresh one; the loop's is kept
    beside it, labelled."""
    calls = []

    def scripted(t, s, lut, size, in_ch, rounds, max_reps, goal, previous=None, **kw):
        lucky = not calls  # the loop measures first, once: it stops on a met verdict
        calls.append(lucky)
        ratios = [0.60] * 5 if lucky else [0.90, 0.92, 0.91, 0.93, 0.90]
        return summarize_pair([1.0] * 5, ratios, goal, device="cpu", stat="median")

    monkeypatch.setattr(run_mod, "measure_pair", scripted)  # the loop's measurements
    monkeypatch.setattr(measure_mod, "measure_pair", scripted)  # the fresh verdict's
    job = _job(teacher_ckpt, teacher_lut, tmp_path / "m", None, "cpu",
               {"finetune": FineTuneConfig(epochs=0)})
    job.measured_ratio = 0.8
    rep = run_job(job)
    assert calls == [True, False]
    loop = rep["measured_target"]["loop"]
    assert len(loop) == 1 and loop[0]["stopped"] == "met" and loop[0]["verdict"] == "met"
    assert rep["measured_by_loop"]["verdict"] == "met"
    assert "loop's last measurement" in rep["measured_by_loop"]["measured_at"]
    assert rep["measured"]["verdict"] == rep["measured"]["settled"] == "missed"
    assert rep["measured"]["ratio"] == pytest.approx(0.91)
    assert "new rounds" in rep["measured"]["measured_at"]


def test_measured_target_job_reports_its_loop(teacher_ckpt, device, device_lut, tmp_path):
    teacher_lut = device_lut
    job = _job(teacher_ckpt, teacher_lut, tmp_path / "m", None, device)
    job.measured_ratio, job.finetune = 0.8, FineTuneConfig(epochs=0)
    rep = run_job(job)
    loop = rep["measured_target"]["loop"]
    assert loop and loop[-1]["stopped"] in ("met", "at the LUT's floor", "out of retries")
    # "met" is claimed only on a met verdict: the ratio interval within the goal
    assert (loop[-1]["stopped"] == "met") == (loop[-1]["verdict"] == "met")
    assert all(h["ratio_low"] <= h["measured_ratio"] <= h["ratio_high"] for h in loop)
    m = rep["measured"]
    assert m["goal"] == 0.8 and m["verdict"] in ("met", "missed", "uncertain")
    assert m["verdict"] != "met" or m["ratio_high"] <= 0.8
    assert isinstance(rep["warnings"], list)
    assert rep["prune"]["target_latency_ms"] > 0  # a first guess was made from the LUT
    with pytest.raises(ValueError, match="strictly"):
        bad = _job(teacher_ckpt, teacher_lut, tmp_path / "b", None, device)
        bad.measured_ratio = 1.5
        run_job(bad)


def _assert_same_run(whole: dict, resumed: dict, whole_dir, cut_dir) -> None:
    """A resumed run ends exactly as the uninterrupted one: channels, losses, weights."""
    assert resumed["after"]["channels"] == whole["after"]["channels"]
    assert [r["loss"] for r in resumed["trajectory"]] == \
        pytest.approx([r["loss"] for r in whole["trajectory"]], rel=1e-5)
    a = torch.load(whole_dir / "pruned.pt", weights_only=True)["state_dict"]
    b = torch.load(cut_dir / "pruned.pt", weights_only=True)["state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_a_run_started_from_another_prunes_on_from_its_student(teacher_ckpt, teacher_lut,
                                                               demo_lut, tmp_path):
    kw = dict(groups_per_step=1, target_ratio=0.8)
    no_ft = FineTuneConfig(epochs=0)  # what is continued is the state before fine-tuning
    first = run_job(_job(teacher_ckpt, teacher_lut, tmp_path / "a", None,
                         job_kw=dict(measure=False, finetune=no_ft), **kw))
    later = dict(measure=False, start_from=tmp_path / "a", finetune=no_ft)
    second = run_job(_job(teacher_ckpt, teacher_lut, tmp_path / "b", None, job_kw=later,
                          **{**kw, "target_ratio": 0.6}))
    phases = second["phase_seconds"]
    assert set(phases) == {"setup", "pruning", "measuring", "fine_tuning", "evaluating"}
    assert all(v >= 0 for v in phases.values()) and sum(phases.values()) <= second["seconds"]
    n = len(first["trajectory"])
    assert second["started_at_step"] == n and second["trajectory"][:n] == first["trajectory"]
    assert [r["step"] for r in second["trajectory"][n:]] == list(
        range(n + 1, len(second["trajectory"]) + 1))
    assert second["filters_kept"] <= 0.6 < 0.8 >= first["filters_kept"] > 0.6
    # the student it started from had the first run's channels, not the teacher's
    assert all(second["after"]["channels"][k] <= c
               for k, c in first["after"]["channels"].items())
    # Refused, writing nothing: another LUT, another group size, a run without a state
    for why, lut, extra, start in (("luts", demo_lut, {}, tmp_path / "a"),
                                   ("group size", teacher_lut, {"group_size": 16},
                                    tmp_path / "a"),
                                   ("no finished pruning state", teacher_lut, {},
                                    tmp_path / "nothing")):
        out = tmp_path / f"bad-{why}"
        job = _job(teacher_ckpt, lut, out, None, job_kw=dict(measure=False, start_from=start),
                   **{**kw, "target_ratio": 0.6})
        job.prune = replace(job.prune, **extra)
        with pytest.raises(run_mod.JobError, match=why):
            run_job(job)
        assert not out.exists(), why


@pytest.mark.heavy
def test_a_budget_measured_in_onnx_runtime(teacher_ckpt, teacher_lut, tmp_path):
    """--runtime onnxruntime: the measured budget is taken in ONNX Runtime, the report says
    where, and pruned.onnx (checked against PyTorch) lies beside pruned.pt."""
    onnx_rt = pytest.importorskip("onnxruntime")
    base = ("--data", "digits", "--lut", teacher_lut, "--target-measured-ratio", 0.8,
            "--group-size", 8, "--interval", 2, "--epochs", 0, "--runtime", "onnxruntime",
            "--measure-rounds", 3, "-q")
    r = _cli(teacher_ckpt, *base, "--out", tmp_path / "refused")
    assert r.exit_code == 2 and "timed in torch, not onnxruntime" in r.output
    assert not (tmp_path / "refused").exists()
    r = _cli(teacher_ckpt, *base, "--allow-mismatch", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    assert "in onnxruntime" in r.output and "pruned.onnx" in r.output
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["measured"]["runtime"]["runtime"] == "onnxruntime"
    assert rep["measured"]["runtime"]["threads"] == 1
    assert rep["export"]["max_abs_diff"] <= 1e-3
    loop = rep["measured_target"]["loop"]
    assert (loop[-1]["stopped"] == "met") == (loop[-1]["verdict"] == "met")
    # the exported file is the pruned student: same logits as pruned.pt
    from hwprune.zoo import load_checkpoint

    student = load_checkpoint(tmp_path / "o" / "pruned.pt").module.eval()
    x = torch.randn(2, 1, 32, 32)
    sess = onnx_rt.InferenceSession(str(tmp_path / "o" / "pruned.onnx"))
    got = sess.run(None, {sess.get_inputs()[0].name: x[:1].numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - student(x[:1]).numpy()).max() <= 1e-3


def test_a_run_resumes_only_at_the_input_size_it_was_cut_at(teacher_ckpt, tmp_path,
                                                             monkeypatch):
    """Without a LUT nothing else pins the size: the state records it."""
    def job(size):
        return PruneJob(str(teacher_ckpt), tmp_path / "cut", "digits", [],
                        PruneConfig(criterion="taylor", target_ratio=0.6, groups_per_step=1,
                                    **FAST),
                        FineTuneConfig(epochs=1, batch_size=64), measure=False,
                        progress=False, input_size=size, checkpoint_every=0)

    interrupt_prune_step(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_job(job(32))
    with pytest.raises(ValueError, match=r"other settings \(input_size\)"):
        run_job(job(24))
