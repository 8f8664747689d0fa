"""Where synthesized images go: an ImageFolder tree of PNGs, tensor shards, a preview, a summary.

Layout of an output directory::

    images/<class>/b00003-007.png     one PNG per image (torchvision ImageFolder reads it)
    batches/batch-00003.pt            images, targets, teacher logits, loss history
    synthetic.pt                      every batch joined (written when the run completes)
    preview.png, summary.json

A batch counts as done once its ``batches/`` file exists: the PNGs are written
first, each atomically, and the tensor file last. On resume, PNGs of a batch
without its tensor file (a run killed half-way) are deleted and the batch is
made again; with the same seed it comes out identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hwprune.profiler.table import atomic_write_bytes


def _save(obj, path: Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


class DatasetWriter:
    def __init__(self, out: str | Path, mean, std) -> None:
        self.out = Path(out)
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    @property
    def batch_dir(self) -> Path:
        return self.out / "batches"

    def batch_path(self, b: int) -> Path:
        return self.batch_dir / f"batch-{b:05d}.pt"

    def done_batches(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.batch_dir.glob("batch-*.pt")}

    def drop_partial(self) -> int:
        """Delete PNGs of batches that never got their tensor file; return how many."""
        done = self.done_batches()
        stale = [p for p in (self.out / "images").glob("*/b*.png")
                 if int(p.name[1:6]) not in done]
        for p in stale:
            p.unlink()
        for p in self.out.rglob(".*.tmp"):
            p.unlink()
        return len(stale)

    def damaged_batch(self) -> str | None:
        """The first finished batch file that cannot be read back as one (why, with its
        path), or None. A resumed run checks before making any image: otherwise a damaged
        file surfaces only when the finished run joins every batch."""
        for b in sorted(self.done_batches()):
            path = self.batch_path(b)
            try:
                part = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # torch raises many types for a damaged file
                return f"{path} is damaged ({type(exc).__name__})"
            images = part.get("images") if isinstance(part, dict) else None
            targets = part.get("targets") if isinstance(part, dict) else None
            logits = part.get("logits") if isinstance(part, dict) else None
            if not (isinstance(images, torch.Tensor) and images.dim() == 4
                    and isinstance(targets, torch.Tensor) and targets.shape == images.shape[:1]
                    and isinstance(logits, torch.Tensor) and logits.dim() == 2
                    and len(logits) == len(images) and isinstance(part.get("history"), dict)):
                return f"{path} does not hold a batch (images, targets, logits, history)"
            if not bool(torch.isfinite(images).all()):
                return f"{path} holds NaN or infinite images"
        return None

    def to_pixels(self, images: torch.Tensor) -> torch.Tensor:
        return (images * self.std + self.mean).clamp(0, 1)

    def write_batch(self, b: int, images: torch.Tensor, targets: torch.Tensor,
                    logits: torch.Tensor, history: dict) -> None:
        from torchvision.utils import save_image

        pixels = self.to_pixels(images)
        for i, (img, y) in enumerate(zip(pixels, targets.tolist())):
            path = self.out / "images" / f"{y:03d}" / f"b{b:05d}-{i:03d}.png"
            atomic_write_bytes(path, lambda f, img=img: save_image(img, f, format="png"))
        _save({"images": images, "targets": targets, "logits": logits, "history": history},
              self.batch_path(b))

    def load_all(self) -> dict:
        parts = [torch.load(self.batch_path(b), weights_only=True)
                 for b in sorted(self.done_batches())]
        return {k: torch.cat([p[k] for p in parts]) for k in ("images", "targets", "logits")} \
            | {"histories": [p["history"] for p in parts]}

    def finish(self, meta: dict) -> dict:
        """Join every batch into synthetic.pt, draw preview.png, write summary.json."""
        from torchvision.utils import save_image

        data = self.load_all()
        _save({k: data[k] for k in ("images", "targets", "logits")}, self.out / "synthetic.pt")
        order = torch.argsort(data["targets"], stable=True)[:100]
        atomic_write_bytes(self.out / "preview.png", lambda f: save_image(
            self.to_pixels(data["images"][order]), f, nrow=10, padding=1, format="png"))
        summary = {**meta, **summarize(data)}
        atomic_write_bytes(self.out / "summary.json",
                           lambda f: f.write(json.dumps(summary, indent=1).encode()))
        return summary


def summarize(data: dict) -> dict:
    probs = data["logits"].softmax(1)
    targets = data["targets"]
    hit = probs.argmax(1) == targets
    per_class = {}
    for c in sorted(set(targets.tolist())):
        sel = targets == c
        per_class[str(c)] = {"n": int(sel.sum()), "teacher_top1": float(hit[sel].float().mean()),
                             "teacher_confidence": float(probs[sel, c].mean())}
    hist = data["histories"]
    curve = {}
    if hist:
        for k in hist[0]:
            if k != "step":
                n = min(len(h[k]) for h in hist)
                curve[k] = [sum(h[k][i] for h in hist) / len(hist) for i in range(n)]
        curve["step"] = hist[0]["step"][:len(curve.get("total", []))]
    return {"n_images": int(len(targets)), "teacher_top1": float(hit.float().mean()),
            "per_class": per_class, "loss_curve_mean_over_batches": curve}
