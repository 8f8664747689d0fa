"""hwprune on your own ``nn.Module``: one call per step, objects in and out.

    import hwprune
    model = hwprune.wrap(net, input_size=64)                    # your trained module
    lut = hwprune.profile(model, "lut.parquet", step=16)        # -> hwprune.luts.Lut
    report = hwprune.validate(model, lut, samples=10)           # -> dict (R2, MAPE, ...)
    images = hwprune.synthesize(model, n_images=256)            # -> ImageSet
    result = hwprune.prune(model, images, lut, target_measured_ratio=0.7)
    result.module, result.report                                # the pruned net, measured

Each call is what the matching command runs (the CLI parses options and calls the same
code). ``out`` arguments are optional: without one, files go to a new temporary
directory, whose path the result names. Every error derives from ``hwprune.HwpruneError``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from hwprune.errors import HwpruneError
from hwprune.sizes import Size, canonical, hw
from hwprune.zoo.builders import first_conv_channels, parse_spec
from hwprune.zoo.models import ResolvedModel, load_checkpoint, save_checkpoint, set_training

Model = ResolvedModel


@dataclass
class PruneResult:
    """What ``prune`` made: the pruned module (loaded back from its checkpoint), the job's
    report (measured latencies, verdict, accuracy, trajectory) and the checkpoint's path."""

    module: nn.Module
    report: dict
    path: Path


def _out(out: str | os.PathLike | None, what: str) -> Path:
    return Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"hwprune-{what}-"))


def wrap(module: nn.Module, *, input_size: Size, in_channels: int | None = None,
         builder: str | None = None, **builder_kwargs: Any) -> ResolvedModel:
    """Your trained module as hwprune takes it.

    Args:
        module: the network (its weights are used as they are; it is not copied).
        input_size: the input resolution it runs at: one side in px (square), or
            (height, width).
        in_channels: input channels [default: the first Conv2d's].
        builder: what rebuilds it when a pruned checkpoint is loaded, as
            'package.module:callable' [default: the module's own class, called with
            ``builder_kwargs``]. A class defined in ``__main__`` cannot be rebuilt elsewhere.
        **builder_kwargs: the builder's arguments (e.g. ``num_classes=10``).

    Returns:
        Model: the module with its builder spec and input shape.

    Example:
        >>> model = hwprune.wrap(net, input_size=32, num_classes=10)
    """
    if not isinstance(module, nn.Module):
        raise HwpruneError(f"wrap() takes an nn.Module, not {type(module).__name__}")
    cls = type(module)
    spec = builder or f"{cls.__module__}:{cls.__qualname__}"
    parse_spec(spec)  # a malformed spec fails here, not when the pruned model is loaded
    return ResolvedModel(module.eval(), spec, in_channels or first_conv_channels(module),
                         canonical(input_size), "module", arch_kwargs=dict(builder_kwargs))


def load(path: str | os.PathLike, *, allow_builder: str | None = None) -> ResolvedModel:
    """An hwprune checkpoint (a pruned one too) as a Model; see ``hwprune.zoo.load_checkpoint``
    for when a ``package.module:callable`` builder in it is called (``allow_builder``).

    Example:
        >>> pruned = hwprune.load("pruned/pruned.pt", allow_builder="mynets:build").module
    """
    return load_checkpoint(path, allow_builder=allow_builder)


def save(model: ResolvedModel, path: str | os.PathLike) -> Path:
    """Write ``model`` (weights, builder spec and arguments, input shape) atomically.

    Example:
        >>> hwprune.save(hwprune.wrap(net, input_size=32), "teacher.pt")
    """
    return save_checkpoint(model.module, path, model.name, model.arch_kwargs,
                           input_shape=(model.in_channels, *hw(model.input_size)))


def profile(model: ResolvedModel | str, out: str | os.PathLike | None = None, *,
            step: int = 16, device: str = "cpu", threads: int | None = None,
            calibrate: int = 8, progress: bool = True, **timing: Any):
    """Time every operator key of ``model``'s pruning grid on this device: the LUT.

    Args:
        model: a Model (``wrap``), a builder spec or a checkpoint path.
        out: the Parquet file [default: lut.parquet in a new temporary directory]. An
            existing compatible file is extended (an interrupted run resumes).
        step: channel step of the grid (the pruning group size).
        device: 'cpu' or 'cuda'.
        threads: CPU threads, fixed while timing [default 1].
        calibrate: pruned variants measured end to end to calibrate the table (0: none;
            a grid too coarse for that many variants warns and stays uncalibrated).
        **timing: more ``hwprune.profiler.TimingConfig`` fields (batch, dtype, mode, ...).

    Returns:
        hwprune.luts.Lut: the table, calibrated when ``calibrate`` > 0 and its grid gives
        at least three pruned variants.

    Example:
        >>> lut = hwprune.profile(model, "lut.parquet", step=16, threads=1)
    """
    from hwprune.luts import CalibrateConfig, Lut, TooFewVariants, read_meta
    from hwprune.luts import calibrate as fit_calibration
    from hwprune.profiler import ProfileConfig, TimingConfig, profile_model

    path = Path(out) if out is not None else _out(None, "lut") / "lut.parquet"
    tc = TimingConfig(device=device, threads=threads, **timing)
    size = model.input_size if isinstance(model, ResolvedModel) else None
    result = profile_model(ProfileConfig(model, path, step, size, timing=tc, progress=progress))
    if result.keys_left:
        raise HwpruneError(f"{path}: {result.keys_left} keys not measured yet; call again to "
                           f"continue")
    lut_path = result.merged or result.out
    if calibrate and not read_meta(lut_path).get("calibration"):
        try:
            fit_calibration(CalibrateConfig(model, lut_path, calibrate, size, progress=progress))
        except TooFewVariants as exc:  # as `hwprune profile`: the table itself is complete
            warnings.warn(f"not calibrated: {exc}", stacklevel=2)
    return Lut.load(lut_path)


def validate(model: ResolvedModel | str, lut, out: str | os.PathLike | None = None, *,
             samples: int = 30, progress: bool = True, **options: Any) -> dict:
    """Estimate and measure ``samples`` pruned variants of ``model``: how well ``lut``
    predicts their latency (R2 against the identity line, MAPE, the FLOPs and parameter
    lines beside it).

    Args:
        model: a Model, builder spec or checkpoint path.
        lut: a Lut (``profile``) or the path(s) of LUT files.
        out: directory for variants.csv, report.json and the plot [default: temporary].
        samples: pruned variants measured.
        **options: more ``hwprune.luts.ValidateConfig`` fields (rounds, runtime, ...).

    Returns:
        dict: the report (also out/report.json).

    Example:
        >>> report = hwprune.validate(model, lut, samples=10); report["r2_identity"]
    """
    from hwprune.luts import ValidateConfig
    from hwprune.luts import validate as run_validation

    paths = _lut_paths(lut)
    size = model.input_size if isinstance(model, ResolvedModel) else None
    return run_validation(ValidateConfig(model, paths, _out(out, "validate"), samples, size,
                                         progress=progress, **options))


def synthesize(model: ResolvedModel | str, out: str | os.PathLike | None = None, *,
               n_images: int = 64, batch_size: int = 64, di=None,
               iterations: int | None = None, progress: bool = True, **options: Any):
    """Images synthesized from ``model`` alone (DeepInversion; needs BatchNorm2d layers).

    Args:
        model: a Model, builder spec or checkpoint path.
        out: directory of the image set [default: temporary]; an interrupted run resumes
            with ``resume=True``.
        n_images, batch_size: how many, and per optimisation batch.
        di: a ``hwprune.synth.DIConfig`` [default: the paper's ImageNet settings].
        iterations: overrides ``di.iterations``.
        **options: more ``hwprune.synth.SynthConfig`` fields (classes, seed, device, ...).

    Returns:
        hwprune.pruner.data.ImageSet: the images (normalised for the model) with the
        classes they were made for; ``.source`` is the directory.

    Example:
        >>> images = hwprune.synthesize(model, n_images=256, iterations=500)
    """
    from hwprune.pruner.data import load_images
    from hwprune.synth import DIConfig, SynthConfig
    from hwprune.synth import synthesize as run_synthesis

    di = di or DIConfig()
    if iterations is not None:
        di = replace(di, iterations=iterations)
    size = model.input_size if isinstance(model, ResolvedModel) else None
    out = _out(out, "synth")
    with _left_as_found(model):
        run_synthesis(SynthConfig(model, out, n_images, batch_size, di, input_size=size,
                                  progress=progress, **options))
    return load_images(str(out), size or 0)


def prune(model: ResolvedModel | str, data, lut, out: str | os.PathLike | None = None, *,
          target_measured_ratio: float | None = None, target_latency: float | None = None,
          group_size: int | None = None, epochs: int = 10, progress: bool = True,
          **options: Any) -> PruneResult:
    """Prune ``model`` to a latency budget on ``data`` (no labels needed), then fine-tune
    it by distillation from the original; measure both and save the pruned model.

    Args:
        model: a Model with trained weights, or a checkpoint path.
        data: training images: an ImageSet (``synthesize``), a synth output directory,
            an ImageFolder directory or 'digits'.
        lut: a Lut or LUT path(s) of the target device.
        out: directory for pruned.pt, report.json and state/ [default: temporary].
        target_measured_ratio: prune on until the pruned model *measures* at most this
            fraction of the original's latency (the LUT target is the first guess).
        target_latency: LUT milliseconds to reach instead (or as the first guess).
        group_size: filters removed together [default: the LUT's channel step].
        epochs: fine-tuning epochs.
        **options: more ``hwprune.pruner.PruneConfig`` fields (eta, criterion, ...) or
            ``PruneJob`` fields (device, measure_rounds, runtime, ...).

    Returns:
        PruneResult: the pruned module, the report and the checkpoint path.

    Example:
        >>> result = hwprune.prune(model, images, lut, target_measured_ratio=0.7)
    """
    from dataclasses import fields

    from hwprune.pruner import PruneConfig
    from hwprune.pruner.finetune import FineTuneConfig
    from hwprune.pruner.run import PruneJob, run_job

    paths = _lut_paths(lut)
    prune_fields = {f.name for f in fields(PruneConfig)}
    pc = PruneConfig(group_size=group_size or _step(paths), target_latency_ms=target_latency,
                     **{k: v for k, v in options.items() if k in prune_fields})
    job_options = {k: v for k, v in options.items() if k not in prune_fields}
    if isinstance(model, ResolvedModel):  # pruning freezes the teacher: not the caller's own
        model = replace(model, module=copy.deepcopy(model.module))
    out = _out(out, "prune")
    report = run_job(PruneJob(model, out, data, paths, pc, FineTuneConfig(epochs=epochs),
                              measured_ratio=target_measured_ratio, progress=progress,
                              input_size=getattr(model, "input_size", None), **job_options))
    allow = model.name if isinstance(model, ResolvedModel) else None
    pruned = load_checkpoint(out / "pruned.pt", allow_builder=allow)
    return PruneResult(pruned.module, report, out / "pruned.pt")


@contextlib.contextmanager
def _left_as_found(model):
    """The caller's module as it was: synthesis freezes the teacher's parameters (and the
    pruner finds its groups among trainable ones), which must not outlast the call."""
    if not isinstance(model, ResolvedModel):  # a spec or file: hwprune builds its own
        yield
        return
    flags = [(p, p.requires_grad) for p in model.module.parameters()]
    mode = model.module.training
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        set_training(model.module, mode)


def _lut_paths(lut) -> list[str]:
    from hwprune.luts import Lut

    if isinstance(lut, Lut):
        if not lut.source:
            raise HwpruneError("this Lut has no file behind it: pass the path it was read from")
        return [str(p) for p in str(lut.source).split(", ")]
    if isinstance(lut, (str, os.PathLike)):
        return [str(lut)]
    return [str(p) for p in lut]


def _step(paths: list[str]) -> int:
    from hwprune.luts import Lut
    from hwprune.luts.variants import lut_step

    return lut_step(Lut.load(paths))


__all__ = ["Model", "PruneResult", "wrap", "load", "save", "profile", "validate", "synthesize",
           "prune"]
