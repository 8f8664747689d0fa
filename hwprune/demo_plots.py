"""The demo's pictures: accuracy against measured latency, and synthesized next to real digits."""

from __future__ import annotations

from pathlib import Path

import torch

from hwprune.profiler.table import atomic_write_bytes


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    _plt().close(fig)
    return path


def plot_accuracy_latency(result: dict, path: Path) -> Path:
    """Accuracy on the real held-out digits against measured latency, one line per criterion."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    labels = {"taylor-latency": "hardware-aware (eta > 0)", "taylor": "latency-blind (eta = 0)"}
    for crit, marker in (("taylor-latency", "o-"), ("taylor", "s--")):
        rows = sorted((r for r in result["rows"] if r["criterion"] == crit and "error" not in r),
                      key=lambda r: r["measured_ms"])
        ax.plot([r["measured_ms"] for r in rows], [100 * r["accuracy"] for r in rows], marker,
                label=labels[crit])
    ax.plot([result["teacher_ms"]], [100 * result["teacher_acc"]], "k*", ms=12,
            label="teacher")
    for b in sorted({r["budget"] for r in result["rows"]}):
        ax.axvline(b * result["teacher_ms"], color="grey", lw=0.8, ls=":")
    ax.set(xlabel="measured latency, batch 1 (ms)", ylabel="accuracy on real held-out digits (%)",
           title="Pruned to 70/50/35% of the teacher's latency (dotted)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_images(synthetic: Path, data, path: Path, per_class: int = 4) -> Path:
    """Left: DeepInversion images (from the teacher alone); right: real digits, by class."""
    plt = _plt()
    syn = torch.load(synthetic, map_location="cpu", weights_only=True)
    fig, axes = plt.subplots(per_class, 20, figsize=(12, 0.65 * per_class + 0.6))
    for c in range(10):
        fake = syn["images"][syn["targets"] == c][:per_class]
        real = data.x_test[data.y_test == c][:per_class]
        for i in range(per_class):
            for col, imgs in ((c, fake), (10 + c, real)):
                ax = axes[i, col]
                ax.axis("off")
                if i < len(imgs):
                    ax.imshow(imgs[i, 0].numpy(), cmap="gray")
                if i == 0:
                    ax.set_title(str(c), fontsize=8)
    fig.suptitle("synthesized by DeepInversion (left) | real held-out digits (right)",
                 fontsize=10)
    return _save(fig, path)


__all__ = ["plot_accuracy_latency", "plot_images"]
