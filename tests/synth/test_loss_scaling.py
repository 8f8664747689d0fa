"""fp16 synthesis keeps the BatchNorm-statistics gradient only with loss scaling.

With the kt preset's alpha_f = 0.01 the BN term's gradient at each conv output is
O(alpha_f / (N * H * W)); at batch 128 and 64 px on the tiny net (as at batch 128
and 224 px on a ResNet) much of it lies below fp16's smallest subnormal (6e-8), so
an unscaled fp16 backward flushes it to zero.
"""

import pytest
import torch
import torch.nn.functional as F

from hwprune.synth import PRESETS, BNStatsHook, ImageStepper, bn_targets, synthesize_batch
from hwprune.synth.deepinversion import _losses
from tests.synth.nets import tiny_bn_net

# The BN term alone: CE and the image priors would hide what happens to it.
BN_ONLY = PRESETS["kt"].with_(alpha_ce=0.0, alpha_tv_l2=0.0, alpha_l2=0.0)


def _bn_grad(net, x0, device, amp, init_scale=2.0 ** 16):
    """Gradient of alpha_f * BN term w.r.t. the image, through ImageStepper as synthesis does."""
    hooks = [BNStatsHook(t.module) for t in bn_targets(net)]
    weights = [BN_ONLY.first_bn_multiplier] + [1.0] * (len(hooks) - 1)
    x = x0.clone().to(device).requires_grad_(True)
    stepper = ImageStepper(x.device.type, amp, lr=0.0, bounds=None, init_scale=init_scale)
    stepper.start_phase(x)
    targets = torch.zeros(len(x), dtype=torch.long, device=device)
    try:
        assert stepper.step(_losses(net, x, targets, hooks, weights, BN_ONLY.with_(amp=amp),
                                    None)["total"])
    finally:
        for h in hooks:
            h.remove()
    return x.grad.float().cpu()


def _compare(g, ref):
    return (F.cosine_similarity(g.flatten(), ref.flatten(), dim=0).item(),
            (g.norm() / ref.norm()).item(), (g == 0).float().mean().item())


def test_fp16_bn_gradient_is_close_to_fp32_only_with_loss_scaling(device):
    net = tiny_bn_net().to(device)
    x0 = torch.randn(128, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ref = _bn_grad(net, x0, device, "none")
    assert (ref == 0).float().mean() < 1e-3 and ref.abs().median() < 2e-7  # tiny, as in kt
    cos, ratio, zeros = _compare(_bn_grad(net, x0, device, "fp16"), ref)
    assert cos > 0.999 and abs(ratio - 1) < 0.01 and zeros < 1e-3, (cos, ratio, zeros)
    # init scale 1 (GradScaler grows it only after 2000 clean steps): the unscaled backward
    # as it was before loss scaling; measured cos 0.93, 16% zeros on the CPU.
    cos0, ratio0, zeros0 = _compare(_bn_grad(net, x0, device, "fp16", init_scale=1.0), ref)
    assert cos0 < 0.98 and zeros0 > 0.05, (cos0, ratio0, zeros0)
    # bf16 keeps fp32's exponent range: no scaler, and nothing is flushed.
    cos_bf, ratio_bf, zeros_bf = _compare(_bn_grad(net, x0, device, "bf16"), ref)
    assert cos_bf > 0.999 and abs(ratio_bf - 1) < 0.01 and zeros_bf < 1e-3


def test_only_fp16_is_scaled():
    assert [ImageStepper("cpu", amp, 0.1, None).scaling for amp in ("none", "bf16", "fp16")] \
        == [False, False, True]
    with pytest.raises(ValueError, match="amp must be"):
        ImageStepper("cpu", "fp8", 0.1, None)


def test_overflowed_steps_are_skipped_counted_and_leave_the_image(teacher_ckpt):
    from hwprune.zoo import resolve_model

    teacher = resolve_model(str(teacher_ckpt)).module
    for p in teacher.parameters():
        p.requires_grad_(False)
    # A start scale of 2^40 overflows fp16 at once: the scaler halves it and drops the
    # step until the scaled gradients fit (fp16 max 65504).
    cfg = PRESETS["demo"].with_(iterations=40, amp="fp16", loss_scale=2.0 ** 40, log_every=1)
    res = synthesize_batch(teacher, torch.arange(4), cfg, 32, 1,
                           torch.Generator().manual_seed(0))
    h = res.history
    assert h["step"] == list(range(40))  # every iteration is recorded, skipped or not
    skipped = h["skipped"][-1]
    assert 5 <= skipped < 40 and h["skipped"] == sorted(h["skipped"])
    assert h["loss_scale"][0] == 2.0 ** 40 and h["loss_scale"][-1] == 2.0 ** (40 - skipped)
    # recorded losses are the unscaled ones: the same size at the 2^40 start as at the end
    assert all(torch.isfinite(torch.tensor(h[k])).all() for k in ("total", "bn", "ce"))
    assert h["total"][0] < 1e3 and h["bn"][-1] < h["bn"][0]
    lo, hi = (0 - 0.3053) / 0.3236, (1 - 0.3053) / 0.3236
    assert torch.isfinite(res.images).all()
    assert res.images.min() >= lo - 1e-5 and res.images.max() <= hi + 1e-5


def test_a_skipped_step_leaves_the_image_untouched():
    net = tiny_bn_net()
    x = torch.randn(4, 3, 16, 16).requires_grad_(True)
    before = x.detach().clone()
    stepper = ImageStepper("cpu", "fp16", lr=0.1, bounds=(torch.tensor(-1.0), torch.tensor(1.0)),
                           init_scale=2.0 ** 40)
    stepper.start_phase(x)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = net(x).float().square().sum() * 1e3  # scaled: far past fp16's 65504
    assert not stepper.step(loss)
    assert stepper.skipped == 1 and stepper.scale == 2.0 ** 39
    assert torch.equal(x.detach(), before)  # neither moved by Adam nor clipped
    assert not stepper.opt.state  # Adam never stepped: its moments and step count are unborn
