"""Turn a user's MODEL argument into a module: a builder spec or a saved checkpoint.

A spec names what builds the network (``hwprune.zoo.builders``): a torchvision name,
'demo', ``timm:NAME`` or ``package.module:callable``, optionally with the user's weights
(a state dict). Saved models never go through pickle's code execution: an hwprune
checkpoint is a dict of plain data and tensors loaded with ``weights_only=True``, holding
the builder spec, its arguments, the channel layout and the weights.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwprune.sizes import Size, canonical, hw
from hwprune.zoo.atomic import atomic_write_bytes
from hwprune.zoo.builders import (ModelError, build_module, first_conv_channels, parse_spec,
                                  require_allowed, torchvision_model_names)
from hwprune.zoo.demo import DEMO_CHANNELS, DEMO_INPUT_SIZE, build_demo

CHECKPOINT_FORMAT = "hwprune-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class ResolvedModel:
    """A built module with what hwprune needs to know of it: ``name`` is its builder spec
    (what a checkpoint stores), ``input_size`` and ``in_channels`` the input it takes."""

    module: nn.Module
    name: str
    in_channels: int = 3
    input_size: "int | tuple[int, int]" = 224  # a side, or (height, width)
    source: str = "torchvision"
    extra: dict[str, Any] = field(default_factory=dict)
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    # Output channels of the pruned layers, by module name ({} for the builder's own
    # widths): with the builder spec, what rebuilds this module's shape.
    channels: dict[str, int] = field(default_factory=dict)


# A ResolvedModel's source when its weights are its builder's own (random): no file,
# weights or module of the user's was behind it.
BUILT_SOURCES = ("torchvision", "demo", "timm", "callable")


def model_label(model: str | ResolvedModel) -> str:
    """A model argument as reports and resume checks record it: the spec or file as given,
    or a resolved model's spec with where its weights came from."""
    if isinstance(model, ResolvedModel):
        built = model.source in BUILT_SOURCES
        return model.name if built else f"{model.name} ({model.source})"
    return str(model)


def set_training(module: nn.Module, mode: bool) -> nn.Module:
    """``module.train(mode)``, except for torch.export modules, which are frozen in their mode."""
    try:
        module.train(mode)
    except NotImplementedError:
        pass
    return module


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
    builder = parse_spec(arch)
    if builder.kind == "demo":
        return ResolvedModel(build_demo(**kwargs), "demo", DEMO_CHANNELS, DEMO_INPUT_SIZE, "demo",
                             arch_kwargs=dict(kwargs))
    if builder.kind in ("timm", "callable"):
        module = build_module(builder, kwargs)
        shape = _default_input(module)
        return ResolvedModel(module, builder.spec, shape[0], shape[1], builder.kind,
                             arch_kwargs=dict(kwargs))
    names = torchvision_model_names()
    if arch not in names:
        close = difflib.get_close_matches(arch, names + ["demo"], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelError(
            f"unknown model '{arch}': not a torchvision classification model, 'demo', "
            f"timm:NAME, package.module:callable or an existing file{hint}"
        )
    import torchvision

    size = 299 if arch.startswith("inception") else 224
    # Auxiliary classifiers run only in training and return a tuple there, which the
    # pruner's distillation cannot use: built without them (weights of them are dropped).
    build = {"aux_logits": False, **kwargs} if arch in _AUX_HEADS else kwargs
    return ResolvedModel(torchvision.models.get_model(arch, weights=None, **build), arch, 3, size,
                         arch_kwargs=dict(kwargs))


def _default_input(module: nn.Module) -> tuple[int, Size]:
    """(channels, size) of the input a built module expects: timm's pretrained config says;
    otherwise the first conv's input channels at 224 px (override with input_size)."""
    cfg = getattr(module, "pretrained_cfg", None) or {}
    shape = cfg.get("input_size") if isinstance(cfg, dict) else None
    if shape and len(shape) == 3:
        return int(shape[0]), canonical([int(d) for d in shape[1:]])
    return first_conv_channels(module), 224


# torchvision classifiers with auxiliary heads: their parameter-name prefixes.
_AUX_HEADS = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}


def _without_aux(arch: str, state: dict) -> dict:
    """``state`` less the auxiliary heads' weights (torchvision's pretrained files hold them)."""
    prefixes = _AUX_HEADS.get(arch, ())
    return {k: v for k, v in state.items() if not k.startswith(prefixes)} if prefixes else state


def resolve_model(spec: str | ResolvedModel, *, weights: str | os.PathLike | None = None,
                  allow_builder: str | None = None, **arch_kwargs: Any) -> ResolvedModel:
    """The model ``spec`` names, in eval mode.

    Args:
        spec: a builder spec (torchvision name, 'demo', 'timm:NAME',
            'package.module:callable'), an hwprune checkpoint file, or a ResolvedModel
            (returned as it is).
        weights: a state dict file (``torch.save(model.state_dict())``) for a built spec,
            read with ``weights_only=True``; without it a built model has random weights.
        allow_builder: the one ``package.module:callable`` builder a checkpoint may name.
        **arch_kwargs: the builder's arguments (e.g. ``num_classes=10``).

    Returns:
        ResolvedModel: the module with its spec, input channels and input size.

    Example:
        >>> net = resolve_model("resnet18", num_classes=10).module
    """
    if isinstance(spec, ResolvedModel):
        return spec
    path = Path(spec)
    if path.suffix in MODEL_SUFFIXES or path.exists():
        if weights is not None or arch_kwargs:
            raise ModelError(f"'{spec}' is a saved model with its own weights and builder "
                             f"arguments: --weights and --model-arg go with a builder spec "
                             f"(e.g. timm:NAME)")
        resolved = load_checkpoint(path, allow_builder=allow_builder)
    else:
        resolved = _build_arch(str(spec), arch_kwargs)
        if weights is not None:
            load_weights(resolved, weights)
    set_training(resolved.module, False)
    return resolved


MODEL_SUFFIXES = {".pt", ".pth", ".pt2", ".ckpt"}  # a MODEL with these is a file


def save_checkpoint(module: nn.Module, path: str | os.PathLike, arch: str,
                    arch_kwargs: dict[str, Any] | None = None,
                    channels: dict[str, int] | None = None,
                    input_shape: tuple[int, int, int] | None = None, **extra: Any) -> Path:
    """Write an hwprune checkpoint atomically (temp file + rename).

    ``channels`` (output channels of pruned layers, by module name) makes the checkpoint
    of a pruned network: loading builds ``arch``, shrinks those layers (tracing it at
    ``input_shape``, (C, H, W), where given), then loads weights.
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
    from hwprune.zoo.check import weights_digest  # zoo.check imports this module's constants

    cpu_state = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v
                 for k, v in state.items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs or {}),
        "channels": dict(channels or {}),
        "state_dict": cpu_state,
        "extra": {**extra, **({"input_shape": [int(d) for d in input_shape]}
                               if input_shape else {})},
        "written_by": f"hwprune {_hwprune_version()}",
        # torch.load does not verify the zip's checksums: this lets loading tell a
        # damaged weight from a trained one (zoo.check).
        "weights_sha256": weights_digest(cpu_state),
    }
    return atomic_write_bytes(path, lambda f: torch.save(payload, f))


def _hwprune_version() -> str:
    from hwprune import __version__

    return __version__


def read_state_dict(weights: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save``, read with ``weights_only=True``.

    Also one nested under 'state_dict' or 'model', with DistributedDataParallel's 'module.'
    or torch.compile's '_orig_mod.' prefix, and with the options torchvision's reference
    scripts save beside the weights.
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
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in sd.items()}


def load_weights(resolved: ResolvedModel, weights: str | os.PathLike) -> ResolvedModel:
    """Load a state dict file into ``resolved.module``; it must match exactly."""
    sd = read_state_dict(weights)
    arch, kwargs = resolved.name, resolved.arch_kwargs
    if not kwargs.get("aux_logits"):
        sd = _without_aux(arch, sd)
    try:
        resolved.module.load_state_dict(sd)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ModelError(f"'{weights}' does not match {arch}"
                         f"{' ' + str(kwargs) if kwargs else ''}: "
                         f"{' '.join(first[1:3]) if len(first) > 1 else first[0]}") from None
    resolved.source = str(weights)
    resolved.extra = {**resolved.extra, "imported_from": str(weights)}
    return resolved


def import_weights(arch: str, weights: str | os.PathLike, out: str | os.PathLike,
                   **arch_kwargs: Any) -> Path:
    """Your own trained weights for the model ``arch`` builds, as an hwprune checkpoint.

    Args:
        arch: a builder spec: torchvision name, 'demo', 'timm:NAME' or
            'package.module:callable'.
        weights: a state dict file (see ``read_state_dict``) that matches ``arch`` exactly.
        out: the checkpoint to write (atomically).
        **arch_kwargs: the builder's arguments (e.g. ``num_classes=10``).

    Returns:
        Path: the checkpoint written.

    Example:
        >>> import_weights("timm:resnet26d", "my_weights.pth", "teacher.pt", num_classes=10)
    """
    resolved = load_weights(_build_arch(arch, arch_kwargs), weights)
    return save_checkpoint(resolved.module, out, resolved.name, arch_kwargs,
                           imported_from=str(weights))


def load_checkpoint(path: str | os.PathLike, allow_builder: str | None = None) -> ResolvedModel:
    """An hwprune checkpoint: its builder's network, cut to its channel layout, with its
    weights, in eval mode. A ``package.module:callable`` builder is imported and called only when
    ``allow_builder`` names the same spec; otherwise the file is refused before anything
    is imported."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file '{path}' does not exist")
    if path.suffix == ".pt2":
        # An exported program runs aten ops, not nn.Conv2d/BatchNorm2d modules, and has no
        # layers Torch-Pruning could cut: none of hwprune's steps can use it.
        raise ModelError(f"'{path}' is a torch.export program: hwprune needs the nn.Module "
                         f"(its layers are what is profiled, matched and pruned); give the "
                         f"builder instead, e.g. package.module:callable or timm:NAME with "
                         f"--weights your_state_dict.pth")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot load '{path}' as a weights-only checkpoint: "
                         f"{_first_line(exc)}") from None
    from hwprune.zoo.check import check_payload  # zoo.check imports this module's constants

    check_payload(path, payload)
    require_allowed(parse_spec(payload["arch"]), allow_builder, f"checkpoint '{path}'")
    try:
        resolved = _build_arch(payload["arch"], payload.get("arch_kwargs", {}))
    except TypeError as exc:  # arch_kwargs the architecture does not take
        raise ModelError(f"'{path}': arch_kwargs do not fit {payload['arch']}: {exc}") from None
    shape = payload.get("extra", {}).get("input_shape")
    if isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) for d in shape):
        resolved.in_channels, resolved.input_size = shape[0], canonical(shape[1:])
    try:
        if payload.get("channels"):
            example = torch.zeros(1, resolved.in_channels, *hw(resolved.input_size))
            # Torch-Pruning traces with autograd: a caller's no_grad must not stop it
            with torch.inference_mode(False), torch.enable_grad():
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
    resolved.channels = dict(payload.get("channels") or {})
    set_training(resolved.module, False)  # as every other way in gives it
    return resolved


def seeded_input(in_channels: int, size: Size, seed: int = 0) -> torch.Tensor:
    """The same (1, C, H, W) input on every machine and in every process."""
    return torch.randn(1, in_channels, *hw(size), generator=torch.Generator().manual_seed(seed))


def reload_check(path: str | os.PathLike, module: nn.Module, in_channels: int, size: Size,
                 allow_builder: str | None = None) -> dict:
    """Load the checkpoint just written and compare its outputs with ``module``'s on the
    seeded input: the figures a user needs to check a reload anywhere else."""
    x = seeded_input(in_channels, size)
    device = next(module.parameters()).device
    was_training = module.training
    with torch.no_grad():
        want = module.eval()(x.to(device)).float().cpu()
        got = load_checkpoint(path, allow_builder=allow_builder).module(x).float()
    set_training(module, was_training)
    return {"path": str(path), "input": f"seeded_input({in_channels}, {size}, seed=0)",
            "outputs": [round(float(v), 7) for v in want.flatten()],
            "reload_max_abs_diff": float((got - want).abs().max())}


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
