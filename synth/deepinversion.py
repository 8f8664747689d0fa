"""The DeepInversion optimisation loop: images from noise, from the teacher alone.

minimise  alpha_ce * CE(teacher(x), y) + alpha_f * sum_l w_l * R_feature_l(x)
          + alpha_tv_l2 * TV_l2(x) + alpha_tv_l1 * TV_l1(x) + alpha_l2 * ||x||_2
          [+ adi_scale * (1 - JS(teacher(x), student(x)))]

with random jitter and horizontal flips at every step, Adam (0.9, 0.999, 1e-8)
and clipping to the valid pixel range of the normalised input (paper Eq. 16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hwprune.errors import HwpruneError
from hwprune.sizes import Size, hw
from hwprune.synth.losses import BNStatsHook, competition, l2_prior, tv_l1, tv_l2
from hwprune.synth.step import ImageStepper, autocast_dtype
from hwprune.zoo.models import set_training

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SynthError(HwpruneError):
    """Synthesis cannot run as asked (no BatchNorm and no real images, bad classes, ...)."""


@dataclass
class DIConfig:
    """One DeepInversion recipe. Defaults: the paper's knowledge-transfer setting."""

    iterations: int = 2000          # at full resolution
    lr: float = 0.2
    lr_schedule: str = "constant"   # or "cosine"
    alpha_ce: float = 1.0
    alpha_f: float = 0.01           # BatchNorm-statistics (feature) loss
    first_bn_multiplier: float = 10.0  # the first BN layer weighted more (reference code)
    alpha_tv_l2: float = 1e-4
    alpha_tv_l1: float = 0.0
    alpha_l2: float = 1e-5
    adi_scale: float = 0.0          # > 0: Adaptive DeepInversion against a student
    adi_temperature: float = 3.0
    jitter: int = 30                # max random shift in px at full resolution
    flip: bool = True
    clip: bool = True
    low_res_iterations: int = 0     # multi-resolution: first optimise at size / low_res_factor
    low_res_factor: int = 2
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    amp: str = "none"               # "fp16" / "bf16": the teacher under autocast (cpu or cuda)
    loss_scale: float = 2.0 ** 16   # fp16 only: initial dynamic loss scale (synth/step.py)
    channels_last: bool = False     # images (and, in synthesize(), the teacher) in NHWC
    log_every: int = 0              # 0: about 50 points per phase

    def with_(self, **kw) -> "DIConfig":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


PRESETS: dict[str, DIConfig] = {
    # ImageNet at 224 px, lr 0.05, 2k iterations at full resolution.
    "imagenet": DIConfig(lr=0.05),
    # Knowledge-transfer setting: lr 0.2, alpha_tv 1e-4, alpha_f 0.01, clipping.
    "kt": DIConfig(),
    # Multi-resolution: 2k iterations at half resolution, upsample, 1k at full resolution.
    "multires": DIConfig(low_res_iterations=2000, iterations=1000),
    # Full resolution for 2k iterations (mixed with multi-resolution images for diversity).
    "fullres": DIConfig(iterations=2000),
    # The embedded digits net at 32 px: small shifts, fewer steps, stronger BN matching.
    # No flips: a mirrored digit is another symbol.
    "demo": DIConfig(iterations=300, lr=0.1, jitter=2, flip=False, alpha_f=1.0, alpha_tv_l2=1e-3,
                     first_bn_multiplier=1.0, mean=(0.3053,), std=(0.3236,)),
}


@dataclass
class FeatureTarget:
    module: nn.Module
    mean: torch.Tensor | None = None  # None: the BatchNorm's running statistics
    var: torch.Tensor | None = None


@dataclass
class BatchResult:
    images: torch.Tensor     # normalised, clipped, (N, C, H, W) on CPU
    targets: torch.Tensor
    logits: torch.Tensor     # teacher's outputs on the final images
    history: dict[str, list[float]] = field(default_factory=dict)


def bn_targets(model: nn.Module) -> list[FeatureTarget]:
    targets = [FeatureTarget(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not targets:
        raise SynthError("the model has no BatchNorm2d layer: give real images so feature "
                         "statistics can be measured instead")
    return targets


@torch.no_grad()
def real_feature_targets(model: nn.Module, images: torch.Tensor,
                         batch: int = 64) -> list[FeatureTarget]:
    """Per-channel mean and variance of the input of every BatchNorm (or, without BN, every
    conv after the first) measured on real images (paper Table 8)."""
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not layers:
        layers = [m for m in model.modules() if isinstance(m, nn.Conv2d)][1:]
    if not layers:
        raise SynthError("the model has neither BatchNorm2d nor a second Conv2d to match")
    sums = {id(m): [0.0, 0.0, 0] for m in layers}

    def hook(m, inputs, _out):
        x = inputs[0].float()
        s = sums[id(m)]
        s[0] = s[0] + x.sum((0, 2, 3))
        s[1] = s[1] + (x * x).sum((0, 2, 3))
        s[2] += x.numel() // x.shape[1]

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        for i in range(0, len(images), batch):
            model(images[i:i + batch])
    finally:
        for h in handles:
            h.remove()
    out = []
    for m in layers:
        total, sq, n = sums[id(m)]
        mean = total / n
        out.append(FeatureTarget(m, mean, (sq / n - mean * mean).clamp_min(0)))
    return out


def pixel_bounds(cfg: DIConfig, channels: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of the normalised input that correspond to pixel values 0 and 1 (paper Eq. 16)."""
    mean = torch.tensor(cfg.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std, device=device).view(1, -1, 1, 1)
    if mean.shape[1] != channels:
        raise SynthError(f"mean/std have {mean.shape[1]} channels, the model takes {channels}")
    return (0 - mean) / std, (1 - mean) / std


def synthesize_batch(teacher: nn.Module, targets: torch.Tensor, cfg: DIConfig, size: Size,
                     channels: int, generator: torch.Generator,
                     features: list[FeatureTarget] | None = None,
                     student: nn.Module | None = None,
                     on_step: Callable[[int, int], None] | None = None) -> BatchResult:
    """Optimise ``len(targets)`` images of class ``targets`` from N(0, 1) noise (see
    ``_synthesize_batch``). Only the images get gradients: the networks' parameters are
    frozen for the call and left as found. Besides saving their gradients, this keeps
    tensors that a model caches from its parameters in eval mode (timm's LeViT and
    EfficientFormer-V2 attention biases) free of a graph that the next step's backward
    would find already freed."""
    nets = [teacher] + ([student] if student is not None else [])
    trainable = [p for net in nets for p in net.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        return _synthesize_batch(teacher, targets, cfg, size, channels, generator, features,
                                 student, on_step)
    finally:
        for p in trainable:
            p.requires_grad_(True)


def _synthesize_batch(teacher: nn.Module, targets: torch.Tensor, cfg: DIConfig, size: Size,
                      channels: int, generator: torch.Generator,
                      features: list[FeatureTarget] | None = None,
                      student: nn.Module | None = None,
                      on_step: Callable[[int, int], None] | None = None) -> BatchResult:
    """Optimise ``len(targets)`` images of class ``targets`` from N(0, 1) noise, at ``size``
    (a side, or (height, width)).

    With ``cfg.channels_last`` the images are kept in NHWC at every step; convert the
    teacher too (``synthesize`` does) so its convolutions need not reorder weights.
    ``history`` holds unscaled losses; under fp16 also ``loss_scale`` and the running
    count of ``skipped`` (overflowed) steps.
    """
    device = next(teacher.parameters()).device
    set_training(teacher, False)  # BN must use, not update, its running statistics
    hooks = [BNStatsHook(f.module, f.mean, f.var) for f in (features or bn_targets(teacher))]
    weights = [cfg.first_bn_multiplier] + [1.0] * (len(hooks) - 1)
    lo, hi = pixel_bounds(cfg, channels, device)
    targets = targets.to(device)
    full = hw(size)
    low = tuple(max(1, s // cfg.low_res_factor) for s in full)
    phases = [(low, cfg.low_res_iterations)] if cfg.low_res_iterations else []
    phases.append((full, cfg.iterations))
    total_steps = sum(n for _, n in phases)
    history: dict[str, list[float]] = {k: [] for k in ("step", "total", "ce", "bn", "tv_l2",
                                                       "l2", "adi")}
    x = torch.randn(len(targets), channels, *phases[0][0], generator=generator)
    stepper = ImageStepper(device.type, cfg.amp, cfg.lr, (lo, hi) if cfg.clip else None,
                           cfg.loss_scale)
    if stepper.scaling:  # so a run shows the scale it settled on and any dropped steps
        history.update(loss_scale=[], skipped=[])
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    step = 0
    try:
        for res, iters in phases:
            x = x.to(device)
            if tuple(x.shape[-2:]) != res:
                x = F.interpolate(x, size=res, mode="bilinear", align_corners=False)
            x = x.contiguous(memory_format=layout).detach().requires_grad_(True)
            stepper.start_phase(x)
            jitter = max(0, round(cfg.jitter * max(res) / max(full)))
            every = cfg.log_every or max(1, iters // 50)
            for it in range(iters):
                if cfg.lr_schedule == "cosine":
                    stepper.set_lr(0.5 * cfg.lr * (1 + math.cos(math.pi * it / iters)))
                shift = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
                flip = cfg.flip and bool(torch.rand((), generator=generator) < 0.5)
                xj = torch.roll(x, shifts=shift, dims=(2, 3))
                if flip:
                    xj = xj.flip(3)
                # CUDA's roll writes a contiguous tensor whatever its input's layout.
                xj = xj.contiguous(memory_format=layout)
                terms = _losses(teacher, xj, targets, hooks, weights, cfg, student)
                scale = stepper.scale
                stepper.step(terms["total"])
                if it % every == 0 or it == iters - 1:
                    history["step"].append(step)
                    for k in ("total", "ce", "bn", "tv_l2", "l2", "adi"):
                        history[k].append(float(terms[k].detach()))  # unscaled
                    if stepper.scaling:
                        history["loss_scale"].append(scale)
                        history["skipped"].append(stepper.skipped)
                step += 1  # a skipped step still counts: iterations are a budget
                if on_step:
                    on_step(step, total_steps)
        with torch.no_grad():
            logits = teacher(x)
    finally:
        for h in hooks:
            h.remove()
    return BatchResult(x.detach().float().contiguous().cpu(), targets.cpu(),
                       logits.float().cpu(), history)


def _losses(teacher, xj, targets, hooks, weights, cfg: DIConfig, student) -> dict:
    dtype = autocast_dtype(cfg.amp)
    with torch.autocast(xj.device.type, dtype=dtype, enabled=dtype is not None):
        logits = teacher(xj)
    ce = F.cross_entropy(logits.float(), targets)
    bn = sum(w * h.loss for w, h in zip(weights, hooks))
    tv = tv_l2(xj)
    l2 = l2_prior(xj)
    total = cfg.alpha_ce * ce + cfg.alpha_f * bn + cfg.alpha_tv_l2 * tv + cfg.alpha_l2 * l2
    if cfg.alpha_tv_l1:
        total = total + cfg.alpha_tv_l1 * tv_l1(xj)
    adi = torch.zeros(())
    if cfg.adi_scale and student is not None:
        adi = competition(logits.float(), student(xj).float(), cfg.adi_temperature)
        total = total + cfg.adi_scale * adi
    return {"total": total, "ce": ce.detach(), "bn": bn.detach(), "tv_l2": tv.detach(),
            "l2": l2.detach(), "adi": adi.detach()}
