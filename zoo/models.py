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


# Inputs smaller than 64 px still run most torchvision classifiers (stride 32); these need more:
# inception_v3's stem and aux-free head need 75 px, maxvit_t's 7x7 attention windows 224.
_MIN_INPUT_SIZES = {"inception_v3": 75, "maxvit_t": 224}


def small_input_size(arch: str, wanted: int = 64) -> int:
    """``wanted``, or the smallest input ``arch`` accepts when that is larger (cheap tests)."""
    return max(wanted, _MIN_INPUT_SIZES.get(arch, 1))


def classifier_scope(arch: str, module: nn.Module | None = None) -> tuple[str | None, int]:
    """(why ``arch`` is out of hwprune's scope, or None; its parameter count).

    In scope: a network with both Conv2d and BatchNorm2d layers (the LUT models
    convolutions; the pruner gates channels at BatchNorms). The architecture is built on
    the meta device (no weights) unless ``module`` is given or meta construction fails.
    """
    if module is None:
        import torchvision

        try:
            with torch.device("meta"):
                module = torchvision.models.get_model(arch, weights=None)
        except (NotImplementedError, RuntimeError):  # builders that compute with tensors
            module = torchvision.models.get_model(arch, weights=None)
    params = sum(p.numel() for p in module.parameters())
    has = {t: any(isinstance(m, t) for m in module.modules()) for t in (nn.Conv2d, nn.BatchNorm2d)}
    missing = [t.__name__ for t, ok in has.items() if not ok]
    if missing:
        norms = sorted({type(m).__name__ for m in module.modules()  # leaves: not containers
                        if "Norm" in type(m).__name__ and not any(True for _ in m.children())})
        why = f"no {' or '.join(missing)}" + (f" (normalises with {', '.join(norms)})"
                                                if norms else "")
        return why, params
    return None, params


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
    # Auxiliary classifiers run only in training and return a tuple there, which the
    # pruner's distillation cannot use: built without them (weights of them are dropped).
    build = {"aux_logits": False, **kwargs} if arch in _AUX_HEADS else kwargs
    return ResolvedModel(torchvision.models.get_model(arch, weights=None, **build), arch, 3, size,
                         arch_kwargs=dict(kwargs))


# torchvision classifiers with auxiliary heads: their parameter-name prefixes.
_AUX_HEADS = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}


def _without_aux(arch: str, state: dict) -> dict:
    """``state`` less the auxiliary heads' weights (torchvision's pretrained files hold them)."""
    prefixes = _AUX_HEADS.get(arch, ())
    return {k: v for k, v in state.items() if not k.startswith(prefixes)} if prefixes else state


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
    from zoo.check import weights_digest  # zoo.check imports this module's constants

    cpu_state = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v
                 for k, v in state.items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs or {}),
        "channels": dict(channels or {}),
        "state_dict": cpu_state,
        "extra": extra,
        "written_by": f"hwprune {_hwprune_version()}",
        # torch.load does not verify the zip's checksums: this lets loading tell a
        # damaged weight from a trained one (zoo.check).
        "weights_sha256": weights_digest(cpu_state),
    }
    return atomic_write_bytes(path, lambda f: torch.save(payload, f))


def _hwprune_version() -> str:
    from hwprune import __version__

    return __version__


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
    if not arch_kwargs.get("aux_logits"):
        sd = _without_aux(arch, sd)
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
        raise ModelError(f"cannot load '{path}' as a weights-only checkpoint: "
                         f"{_first_line(exc)}") from None
    from zoo.check import check_payload  # zoo.check imports this module's constants

    check_payload(path, payload)
    try:
        resolved = _build_arch(payload["arch"], payload.get("arch_kwargs", {}))
    except TypeError as exc:  # arch_kwargs the architecture does not take
        raise ModelError(f"'{path}': arch_kwargs do not fit {payload['arch']}: {exc}") from None
    try:
        if payload.get("channels"):
            example = torch.zeros(1, resolved.in_channels, resolved.input_size,
                                  resolved.input_size)
            shrink_to(resolved.module.eval(), payload["channels"], example)
        state = payload["state_dict"]
        if not payload.get("arch_kwargs", {}).get("aux_logits"):
            state = _without_aux(payload["arch"], state)
        resolved.module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, AssertionError) as exc:
        raise ModelError(f"'{path}' does not match architecture {payload['arch']}: "
                         f"{_first_line(exc)}") from None
    resolved.source = str(path)
    resolved.extra = dict(payload.get("extra", {}))
    return resolved


def _first_line(exc: Exception) -> str:
    """torch's load errors run over many lines (one per mismatched tensor); the first
    mismatch says enough, on one line."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        return f"{lines[1]} (and {len(lines) - 2} more)" if len(lines) > 2 else lines[1]
    return lines[0] if lines else type(exc).__name__


class CouplingError(ModelError):
    """Torch-Pruning cannot work out which layers share the model's channels."""


def dependency_graph(module: nn.Module, example: torch.Tensor):
    """Torch-Pruning's dependency graph of ``module``, or a ``CouplingError`` that says
    where it failed (it raises arbitrary errors on couplings it cannot follow)."""
    import traceback

    import torch_pruning as tp

    try:
        return tp.DependencyGraph().build_dependency(module, example_inputs=example)
    except Exception as exc:  # noqa: BLE001 - a bug or limitation of the library: say so
        where = traceback.extract_tb(exc.__traceback__)[-1].name
        what = ("a reshape that splits channels into groups (such as ShuffleNet's channel "
                "shuffle)" if "reshape" in where else f"its step '{where}'")
        raise CouplingError(f"Torch-Pruning cannot trace which layers share this model's "
                            f"channels: it fails at {what} with {type(exc).__name__}: "
                            f"{exc}") from None


def shrink_to(module: nn.Module, channels: dict[str, int], example: torch.Tensor) -> nn.Module:
    """Cut the named layers down to the given output channels (the last ones go), in place,
    with every layer tied to them, using Torch-Pruning's dependency graph."""
    import torch_pruning as tp

    graph = dependency_graph(module, example)
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
