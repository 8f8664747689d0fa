"""A synthesis run: teacher -> batches of DeepInversion images -> a dataset directory.

Resumable (finished batches are kept, a half-written one is redone identically),
repeatable (each batch's noise and jitter come from a generator seeded by
``seed`` and the batch number) and, under ``torchrun``, split by rank: rank r
makes batches r, r + W, ... into the same directory and rank 0 writes the
joined files once every rank is done.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from tqdm import tqdm

from hwprune.profiler.table import atomic_write_bytes
from hwprune.sizes import Size, canonical, hw, to_json
from hwprune.synth.dataset import DatasetWriter
from hwprune.synth.deepinversion import (PRESETS, DIConfig, FeatureTarget, SynthError, bn_targets,
                                 real_feature_targets, synthesize_batch)
from hwprune.zoo import model_label, resolve_model, set_training


@dataclass
class SynthConfig:
    model: str
    out: Path
    n_images: int = 64
    batch_size: int = 64
    di: DIConfig = field(default_factory=DIConfig)
    classes: Sequence[int] | None = None  # None: every class, balanced
    seed: int = 0
    resume: bool = False
    device: str = "cpu"
    input_size: Size | None = None        # a side or (height, width); default: the model's
    student: str | None = None            # for Adaptive DeepInversion (di.adi_scale > 0)
    real_images: str | None = None        # .pt tensor file: feature statistics from real data
    progress: bool = True


def _load_real(path: str) -> torch.Tensor:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SynthError(f"cannot read real images from '{path}': {exc}") from None
    images = obj.get("images") if isinstance(obj, dict) else obj
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise SynthError(f"'{path}' holds no (N, C, H, W) tensor of images")
    return images.float()


def _identity(cfg: SynthConfig) -> dict:
    return {"model": model_label(cfg.model), "n_images": cfg.n_images, "batch_size": cfg.batch_size,
            "classes": list(cfg.classes) if cfg.classes is not None else None,
            "seed": cfg.seed, "input_size": to_json(cfg.input_size) if cfg.input_size else None, "di": asdict(cfg.di),
            "student": cfg.student, "real_images": cfg.real_images}


def _prepare_out(cfg: SynthConfig) -> DatasetWriter:
    out = Path(cfg.out)
    config_file = out / "config.json"
    ident = json.loads(json.dumps(_identity(cfg)))  # tuples -> lists, as read back
    if out.exists() and any(out.iterdir()):
        if not cfg.resume:
            raise SynthError(f"output directory '{out}' is not empty: pass --resume to continue "
                             "the run in it, or choose another directory")
        saved = json.loads(config_file.read_text()) if config_file.exists() else None
        if saved is not None and isinstance(saved.get("di"), dict):
            # Recipe fields added since the run began read as their defaults (e.g. loss_scale).
            defaults = json.loads(json.dumps(asdict(DIConfig())))
            saved["di"] = {**defaults, **saved["di"]}
        if saved is not None and saved != ident:
            diff = [f"{k} {saved.get(k)!r} there, {ident.get(k)!r} now"
                    for k in sorted(set(saved) | set(ident)) if saved.get(k) != ident.get(k)]
            raise SynthError(f"'{out}' holds a run with other settings ({'; '.join(diff[:4])}); "
                             "resume with the same options plus --resume, or choose another "
                             "directory")
    out.mkdir(parents=True, exist_ok=True)
    if not config_file.exists():
        atomic_write_bytes(config_file, lambda f: f.write(json.dumps(ident, indent=1).encode()))
    return DatasetWriter(out, cfg.di.mean, cfg.di.std)


def targets_for(cfg: SynthConfig, num_classes: int) -> torch.Tensor:
    classes = list(range(num_classes)) if cfg.classes is None else list(cfg.classes)
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad or not classes:
        raise SynthError(f"class ids {bad or '[]'} are outside the model's {num_classes} outputs")
    return torch.tensor([classes[j % len(classes)] for j in range(cfg.n_images)])


def rank_device(device: str, env: Mapping[str, str]) -> str:
    """The device this process should use: under torchrun (``WORLD_SIZE`` > 1) a bare
    "cuda" becomes "cuda:LOCAL_RANK", one GPU per rank on each node; anything else as given."""
    if device == "cuda" and int(env.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(env.get('LOCAL_RANK', '0'))}"
    return device


def _to_device(module: torch.nn.Module, device: str, channels_last: bool) -> torch.nn.Module:
    module = module.to(device)
    if channels_last:  # NHWC weights, so convolutions on NHWC images need no reorder per call
        module = module.to(memory_format=torch.channels_last)
    return set_training(module, False)


def synthesize(cfg: SynthConfig) -> dict:
    """Make ``cfg.n_images`` images; returns the summary (also written to summary.json)."""
    if cfg.n_images < 1 or cfg.batch_size < 1:
        raise SynthError("n_images and batch_size must be at least 1")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise SynthError("--device cuda asked for, but torch sees no CUDA device here")
    device = rank_device(cfg.device, os.environ)
    if device.startswith("cuda:"):
        index = torch.device(device).index
        if index >= torch.cuda.device_count():
            raise SynthError(f"rank wants {device}, but torch sees {torch.cuda.device_count()} "
                             "CUDA device(s): start at most that many processes per node")
        torch.cuda.set_device(index)  # bare "cuda" allocations (autocast, scaler) go here too
    resolved = resolve_model(cfg.model)
    teacher = _to_device(resolved.module, device, cfg.di.channels_last)
    for p in teacher.parameters():
        p.requires_grad_(False)
    size = canonical(cfg.input_size or resolved.input_size)
    with torch.no_grad():
        num_classes = teacher(torch.zeros(1, resolved.in_channels, *hw(size),
                                          device=device)).shape[1]
    targets = targets_for(cfg, num_classes)
    features: list[FeatureTarget] = (real_feature_targets(teacher, _load_real(cfg.real_images)
                                                          .to(device))
                                     if cfg.real_images else bn_targets(teacher))
    student = None
    if cfg.di.adi_scale > 0:
        if not cfg.student:
            raise SynthError("Adaptive DeepInversion (adi_scale > 0) needs a student model")
        student = _to_device(resolve_model(cfg.student).module, device, cfg.di.channels_last)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            # gloo, also for cuda runs: the ranks only meet at barriers (each writes its own
            # batch files), which gloo does on the CPU without touching any GPU; nccl would
            # add a CUDA context per rank and a device-tensor allreduce for nothing.
            dist.init_process_group("gloo")
    if rank == 0:  # one rank decides whether the directory may be used, then the rest join
        writer = _prepare_out(cfg)
        writer.drop_partial()
        damaged = writer.damaged_batch()
        if damaged:
            raise SynthError(f"{damaged}: delete it and rerun with --resume to make that "
                             "batch again")
    if world > 1:
        dist.barrier()
    if rank != 0:
        writer = DatasetWriter(cfg.out, cfg.di.mean, cfg.di.std)
    n_batches = -(-cfg.n_images // cfg.batch_size)
    mine = [b for b in range(n_batches) if b % world == rank and b not in writer.done_batches()]
    steps_per_batch = cfg.di.iterations + cfg.di.low_res_iterations
    t0 = time.perf_counter()
    with tqdm(total=len(mine) * steps_per_batch, unit="step", disable=not cfg.progress,
              desc=f"synth {len(mine)} batches") as bar:
        for b in mine:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + b)
            y = targets[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            result = synthesize_batch(teacher, y, cfg.di, size, resolved.in_channels, gen,
                                      features, student, on_step=lambda *_: bar.update())
            writer.write_batch(b, result.images, result.targets, result.logits, result.history)
    seconds = time.perf_counter() - t0
    if world > 1:
        dist.barrier()
        if rank != 0:
            dist.destroy_process_group()
            return {"rank": rank, "batches": len(mine), "seconds": seconds}
    summary = writer.finish({"model": resolved.name, "input_size": to_json(size),
                             "batches_this_run": len(mine), "seconds_this_run": seconds,
                             "config": _identity(cfg)})
    if world > 1:
        dist.destroy_process_group()
    return summary


def preset(name: str) -> DIConfig:
    if name not in PRESETS:
        raise SynthError(f"unknown preset '{name}' (choose {', '.join(PRESETS)})")
    return PRESETS[name]
