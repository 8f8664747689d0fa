"""The rules an hwprune checkpoint passes before a model is built from it.

A damaged or foreign checkpoint is refused here with one line naming the file, the rule
and the first offending entry, instead of surfacing later as torch's multi-line
``size mismatch`` report, a ``KeyError`` or NaN logits:
  * format: a dict with format 'hwprune-checkpoint' and a version this hwprune reads;
    arch a name, arch_kwargs / channels / extra mappings, state_dict names -> tensors;
  * weights: every floating-point tensor finite, and (checkpoints saved since these
    rules exist) the weights' digest unchanged: torch's zip reader does not verify its
    checksums, so a flipped byte would otherwise load as a slightly different network;
  * channels: each pruned layer's recorded output count is an integer >= 1 and equals
    the first dimension of that layer's stored weight.
"""

from __future__ import annotations

import hashlib
import os

import torch
from torch import nn

from hwprune.zoo.models import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, ModelError


class CheckpointError(ModelError):
    """A file is not a usable hwprune checkpoint; names the file, rule and offender."""

    def __init__(self, path: object, rule: str, detail: str) -> None:
        self.path, self.rule, self.detail = str(path), rule, detail
        super().__init__(f"'{path}': {rule}: {detail}")


def check_payload(path: str | os.PathLike, payload: object) -> dict:
    """``payload`` (what ``torch.load(weights_only=True)`` returned) if it passes every rule."""
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(path, "format", f"not an hwprune checkpoint (a dict with "
                              f"format='{CHECKPOINT_FORMAT}')")
    version = payload.get("version")
    if version != CHECKPOINT_VERSION:
        by = payload.get("written_by")
        newer = isinstance(version, int) and version > CHECKPOINT_VERSION
        raise CheckpointError(path, "format", f"checkpoint version {version!r}"
                              + (f", written by {by or 'a newer hwprune'}, which reads it"
                                 if newer else "")
                              + f"; this hwprune reads version {CHECKPOINT_VERSION}")
    if not isinstance(payload.get("arch"), str):
        raise CheckpointError(path, "format", f"arch {payload.get('arch')!r} is not a name")
    for field in ("arch_kwargs", "channels", "extra"):
        if not isinstance(payload.get(field, {}), dict):
            raise CheckpointError(path, "format", f"{field} is not a mapping")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not state:
        raise CheckpointError(path, "format", "no state_dict of weights")
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(path, "format", f"state_dict entry {name!r} is not a tensor")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(path, "weights", f"{name} holds NaN or infinite values")
    stored = payload.get("weights_sha256")
    if stored is not None and stored != weights_digest(state):
        raise CheckpointError(path, "weights", "the weights no longer match the digest saved "
                              "with them (damaged or edited since they were saved)")
    for layer, count in payload.get("channels", {}).items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise CheckpointError(path, "channels", f"{layer}: {count!r} output channels "
                                  "(expected an integer >= 1)")
        weight = state.get(f"{layer}.weight")
        if weight is None:
            raise CheckpointError(path, "channels", f"{layer} is recorded as pruned, but the "
                                  "weights hold no such layer")
        if weight.dim() == 0 or weight.shape[0] != count:
            raise CheckpointError(path, "channels", f"{layer} is recorded with {count} output "
                                  f"channels, its weight has "
                                  f"{weight.shape[0] if weight.dim() else 0}")
    return payload


def weights_digest(state: dict) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):  # a module's extra state: plain data
            h.update(f"{name}|{t!r}|".encode())
            continue
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def num_classes(module: nn.Module) -> int | None:
    """Outputs of a classifier: those of its last linear layer (None without one)."""
    last = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else None
