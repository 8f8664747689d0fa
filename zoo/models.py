"""Turn a user's MODEL argument into a module: a torchvision name, 'demo', or a saved file.

Saved models never go through pickle's code execution: an hwprune checkpoint is
a dict of plain data and tensors loaded with ``weights_only=True``, holding the
architecture by name; a ``.pt2`` file is a ``torch.export`` program.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.atomic import atomic_write_bytes
from zoo.demo import DEMO_CHANNELS, DEMO_INPUT_SIZE, build_demo

CHECKPOINT_FORMAT = "hwprune-checkpoint"
CHECKPOINT_VERSION = 1


class ModelError(ValueError):
    """The model argument cannot be resolved or loaded."""


@dataclass
class ResolvedModel:
    module: nn.Module
    name: str
    in_channels: int = 3
    input_size: int = 224
    source: str = "torchvision"
    extra: dict[str, Any] = field(default_factory=dict)
    arch_kwargs: dict[str, Any] = field(default_factory=dict)


def set_training(module: nn.Module, mode: bool) -> nn.Module:
    """``module.train(mode)``, except for torch.export modules, which are frozen in their mode."""
    try:
        module.train(mode)
    except NotImplementedError:
        pass
    return module


def torchvision_model_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _build_arch(arch: str, kwargs: dict[str, Any]) -> ResolvedModel:
    if arch == "demo":
        return ResolvedModel(build_demo(**kwargs), "demo", DEMO_CHANNELS, DEMO_INPUT_SIZE, "demo",
                             arch_kwargs=dict(kwargs))
    names = torchvision_model_names()
    if arch not in names:
        close = difflib.get_close_matches(arch, names + ["demo"], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelError(
            f"unknown model '{arch}': not a torchvision classification model, 'demo', "
            f"or an existing file{hint}"
        )
    import torchvision

    size = 299 if arch.startswith("inception") else 224
    return ResolvedModel(torchvision.models.get_model(arch, weights=None, **kwargs), arch, 3, size,
                         arch_kwargs=dict(kwargs))


def resolve_model(spec: str, **arch_kwargs: Any) -> ResolvedModel:
    """Build the model named by ``spec`` in eval mode (weights random unless loaded from a file)."""
    path = Path(spec)
    if path.suffix in {".pt", ".pth", ".pt2", ".ckpt"} or path.exists():
        resolved = load_checkpoint(path)
    else:
        resolved = _build_arch(spec, arch_kwargs)
    set_training(resolved.module, False)
    return resolved


def save_checkpoint(module: nn.Module, path: str | os.PathLike, arch: str,
                    arch_kwargs: dict[str, Any] | None = None,
                    channels: dict[str, int] | None = None, **extra: Any) -> Path:
    """Write an hwprune checkpoint atomically (temp file + rename).

    ``channels`` (output channels of pruned layers, by module name) makes the checkpoint
    of a pruned network: loading builds ``arch``, shrinks those layers, then loads weights.
    The tensors are written from CPU copies wherever ``module`` lives, so that a plain
    ``torch.load(path, weights_only=True)`` works on a machine without the device
    (torch.save records each storage's device, and load restores it there by default).
    A module on the meta device holds no values and is refused.
    """
    state = module.state_dict()
    on_meta = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_meta]
    if on_meta:
        raise ModelError(f"cannot save {arch} to '{path}': its tensors are on the meta device "
                         f"({on_meta[0]}{' and others' if len(on_meta) > 1 else ''}), which "
                         f"holds shapes but no weights; load or initialise the weights first")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs or {}),
        "channels": dict(channels or {}),
        "state_dict": {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v
                       for k, v in state.items()},
        "extra": extra,
    }
    return atomic_write_bytes(path, lambda f: torch.save(payload, f))


def import_weights(arch: str, weights: str | os.PathLike, out: str | os.PathLike,
                   **arch_kwargs: Any) -> Path:
    """Your own trained weights for a torchvision ``arch`` as an hwprune checkpoint.

    ``weights`` is a state dict saved with ``torch.save`` (also one nested under
    'state_dict' or 'model', and with DistributedDataParallel's 'module.' prefix); it is
    read with ``weights_only=True`` (torch.compile's '_orig_mod.' prefix and the options
    torchvision's reference scripts save beside the weights are accepted too) and must
    match ``arch`` exactly (e.g. pass
    ``num_classes`` for a model trained on your own classes).
    """
    path = Path(weights)
    if not path.is_file():
        raise ModelError(f"weights file '{path}' does not exist")
    import argparse
    from contextlib import nullcontext

    # torchvision's reference training scripts store their argparse options beside the
    # weights: a plain namespace, safe to allow (torch >= 2.5 can say so).
    allow = getattr(torch.serialization, "safe_globals", None)
    try:
        with allow([argparse.Namespace]) if allow else nullcontext():
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot load '{path}' as a weights-only state dict (save "
                         f"model.state_dict(), not the model object): {exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"'{path}' holds no state dict (a dict of tensors)")
    # DistributedDataParallel and torch.compile wrap the names of the weights they save.
    sd = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in sd.items()}
    resolved = _build_arch(arch, arch_kwargs)
    try:
        resolved.module.load_state_dict(sd)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ModelError(f"'{path}' does not match {arch}"
                         f"{' ' + str(arch_kwargs) if arch_kwargs else ''}: "
                         f"{' '.join(first[1:3]) if len(first) > 1 else first[0]}") from None
    return save_checkpoint(resolved.module, out, arch, arch_kwargs, imported_from=str(path))


def load_checkpoint(path: str | os.PathLike) -> ResolvedModel:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file '{path}' does not exist")
    if path.suffix == ".pt2":
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # torch raises many types for a bad archive
            raise ModelError(f"cannot load exported program '{path}': {exc}") from None
        module = program.module()
        shape = tuple(program.example_inputs[0][0].shape)
        return ResolvedModel(module, path.stem, shape[1], shape[-1], "export")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot load '{path}' as a weights-only checkpoint: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(
            f"'{path}' is not an hwprune checkpoint (a dict with format='{CHECKPOINT_FORMAT}')"
        )
    resolved = _build_arch(payload["arch"], payload.get("arch_kwargs", {}))
    try:
        if payload.get("channels"):
            example = torch.zeros(1, resolved.in_channels, resolved.input_size,
                                  resolved.input_size)
            shrink_to(resolved.module.eval(), payload["channels"], example)
        resolved.module.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, ValueError, AssertionError) as exc:
        raise ModelError(f"'{path}' does not match architecture {payload['arch']}: {exc}") from None
    resolved.source = str(path)
    resolved.extra = dict(payload.get("extra", {}))
    return resolved


def shrink_to(module: nn.Module, channels: dict[str, int], example: torch.Tensor) -> nn.Module:
    """Cut the named layers down to the given output channels (the last ones go), in place,
    with every layer tied to them, using Torch-Pruning's dependency graph."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(module, example_inputs=example)
    modules = dict(module.named_modules())
    for name, target in channels.items():
        layer = modules[name]
        conv = isinstance(layer, nn.Conv2d)
        have = layer.out_channels if conv else layer.out_features
        if have < target:
            raise ValueError(f"layer {name} has {have} output channels, fewer than {target}")
        if have == target:  # already cut as part of an earlier layer's group
            continue
        fn = tp.prune_conv_out_channels if conv else tp.prune_linear_out_channels
        graph.get_pruning_group(layer, fn, idxs=list(range(target, have))).prune()
    return module
