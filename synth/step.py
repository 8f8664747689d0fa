"""One optimisation step of the image batch: backward, Adam, clipping to the pixel range.

Under fp16 autocast the backward is loss-scaled. The BatchNorm-statistics term
reaches each conv output as d||mu - mu_bn|| / dx = O(alpha_f / (N * H * W)): with
the kt preset (alpha_f 0.01) at batch 128 and 224 px most of it lies below 6e-8,
fp16's smallest subnormal, and the cast of the gradient back to fp16 flushes it to
zero. Multiplying the loss by a large factor before the backward (and dividing the
fp32 image gradient by it afterwards) keeps those gradients representable; the
factor is adapted as in the reference implementation's dynamic loss scaling
(APEX): halved and the step skipped when a gradient overflows, doubled after
``growth_interval`` clean steps. bf16 has fp32's exponent range and fp32 needs no
help, so both run unscaled.
"""

from __future__ import annotations

import torch

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def autocast_dtype(amp: str) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting ("none", "fp16", "bf16"); None: fp32."""
    if amp != "none" and amp not in AMP_DTYPES:
        raise ValueError(f"amp must be none, fp16 or bf16, not {amp!r}")
    return AMP_DTYPES.get(amp)


class ImageStepper:
    """Adam on the image tensor (reset per resolution phase) with loss scaling under fp16.

    ``skipped`` counts steps the scaler dropped because a scaled gradient overflowed;
    the image is left as it was on those (no Adam update, nothing to clip).
    """

    def __init__(self, device_type: str, amp: str, lr: float, bounds: tuple | None,
                 init_scale: float = 2.0 ** 16, growth_interval: int = 2000) -> None:
        autocast_dtype(amp)
        self.lr = lr
        self.bounds = bounds  # (lo, hi) tensors, or None: no clipping
        # One scaler per batch: the scale found in a low-resolution phase carries over to
        # the next, and no state crosses batches, so a resumed run redoes a batch exactly.
        self.scaler = torch.amp.GradScaler(device_type, init_scale=init_scale,
                                           growth_interval=growth_interval,
                                           enabled=amp == "fp16")
        self.skipped = 0
        self.x: torch.Tensor | None = None
        self.opt: torch.optim.Optimizer | None = None

    @property
    def scaling(self) -> bool:
        return self.scaler.is_enabled()

    @property
    def scale(self) -> float:
        """The factor the next backward multiplies the loss by (1.0 when not scaling)."""
        return self.scaler.get_scale() if self.scaling else 1.0

    def start_phase(self, x: torch.Tensor) -> None:
        """Optimise leaf tensor ``x`` from here on, with fresh Adam moments."""
        self.x = x
        self.opt = torch.optim.Adam([x], lr=self.lr, betas=(0.9, 0.999), eps=1e-8)

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def step(self, loss: torch.Tensor) -> bool:
        """Backward of the (unscaled) ``loss``, then update and clip ``x``; False if skipped.

        Afterwards ``x.grad`` holds the true, unscaled gradient of ``loss``.
        """
        self.opt.zero_grad(set_to_none=True)
        # Disabled (fp32, bf16), scale() returns the loss itself and step() is a plain
        # opt.step(): those runs are bit-identical to an unscaled loop.
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)  # unscales x.grad; skips the update on inf/nan
        applied = True
        if self.scaling:
            before = self.scaler.get_scale()
            self.scaler.update()
            # update() lowers the scale exactly when this step found an overflow.
            applied = self.scaler.get_scale() >= before
            self.skipped += not applied
        if applied and self.bounds is not None:
            lo, hi = self.bounds
            with torch.no_grad():
                self.x.copy_(torch.maximum(torch.minimum(self.x, hi), lo))
        return applied
