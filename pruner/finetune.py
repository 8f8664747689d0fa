"""Fine-tuning the pruned student by distillation from the teacher (or cross-entropy when
labelled data is given), with per-epoch checkpoints, resume, and DDP under torchrun."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from hwprune.profiler.table import atomic_write_bytes
from hwprune.profiler.timing import cudnn_benchmark as hold_cudnn_benchmark  # the plain name is an argument below
from hwprune.pruner.data import ImageSet
from hwprune.pruner.schedule import kd_loss


@dataclass
class FineTuneConfig:
    epochs: int = 15                   # paper's ablation: 15 epochs, lr decayed at epoch 10
    lr: float = 0.01
    milestones: tuple[int, ...] = (10,)
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4         # paper silent; the usual ResNet value
    batch_size: int = 64               # paper 256 on ImageNet
    temperature: float = 5.0
    loss: str = "kl"
    shift: int = 0
    flip: bool = False
    seed: int = 0

    def lr_at(self, epoch: int) -> float:
        return self.lr * self.gamma ** sum(1 for m in self.milestones if epoch >= m)


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` through a temp file and a rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def finetune(student: nn.Module, teacher: nn.Module, data: ImageSet, cfg: FineTuneConfig,
             checkpoint: Path | None = None,
             on_epoch: Callable[[dict], None] | None = None,
             cudnn_benchmark: bool = False) -> list[dict]:
    """Train ``student`` for ``cfg.epochs``; resumes from ``checkpoint`` when it exists.

    Returns the per-epoch history (epoch, lr, mean loss). Under ``torch.distributed`` the
    student is wrapped in DistributedDataParallel and each rank takes a share of every epoch.
    ``torch.backends.cudnn.benchmark`` is held at ``cudnn_benchmark`` (default False: cuDNN
    picks by heuristics, reproducibly) while training, and restored afterwards.
    """
    rank, world = _dist()
    device = next(student.parameters()).device
    opt = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    history: list[dict] = []
    start = 0
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        student.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history, start = list(state["history"]), int(state["epoch"])
    if cfg.loss == "ce" and data.labels is None:
        raise ValueError(f"{data.source}: cross-entropy fine-tuning needs labelled images")
    net = nn.parallel.DistributedDataParallel(student) if world > 1 else student
    teacher.eval()
    with hold_cudnn_benchmark(cudnn_benchmark):
        for epoch in range(start, cfg.epochs):
            for g in opt.param_groups:
                g["lr"] = cfg.lr_at(epoch)
            student.train()
            losses = []
            for x, y in data.epoch(cfg.batch_size, cfg.seed * 1_000_003 + epoch, rank, world,
                                   cfg.shift, cfg.flip):
                x, y = x.to(device), (y.to(device) if y is not None else None)
                out = net(x)
                if cfg.loss == "ce":
                    loss = F.cross_entropy(out, y)
                else:
                    with torch.no_grad():
                        t_out = teacher(x)
                    loss = kd_loss(out, t_out, cfg.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            history.append({"epoch": epoch + 1, "lr": cfg.lr_at(epoch),
                            "loss": float(np.mean(losses)) if losses else float("nan")})
            if checkpoint is not None and rank == 0:
                atomic_save({"epoch": epoch + 1, "model": student.state_dict(),
                             "optimizer": opt.state_dict(), "history": history}, checkpoint)
            if world > 1:
                dist.barrier()
            if on_epoch:
                on_epoch(history[-1])
    student.eval()
    return history


__all__ = ["FineTuneConfig", "finetune", "atomic_save"]
