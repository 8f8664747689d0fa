"""DeepInversion's loss terms (Yin et al., CVPR 2020): BatchNorm statistics, image priors,
and the Adaptive DeepInversion competition term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BNStatsHook:
    """On every forward of a BatchNorm2d: distance of the batch's statistics of its input to
    the layer's running statistics, ||mu - mu_bn||_2 + ||var - var_bn||_2 (paper Eq. 4)."""

    def __init__(self, bn: nn.BatchNorm2d, target_mean: torch.Tensor | None = None,
                 target_var: torch.Tensor | None = None) -> None:
        self.bn = bn
        self.target_mean = target_mean if target_mean is not None else bn.running_mean
        self.target_var = target_var if target_var is not None else bn.running_var
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None
        self.handle = bn.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        x = inputs[0]
        # One fused pass over (N, H, W); biased variance, as BatchNorm normalises with.
        var, mean = torch.var_mean(x.float(), dim=(0, 2, 3), unbiased=False)
        self.mean, self.var = mean, var
        self.loss = torch.linalg.vector_norm(mean - self.target_mean, 2) + \
            torch.linalg.vector_norm(var - self.target_var, 2)

    def remove(self) -> None:
        self.handle.remove()


def _shift_diffs(x: torch.Tensor) -> list[torch.Tensor]:
    """Differences between the image and its one-pixel shifts: horizontal, vertical, two diagonals."""
    return [x[:, :, :, :-1] - x[:, :, :, 1:],
            x[:, :, :-1, :] - x[:, :, 1:, :],
            x[:, :, 1:, :-1] - x[:, :, :-1, 1:],
            x[:, :, :-1, :-1] - x[:, :, 1:, 1:]]


def tv_l2(x: torch.Tensor) -> torch.Tensor:
    """Sum of the l2 norms of the four shift differences."""
    return sum(torch.linalg.vector_norm(d) for d in _shift_diffs(x))


def tv_l1(x: torch.Tensor) -> torch.Tensor:
    """Sum of the mean absolute values of the four shift differences."""
    return sum(d.abs().mean() for d in _shift_diffs(x))


def l2_prior(x: torch.Tensor) -> torch.Tensor:
    """l2 norm of each image, averaged over the batch."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1).mean()


def js_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor,
                  temperature: float = 3.0) -> torch.Tensor:
    """Jensen-Shannon divergence of two softened output distributions, averaged over the batch
    (natural log, so it lies in [0, ln 2])."""
    p = F.softmax(logits_p / temperature, dim=1)
    q = F.softmax(logits_q / temperature, dim=1)
    m = (0.5 * (p + q)).clamp_min(1e-12)
    kl_pm = (p * (p.clamp_min(1e-12).log() - m.log())).sum(1)
    kl_qm = (q * (q.clamp_min(1e-12).log() - m.log())).sum(1)
    return (0.5 * (kl_pm + kl_qm)).mean()


def competition(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                temperature: float = 3.0) -> torch.Tensor:
    """Adaptive DeepInversion: 1 - JS(teacher, student), low where the two disagree."""
    return 1.0 - js_divergence(teacher_logits, student_logits, temperature).clamp(0.0, 1.0)
