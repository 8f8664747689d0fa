"""Model specs: the names a user gives for "build me this network".

    resnet18              a torchvision classifier
    demo                  hwprune's small digits network
    timm:resnet26d        ``timm.create_model`` (the ``timm`` extra)
    mypkg.models:build    any importable callable returning an ``nn.Module``

A checkpoint stores the spec it was built from. Loading one never imports or calls code
that the file alone names: torchvision, timm and demo builders are trusted (their code is
hwprune's dependencies'), a ``module:callable`` builder only when the caller names the same
spec (``allow_builder``; ``--builder`` on the command line).
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from torch import nn

from hwprune.errors import HwpruneError

# A dotted module path, a colon, a dotted attribute path: ``pkg.mod:fn`` or ``pkg.mod:Cls.make``.
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
TRUSTED_KINDS = ("torchvision", "demo", "timm")


class ModelError(HwpruneError):
    """The model argument cannot be resolved, trusted, built or loaded."""


@dataclass(frozen=True)
class Builder:
    """A parsed model spec: ``kind`` is torchvision, demo, timm or callable."""

    spec: str
    kind: str
    target: str  # the torchvision or timm name, or 'module:attr' of a callable

    @property
    def trusted(self) -> bool:
        return self.kind in TRUSTED_KINDS


def parse_spec(spec: str) -> Builder:
    """The builder a spec names, without importing or calling anything."""
    spec = spec.strip()
    if spec == "demo":
        return Builder(spec, "demo", spec)
    if spec.startswith("timm:"):
        name = spec[len("timm:"):]
        if not re.fullmatch(r"[\w.\-]+", name):
            raise ModelError(f"'{spec}': a timm model name follows 'timm:' (e.g. timm:resnet26d)")
        return Builder(spec, "timm", name)
    if ":" in spec:
        if not _CALLABLE.match(spec):
            raise ModelError(f"'{spec}' is not a builder spec: write package.module:callable "
                               f"(a function that returns an nn.Module), timm:NAME or a "
                               f"torchvision name")
        return Builder(spec, "callable", spec)
    return Builder(spec, "torchvision", spec)


def require_allowed(builder: Builder, allow_builder: str | None, where: str) -> None:
    """Refuse, before anything is imported, a callable builder the caller did not name."""
    if builder.trusted or (allow_builder is not None and allow_builder.strip() == builder.spec):
        return
    named = f" (you named '{allow_builder}')" if allow_builder else ""
    raise ModelError(f"{where} names the builder '{builder.spec}', which hwprune imports and "
                       f"calls only when you name the same builder{named}: pass --builder "
                       f"{builder.spec} (Python: allow_builder=...) if you trust it")


def torchvision_model_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_module(builder: Builder, kwargs: dict[str, Any]) -> nn.Module:
    """Import and call the builder (random weights). torchvision and demo are built by
    hwprune.zoo.models, which knows their input sizes and auxiliary heads."""
    if builder.kind == "timm":
        return _build_timm(builder, kwargs)
    if builder.kind == "callable":
        return _build_callable(builder, kwargs)
    raise ModelError(f"'{builder.spec}': built by hwprune.zoo.models")  # pragma: no cover


def _build_timm(builder: Builder, kwargs: dict[str, Any]) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ModelError(f"'{builder.spec}' needs timm: pip install 'hwprune[timm]'") from None
    if not timm.is_model(builder.target):
        close = difflib.get_close_matches(builder.target, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelError(f"unknown timm model '{builder.target}'{hint}")
    # Never pretrained: nothing is downloaded at run time; weights come from --weights.
    return timm.create_model(builder.target, pretrained=False, **kwargs)


@contextmanager
def _cwd_importable() -> Iterator[None]:
    """The working directory on sys.path while a user's builder is imported and called, as
    ``python -m`` would have it (the ``hwprune`` script's own folder is there instead)."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _build_callable(builder: Builder, kwargs: dict[str, Any]) -> nn.Module:
    mod_name, attr = builder.target.split(":", 1)
    with _cwd_importable():
        try:
            obj: Any = importlib.import_module(mod_name)
        except ImportError as exc:
            raise ModelError(f"'{builder.spec}': cannot import {mod_name}: {exc}") from None
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ModelError(f"'{builder.spec}': {mod_name} has no attribute '{attr}'")
            obj = getattr(obj, part)
        if not callable(obj):
            raise ModelError(f"'{builder.spec}': {attr} is not callable")
        try:
            module = obj(**kwargs)
        except TypeError as exc:
            raise ModelError(f"'{builder.spec}' does not take {kwargs}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise ModelError(f"'{builder.spec}' returned {type(module).__name__}, not an "
                           f"nn.Module")
    return module


def first_conv_channels(module: nn.Module, default: int = 3) -> int:
    """Input channels of the first Conv2d (the input's, for a CNN), else ``default``."""
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else default
