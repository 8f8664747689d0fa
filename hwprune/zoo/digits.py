"""The embedded data set: scikit-learn's 8x8 digits (shipped inside scikit-learn, no download),
upsampled to the demo net's 32 px, and a small training loop for teachers and students."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hwprune.zoo.demo import DEMO_INPUT_SIZE
from hwprune.sizes import hw

# Statistics of the upsampled digits in [0, 1] (computed once from the whole set, so the
# normalisation is the same for every split; synthesis clips to this range).
DIGITS_MEAN = (0.3053,)
DIGITS_STD = (0.3236,)


@dataclass
class DigitsSplit:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits(size: "int | tuple[int, int]" = DEMO_INPUT_SIZE, test_fraction: float = 0.25,
                seed: int = 0) -> DigitsSplit:
    """Normalised digits at ``size`` (a side in px, or (height, width)), split into train and
    held-out test sets."""
    from sklearn.datasets import load_digits as _load

    data = _load()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=hw(size), mode="bilinear", align_corners=False).clamp(0, 1)
    x = (x - DIGITS_MEAN[0]) / DIGITS_STD[0]
    return split(x, torch.tensor(data.target, dtype=torch.long), test_fraction, seed)


def split(x: torch.Tensor, y: torch.Tensor, test_fraction: float, seed: int) -> DigitsSplit:
    """A seeded random split of (x, y) into train and held-out test sets."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return DigitsSplit(x[train], y[train], x[test], y[test])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    was = model.training
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    model.train(was)
    return float((pred == y).float().mean())


def _fit(model: nn.Module, x: torch.Tensor, loss_fn, epochs: int, lr: float, batch: int,
         seed: int, augment: bool) -> nn.Module:
    """SGD with momentum and a cosine schedule over shuffled minibatches, with small random
    shifts as augmentation; ``loss_fn(batch_images, batch_indices)`` gives the loss."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * -(-len(x) // batch))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            xb = x[idx]
            if augment:
                dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = loss_fn(xb, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 15,
                     lr: float = 0.05, batch: int = 64, seed: int = 0,
                     augment: bool = True) -> nn.Module:
    """Supervised training with cross-entropy on labelled images."""
    return _fit(model, x, lambda xb, idx: F.cross_entropy(model(xb), y[idx]), epochs, lr, batch,
                seed, augment)


def distill(student: nn.Module, teacher: nn.Module, x: torch.Tensor, epochs: int = 40,
            temperature: float = 4.0, lr: float = 0.05, batch: int = 64, seed: int = 0,
            augment: bool = True) -> nn.Module:
    """Train ``student`` to match ``teacher``'s softened outputs on ``x`` (no labels):
    KL(teacher || student) at ``temperature``, scaled by T^2 as usual."""
    teacher.eval()

    def kd(xb, _idx):
        with torch.no_grad():
            soft = F.softmax(teacher(xb) / temperature, dim=1)
        log_p = F.log_softmax(student(xb) / temperature, dim=1)
        return F.kl_div(log_p, soft, reduction="batchmean") * temperature ** 2

    return _fit(student, x, kd, epochs, lr, batch, seed, augment)


def digits_stats() -> tuple[float, float]:
    """Recompute the normalisation constants (for checking DIGITS_MEAN / DIGITS_STD)."""
    from sklearn.datasets import load_digits as _load

    x = torch.tensor(_load().images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(DEMO_INPUT_SIZE,) * 2, mode="bilinear", align_corners=False)
    x = x.clamp(0, 1)
    return float(x.mean()), float(x.std())


__all__ = ["DIGITS_MEAN", "DIGITS_STD", "DigitsSplit", "load_digits", "split", "accuracy",
           "train_classifier", "distill", "digits_stats"]
