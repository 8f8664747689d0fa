"""Click options shared by several commands."""

from __future__ import annotations

import functools
import sys
from typing import Callable

import click

from hwprune.errors import HwpruneError
from hwprune.sizes import SizeError, parse_size
from hwprune.zoo.runtimes import RUNTIMES


def lut_runtime(runtime: str | None, luts) -> str:
    """``--runtime`` as given, else the runtime the (first) LUT was timed in, else torch."""
    if runtime or not luts:
        return runtime or "torch"
    from hwprune.luts import read_meta
    from hwprune.profiler.table import runtime_identity

    return runtime_identity(read_meta(list(luts)[0])).split(" ")[0]


def runtime_options(what: str, mismatch: str) -> Callable:
    """``--runtime`` (where ``what`` is measured) and ``--allow-mismatch`` (``mismatch``)."""
    def apply(f: Callable) -> Callable:
        f = click.option("--allow-mismatch", is_flag=True, help=mismatch)(f)
        return click.option(
            "--runtime", type=click.Choice(RUNTIMES), default=None,
            help=f"Measure {what} in this runtime (CPU; exported, checked against PyTorch "
                 f"and loaded once) [default: the runtime the LUT was timed in, torch "
                 f"without a LUT]. A LUT timed in another runtime is refused unless "
                 f"--allow-mismatch.")(f)
    return apply


def fail(exc: Exception) -> None:
    """A user's error: one line on stderr, exit 2."""
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def model_build_options(f: Callable) -> Callable:
    """``--weights``, ``--model-arg`` and ``--builder``: how MODEL is built and trusted."""
    f = click.option(
        "--builder", default=None, metavar="PACKAGE.MODULE:CALLABLE",
        help="Trust this builder where a checkpoint names it: hwprune imports and calls a "
             "package.module:callable named inside a file only when you name the same one "
             "here (torchvision, timm and demo builders need no trust).")(f)
    f = click.option(
        "--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
        help="An argument for MODEL's builder (repeatable), e.g. num_classes=10; VALUE is "
             "read as JSON where it parses (numbers, true, lists), else as a string.")(f)
    return click.option(
        "--weights", "model_weights", default=None, type=click.Path(dir_okay=False),
        metavar="FILE",
        help="Your trained weights for MODEL given as a builder (a torchvision name, "
             "timm:NAME or package.module:callable): a state dict saved with torch.save, "
             "read with weights_only=True.")(f)


def model_options(f: Callable) -> Callable:
    """The build options, with the command's ``model`` argument resolved by them."""
    @functools.wraps(f)
    def wrapper(*args, model_weights=None, model_args=(), builder=None, **kwargs):
        if kwargs.get("model") is not None:
            try:
                kwargs["model"] = cli_model(kwargs["model"], model_weights, model_args, builder)
            except HwpruneError as exc:
                fail(exc)
        elif model_weights or model_args or builder:
            fail(click.UsageError("--weights, --model-arg and --builder go with a model"))
        return f(*args, **kwargs)
    return model_build_options(wrapper)


def parse_model_args(pairs) -> dict:
    """``KEY=VALUE`` strings as builder keyword arguments (VALUE as JSON where it parses)."""
    import json

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="--model-arg")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def cli_model(model: str, model_weights: str | None, model_args, builder: str | None):
    """MODEL as the library takes it: the string itself, or (with weights, builder
    arguments or a trusted builder) the model resolved once here."""
    if model_weights is None and not model_args and builder is None:
        return model
    from hwprune.zoo import resolve_model

    return resolve_model(model, weights=model_weights, allow_builder=builder,
                         **parse_model_args(model_args))


class SizeParam(click.ParamType):
    """``--input-size 64`` or ``--input-size 48x80`` (height x width)."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, (int, tuple)):
            return value
        try:
            return parse_size(value)
        except SizeError as exc:
            self.fail(str(exc), param, ctx)


SIZE = SizeParam()
