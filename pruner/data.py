"""Where the pruner's images come from: a synthesized dataset (``hwprune synth`` output), a
tensor file, an ImageFolder directory, or an embedded task; and held-out data to evaluate.

Minibatches are drawn by a generator seeded from (seed, step, rank), so a resumed run
sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from hwprune.errors import HwpruneError
from hwprune.sizes import Size, hw


class DataError(HwpruneError):
    """Training or validation data cannot be used."""


@dataclass
class ImageSet:
    """Images in memory (already normalised for the model) and labels when known."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    source: str = ""
    n_logits: int | None = None  # classes of the teacher that made a synthesized set

    def check_classes(self, classes: int | None, model: str) -> None:
        """Refuse data whose classes the model does not have (before any work: later it
        is an index error deep in a loss, or a silently wrong accuracy)."""
        if classes is None:
            return
        if self.n_logits is not None and self.n_logits != classes:
            raise DataError(f"{self.source}: made by a teacher with {self.n_logits} classes, "
                            f"{model} has {classes}")
        if self.labels is not None and len(self.labels):
            lo, hi = int(self.labels.min()), int(self.labels.max())
            if lo < 0 or hi >= classes:
                raise DataError(f"{self.source}: class id {hi if hi >= classes else lo} is "
                                f"outside {model}'s {classes} classes")

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, n: int, batch_size: int, seed: int, shift: int = 0,
                flip: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """``n`` random minibatches, with optional random shifts (px) and horizontal flips."""
        gen = torch.Generator().manual_seed(seed)
        for _ in range(n):
            idx = torch.randint(len(self.images), (min(batch_size, len(self.images)),),
                                generator=gen)
            x = _augment(self.images[idx], gen, shift, flip)
            yield x, (self.labels[idx] if self.labels is not None else None)

    def epoch(self, batch_size: int, seed: int, rank: int = 0, world: int = 1,
              shift: int = 0, flip: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """One pass in a seeded order; under ``torch.distributed`` each rank takes its share."""
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self.images), generator=gen)
        # Every rank gets the same number of batches, or DDP's all-reduce would wait forever.
        order = order[:len(order) // world * world][rank::world]
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            x = _augment(self.images[idx], gen, shift, flip)
            yield x, (self.labels[idx] if self.labels is not None else None)


def _augment(x: torch.Tensor, gen: torch.Generator, shift: int, flip: bool) -> torch.Tensor:
    """One random shift (px, wrapping) and optionally a horizontal flip for the whole batch."""
    if shift:
        dx, dy = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=gen))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if flip and bool(torch.randint(2, (1,), generator=gen)):
        x = torch.flip(x, dims=(3,))
    return x


def load_images(spec: "str | ImageSet", input_size: Size, mean=None, std=None) -> ImageSet:
    """Images from ``spec``: an embedded task's train split ('digits', 'mnist5k') or held-out
    split ('digits-test', 'mnist5k-test'), a synth output directory or tensor file
    (``synthetic.pt``), an ImageFolder directory of real images, or an ImageSet already in
    memory (returned as it is)."""
    from hwprune.zoo.tasks import TASKS, load_task

    if isinstance(spec, ImageSet):
        return spec
    # Task names are strings (seed 0's split); a Path is always a file or directory
    task = spec.removesuffix("-test") if isinstance(spec, str) else None
    if task in TASKS:
        d = load_task(task, size=input_size)
        return (ImageSet(d.x_train, d.y_train, f"{task} train split") if spec == task
                else ImageSet(d.x_test, d.y_test, f"{task} held-out split"))
    path = Path(spec)
    if path.is_dir() and (path / "synthetic.pt").is_file():
        path = path / "synthetic.pt"
    if path.is_file():
        return _tensor_file(path)
    if path.is_dir():
        return _image_folder(path, input_size, mean, std)
    raise DataError(f"data '{spec}' is neither an embedded task ({', '.join(TASKS)}), a synth "
                    f"output, a tensor file nor a directory")


def _tensor_file(path: Path) -> ImageSet:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"cannot read '{path}' as a weights-only tensor file: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), torch.Tensor):
        raise DataError(f"'{path}' holds no 'images' tensor (expected hwprune synth output)")
    images = data["images"].float()
    if images.dim() != 4 or len(images) == 0:
        raise DataError(f"'{path}': images must be a non-empty N x C x H x W tensor")
    if not bool(torch.isfinite(images).all()):
        raise DataError(f"'{path}': images hold NaN or infinite values")
    labels = data.get("targets", data.get("labels"))
    if labels is not None and not (isinstance(labels, torch.Tensor) and labels.dim() == 1
                                   and not labels.is_floating_point()
                                   and len(labels) == len(images)):
        raise DataError(f"'{path}': targets must be {len(images)} integer class ids, one per "
                        f"image")
    logits = data.get("logits")
    if logits is not None and not (isinstance(logits, torch.Tensor) and logits.dim() == 2
                                   and len(logits) == len(images)):
        raise DataError(f"'{path}': logits must be {len(images)} x classes")
    summary = path.parent / "summary.json"
    if path.name == "synthetic.pt" and summary.is_file():
        # The run's own record of what it wrote: a synthetic.pt from another run, or cut
        # short, disagrees with it.
        import json

        try:
            n = json.loads(summary.read_text()).get("n_images")
        except (ValueError, AttributeError):
            raise DataError(f"'{summary}' is not a synth summary (damaged JSON)") from None
        if n is not None and n != len(images):
            raise DataError(f"'{path}' holds {len(images)} images, its summary.json "
                            f"{n}: not the set that run wrote")
    return ImageSet(images, labels, str(path), None if logits is None else logits.shape[1])


def _image_folder(path: Path, size: Size, mean, std) -> ImageSet:
    from torchvision import datasets, transforms

    if not any(path.iterdir()):
        raise DataError(f"'{path}' is an empty directory: it holds no images")
    if (path / "config.json").is_file() and (path / "batches").is_dir():
        raise DataError(f"'{path}' holds an unfinished `hwprune synth` run (no synthetic.pt "
                        f"yet): finish it by rerunning the same synth command with --resume")
    # The shorter side to the longer of the two sides asked for, then the centre cut out:
    # a non-square input is cropped, never stretched.
    h, w = hw(size)
    tf = [transforms.Resize(max(h, w)), transforms.CenterCrop((h, w)), transforms.ToTensor()]
    if (mean is None) != (std is None):
        raise DataError("give both --mean and --std (or neither)")
    if mean is not None:
        tf.append(transforms.Normalize(mean, std))
    try:
        ds = datasets.ImageFolder(str(path), transform=transforms.Compose(tf))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"'{path}' is not a usable image directory: {exc}") from None
    if len(ds) == 0:
        raise DataError(f"'{path}' holds no images")
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return ImageSet(torch.stack(xs), torch.tensor(ys), str(path))


def evaluate(model: torch.nn.Module, data: ImageSet, batch: int = 256) -> float:
    """Top-1 accuracy on labelled data."""
    if data.labels is None:
        raise DataError(f"{data.source}: no labels to evaluate against")
    from hwprune.zoo import set_training

    was = model.training
    set_training(model, False)
    device = next(model.parameters()).device
    correct = 0
    with torch.no_grad():
        for i in range(0, len(data), batch):
            pred = model(data.images[i:i + batch].to(device)).argmax(1).cpu()
            correct += int((pred == data.labels[i:i + batch]).sum())
    set_training(model, was)
    return correct / len(data)


__all__ = ["DataError", "ImageSet", "load_images", "evaluate"]
