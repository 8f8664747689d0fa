"""hwprune on your own ``nn.Module``: one call per step, objects in and out.

    import hwprune
    model = hwprune.wrap(net, input_size=64)                    # your trained module
    lut = hwprune.profile(model, step=16)                       # -> hwprune.luts.Lut
    report = hwprune.validate(model, lut, samples=10)           # -> dict (R2, MAPE, ...)
    hwprune.plan(model, lut)["proxies"]["line"]                 # can latency-awareness matter?
    images = hwprune.synthesize(model, n_images=256)            # -> ImageSet
    result = hwprune.prune(model, images, lut, target_measured_ratio=0.7)
    result.module, result.report                                # the pruned net, measured
    hwprune.save(result.model, "pruned.pt")                     # only if you want the file

Each call is what the matching command runs (the CLI parses options and calls the same
code). ``out`` arguments are optional: with one, the call keeps its files there (and an
interrupted call given the same ``out`` resumes); without one, it works in a temporary
directory that is removed before it returns, and everything it made comes back as
objects. Every error derives from ``hwprune.HwpruneError``.
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
    """What ``prune`` made: the pruned model (loaded back from its checkpoint, so what a file
    would give), the job's report (measured latencies, verdict, accuracy, trajectory) and
    the checkpoint's path (None when ``prune`` was given no ``out``)."""

    model: ResolvedModel
    report: dict
    path: Path | None

    @property
    def module(self) -> nn.Module:
        """The pruned network."""
        return self.model.module


@contextlib.contextmanager
def _workdir(out: str | os.PathLike | None, what: str):
    """``out``, or a temporary directory removed when the call is done with it (whatever
    the call needs afterwards is read into memory first)."""
    if out is not None:
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix=f"hwprune-{what}-") as tmp:
        yield Path(tmp)


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
    """Write ``model`` (weights, builder spec and arguments, input shape, and the channels
    of its pruned layers) atomically.

    Example:
        >>> hwprune.save(hwprune.wrap(net, input_size=32), "teacher.pt")
        >>> hwprune.save(hwprune.prune(model, images, lut, target_ratio=0.7).model, "p.pt")
    """
    return save_checkpoint(model.module, path, model.name, model.arch_kwargs, model.channels,
                           input_shape=(model.in_channels, *hw(model.input_size)))


def profile(model: ResolvedModel | str, out: str | os.PathLike | None = None, *,
            step: int = 16, device: str = "cpu", threads: int | None = None,
            calibrate: int = 8, progress: bool = True, **timing: Any):
    """Time every operator key of ``model``'s pruning grid on this device: the LUT.

    Args:
        model: a Model (``wrap``), a builder spec or a checkpoint path.
        out: the Parquet file [default: none; the table is returned in memory]. An
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
        >>> lut.save("copy.parquet")  # a table made without ``out``, kept after all
    """
    from hwprune.luts import CalibrateConfig, Lut, TooFewVariants, read_meta
    from hwprune.luts import calibrate as fit_calibration
    from hwprune.profiler import ProfileConfig, TimingConfig, profile_model

    tc = TimingConfig(device=device, threads=threads, **timing)
    size = model.input_size if isinstance(model, ResolvedModel) else None
    with _workdir(out, "lut") as where:
        path = where if out is not None else where / "lut.parquet"
        result = profile_model(ProfileConfig(model, path, step, size, timing=tc,
                                             progress=progress))
        if result.keys_left:
            raise HwpruneError(f"{path}: {result.keys_left} keys not measured yet; call again "
                               f"to continue")
        lut_path = result.merged or result.out
        if calibrate and not read_meta(lut_path).get("calibration"):
            try:
                fit_calibration(CalibrateConfig(model, lut_path, calibrate, size,
                                                progress=progress))
            except TooFewVariants as exc:  # as `hwprune profile`: the table is complete
                warnings.warn(f"not calibrated: {exc}", stacklevel=2)
        lut = Lut.load(lut_path)
        if out is None:
            lut.source = "<memory>"  # its file goes with the temporary directory
        return lut


def validate(model: ResolvedModel | str, lut, out: str | os.PathLike | None = None, *,
             samples: int = 30, progress: bool = True, **options: Any) -> dict:
    """Estimate and measure ``samples`` pruned variants of ``model``: how well ``lut``
    predicts their latency (R2 against the identity line, MAPE, the FLOPs and parameter
    lines beside it).

    Args:
        model: a Model, builder spec or checkpoint path.
        lut: a Lut (``profile``; in memory or read from a file) or the path(s) of LUT files.
        out: directory for variants.csv, report.json and the plot [default: none kept];
            measurements of the same variants made the same way are reused from it.
        samples: pruned variants measured.
        **options: more ``hwprune.luts.ValidateConfig`` fields (rounds, runtime, ...).

    Returns:
        dict: the report (also out/report.json when ``out`` is given).

    Example:
        >>> report = hwprune.validate(model, lut, samples=10); report["r2_identity"]
    """
    from hwprune.luts import ValidateConfig
    from hwprune.luts import validate as run_validation

    size = model.input_size if isinstance(model, ResolvedModel) else None
    with _workdir(out, "validate") as folder:
        return run_validation(ValidateConfig(model, _as_table(lut), folder, samples, size,
                                             progress=progress, **options))


def synthesize(model: ResolvedModel | str, out: str | os.PathLike | None = None, *,
               n_images: int = 64, batch_size: int = 64, di=None,
               iterations: int | None = None, progress: bool = True, **options: Any):
    """Images synthesized from ``model`` alone (DeepInversion; needs BatchNorm2d layers).

    Args:
        model: a Model, builder spec or checkpoint path.
        out: directory of the image set [default: none kept; the images are returned in
            memory]; an interrupted run resumes with ``resume=True``.
        n_images, batch_size: how many, and per optimisation batch.
        di: a ``hwprune.synth.DIConfig`` [default: the paper's ImageNet settings].
        iterations: overrides ``di.iterations``.
        **options: more ``hwprune.synth.SynthConfig`` fields (classes, seed, device, ...).

    Returns:
        hwprune.pruner.data.ImageSet: the images (normalised for the model) with the
        classes they were made for; ``.source`` is the directory ('<memory>' without one).

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
    with _workdir(out, "synth") as folder, _left_as_found(model):
        run_synthesis(SynthConfig(model, folder, n_images, batch_size, di, input_size=size,
                                  progress=progress, **options))
        images = load_images(str(folder), size or 0)
    if out is None:
        images.source = "<memory>"
    return images


def prune(model: ResolvedModel | str, data, lut, out: str | os.PathLike | None = None, *,
          target_measured_ratio: float | None = None, target_latency: float | None = None,
          group_size: int | None = None, epochs: int = 10, progress: bool = True,
          **options: Any) -> PruneResult:
    """Prune ``model`` to a latency budget on ``data`` (no labels needed), then fine-tune
    it by distillation from the original; measure both and save the pruned model.

    Args:
        model: a Model with trained weights, or a checkpoint path.
        data: training images: an ImageSet (``synthesize``), a synth output directory,
            an ImageFolder directory or an embedded task ('digits', 'mnist5k').
        lut: a Lut (in memory or from a file) or LUT path(s) of the target device.
        out: directory for pruned.pt, report.json and state/, from which an interrupted
            call resumes [default: none kept; save the result with ``hwprune.save``].
        target_measured_ratio: prune on until the pruned model *measures* at most this
            fraction of the original's latency (the LUT target is the first guess).
        target_latency: LUT milliseconds to reach instead (or as the first guess).
        group_size: filters removed together [default: the LUT's channel step].
        epochs: fine-tuning epochs.
        **options: more ``hwprune.pruner.PruneConfig`` fields (eta, criterion, ...) or
            ``PruneJob`` fields (device, measure_rounds, runtime, ...).

    Returns:
        PruneResult: the pruned model (``.module``), the report, and the checkpoint path
        when ``out`` was given.

    Example:
        >>> result = hwprune.prune(model, images, lut, target_measured_ratio=0.7)
    """
    from dataclasses import fields

    from hwprune.luts.lookup import as_lut
    from hwprune.luts.variants import lut_step
    from hwprune.pruner import PruneConfig
    from hwprune.pruner.finetune import FineTuneConfig
    from hwprune.pruner.run import PruneJob, run_job

    table = _as_table(lut)
    prune_fields = {f.name for f in fields(PruneConfig)}
    pc = PruneConfig(group_size=group_size or lut_step(as_lut(table)),
                     target_latency_ms=target_latency,
                     **{k: v for k, v in options.items() if k in prune_fields})
    job_options = {k: v for k, v in options.items() if k not in prune_fields}
    if isinstance(model, ResolvedModel):  # pruning freezes the teacher: not the caller's own
        model = replace(model, module=copy.deepcopy(model.module))
    allow = model.name if isinstance(model, ResolvedModel) else None
    with _workdir(out, "prune") as folder:
        report = run_job(PruneJob(model, folder, data, table, pc, FineTuneConfig(epochs=epochs),
                                  measured_ratio=target_measured_ratio, progress=progress,
                                  input_size=getattr(model, "input_size", None),
                                  **job_options))
        pruned = load_checkpoint(folder / "pruned.pt", allow_builder=allow)
    return PruneResult(pruned, report, None if out is None else Path(out) / "pruned.pt")


def plan(model: ResolvedModel | str, lut, *, group_size: int | None = None,
         target_latency: float | None = None,
         target_measured_ratio: float | None = None) -> dict:
    """What pruning ``model`` can reach on ``lut``'s device, before any work: the estimate
    now and the floor, each layer's latency share beside its FLOPs share, the staircases,
    and whether latency-awareness can matter here (the table against fitted FLOPs and
    parameter-count lines on its calibration's measured variants).

    Args:
        model: a Model, builder spec or checkpoint path.
        lut: a Lut or the path(s) of LUT files covering ``model`` at its input size.
        group_size: channels one removal takes [default: the LUT's channel step].
        target_latency, target_measured_ratio: is this target within reach?

    Returns:
        dict: ``hwprune plan``'s plan.json without the time plan; ``proxies["line"]`` is
        the one line to act on ("latency follows FLOPs within 3%: ...").

    Example:
        >>> hwprune.plan(model, lut)["proxies"]["line"]
    """
    from hwprune.luts.lookup import as_lut, table_input_size
    from hwprune.luts.variants import lut_step
    from hwprune.pruner.plan import PlanConfig
    from hwprune.pruner.proxies import plan_with_proxies
    from hwprune.zoo import resolve_model

    table = as_lut(_as_table(lut))
    resolved = resolve_model(model)
    cfg = PlanConfig(group_size=group_size or lut_step(table), target_latency_ms=target_latency,
                     target_measured_ratio=target_measured_ratio).check()
    size = table_input_size(table.meta, resolved.name, None, resolved.input_size)
    with _left_as_found(resolved):  # the plan traces the caller's module in eval mode
        made, check = plan_with_proxies(resolved.module, table, size, resolved.in_channels,
                                        cfg, resolved.name)
    return {**made.as_dict(), "proxies": check.as_dict()}


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


def _as_table(lut):
    """A Lut as it is (in memory or not), or the path(s) of its files as a list."""
    from hwprune.luts import Lut

    if isinstance(lut, Lut):
        return lut
    if isinstance(lut, (str, os.PathLike)):
        return [str(lut)]
    return [str(p) for p in lut]


__all__ = ["Model", "PruneResult", "wrap", "load", "save", "profile", "validate", "plan",
           "synthesize", "prune"]
