"""Synthesis on each device, in each autocast mode and memory format, and under torchrun."""

import math

import pytest
import torch
from click.testing import CliRunner

import hwprune.synth.run
from hwprune.cli import cli
from hwprune.synth import PRESETS, SynthConfig, SynthError, rank_device, synthesize, synthesize_batch
from hwprune.zoo import resolve_model


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_short_synthesis_on_each_device_amp_and_layout(teacher_ckpt, tmp_path, device, amp,
                                                       channels_last):
    # CPU autocast runs bf16 and fp16 for real, so every mode is exercised without a GPU.
    di = PRESETS["demo"].with_(iterations=80, amp=amp, channels_last=channels_last)
    summary = synthesize(SynthConfig(str(teacher_ckpt), tmp_path / "syn", 4, 4, di,
                                     device=device, progress=False))
    data = torch.load(tmp_path / "syn" / "synthetic.pt", weights_only=True)
    images = data["images"]
    assert images.shape == (4, 1, 32, 32) and torch.isfinite(images).all()
    lo, hi = (0 - 0.3053) / 0.3236, (1 - 0.3053) / 0.3236
    assert images.min() >= lo - 1e-5 and images.max() <= hi + 1e-5
    curve = summary["loss_curve_mean_over_batches"]
    assert curve["step"] == list(range(80))  # every step logged (80 // 50 = 1)
    assert all(map(math.isfinite, curve["total"]))
    # Teachers trained from different seeds fell 4.8x..12.5x in these 80 steps.
    assert curve["bn"][0] / curve["bn"][-1] >= 3, curve["bn"][::10]
    assert ("loss_scale" in curve) == (amp == "fp16")
    if amp == "fp16":
        assert curve["skipped"][-1] == 0 and curve["loss_scale"][0] == 2.0 ** 16
    if amp != "none":  # and as far as fp32 gets (measured: within 2%)
        teacher = resolve_model(str(teacher_ckpt)).module.to(device)
        for p in teacher.parameters():
            p.requires_grad_(False)
        ref = synthesize_batch(teacher, data["targets"], di.with_(amp="none"), 32, 1,
                               torch.Generator().manual_seed(0)).history["bn"]
        assert curve["bn"][-1] == pytest.approx(ref[-1], rel=0.1), (curve["bn"][-1], ref[-1])


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_channels_last_reaches_the_teacher(tmp_path, monkeypatch, device, channels_last):
    # A 3-channel teacher: with one input channel NCHW and NHWC strides coincide.
    seen, models = [], []

    def spy(spec, **kw):
        resolved = real_resolve(spec, **kw)
        models.append(resolved.module)

        def record(_mod, args):
            if torch.is_grad_enabled():  # the optimisation steps, not the shape probe
                x = args[0]
                seen.append((x.is_contiguous(memory_format=torch.channels_last),
                             x.is_contiguous()))

        resolved.module.conv1.register_forward_pre_hook(record)
        return resolved

    real_resolve = hwprune.synth.run.resolve_model
    monkeypatch.setattr(hwprune.synth.run, "resolve_model", spy)
    args = ["synth", "resnet18", "--out", str(tmp_path / "o"), "--input-size", "32",
            "--n-images", "2", "--batch-size", "2", "--iterations", "3", "--device", device,
            "-q"] + (["--channels-last"] if channels_last else [])
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert seen == [(channels_last, not channels_last)] * 3
    fmt, other = torch.channels_last, torch.contiguous_format
    if not channels_last:
        fmt, other = other, fmt
    convs = [m for m in models[0].modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=fmt) for c in convs)
    # (1x1 kernels are both at once; the 7x7 stem tells the formats apart)
    assert not models[0].conv1.weight.is_contiguous(memory_format=other)


def test_rank_device():
    torchrun = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}
    assert rank_device("cuda", torchrun) == "cuda:1"
    assert rank_device("cpu", torchrun) == "cpu"
    assert rank_device("cuda", {}) == "cuda"  # a single process keeps torch's current device
    assert rank_device("cuda", {"WORLD_SIZE": "1", "LOCAL_RANK": "0"}) == "cuda"
    assert rank_device("cuda:2", torchrun) == "cuda:2"  # an explicit index wins


@pytest.mark.gpu
def test_a_rank_without_its_own_gpu_is_refused(teacher_ckpt, tmp_path, monkeypatch):
    n = torch.cuda.device_count()
    monkeypatch.setenv("WORLD_SIZE", str(n + 1))
    monkeypatch.setenv("RANK", str(n))
    monkeypatch.setenv("LOCAL_RANK", str(n))
    with pytest.raises(SynthError, match=f"rank wants cuda:{n}"):
        synthesize(SynthConfig(str(teacher_ckpt), tmp_path / "o", 2, 2,
                               PRESETS["demo"].with_(iterations=2), device="cuda",
                               progress=False))
