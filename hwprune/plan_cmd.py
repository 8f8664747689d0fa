"""``hwprune plan``: option parsing only; the work is in ``pruner.plan``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hwprune.options import SIZE, model_options
from hwprune.luts import LutError
from hwprune.zoo import ModelError


@click.command("plan")
@click.argument("model")
@model_options
@click.option("--lut", "luts", multiple=True, required=True,
              help="LUT file(s) of the target device, covering MODEL at --input-size.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output directory (plan.json, plan.png).")
@click.option("--target-latency", type=float, default=None, metavar="MS",
              help="Is a LUT estimate of MS reachable, and with what margin?")
@click.option("--target-measured-ratio", type=float, default=None, metavar="R",
              help="Is R x the estimate now reachable? (prune then confirms it by measurement)")
@click.option("--input-size", type=SIZE, default=None,
              help="Input size: one side in px, or HEIGHTxWIDTH (48x80) [default: the model's own].")
@click.option("--group-size", type=click.IntRange(min=1), default=None,
              help="Channels one removal takes away (prune's --group-size) [default: the "
                   "LUT's grid step: the counts of a finer group fall between its rows, and "
                   "the smallest may lie below its grid].")
@click.option("--noise", type=click.FloatRange(min=0, max=1, max_open=True), default=None,
              help="A removal saving under this share of the latency of the operators its "
                   "dimension touches is 'free' [default: 0.01, the 1% CI the profiler "
                   "times each row to].")
@click.option("--top", type=click.IntRange(min=1), default=12, show_default=True,
              help="Operators listed on the terminal (plan.json holds all).")
@click.option("--no-cost", is_flag=True,
              help="Skip the time plan (it times a few iterations of synth and prune here).")
@click.option("--n-images", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images synth will make (synth's --n-images).")
@click.option("--synth-batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="synth's --batch-size.")
@click.option("--preset", type=click.Choice(["imagenet", "kt", "multires", "fullres", "demo"]),
              default=None, help="synth's DeepInversion preset [default: as synth picks].")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="prune's --batch-size.")
@click.option("--epochs", type=click.IntRange(min=0), default=15, show_default=True,
              help="prune's fine-tuning --epochs.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Where synth and prune will run [default: the LUT's device].")
def plan_cmd(model, luts, out, target_latency, target_measured_ratio, input_size, group_size,
             noise, top, no_cost, n_images, synth_batch, preset, batch_size, epochs,
             device) -> None:
    """What pruning MODEL can reach on the LUT's device, before any work.

    \b
    Prints, and writes to OUT/plan.json and OUT/plan.png:
      reach      the LUT estimate now, the floor (every prunable dimension at its
                 last group; the rest unchanged), the largest speed-up, and whether
                 a target is within it (exit 2 when it is not, after the plan)
      time       each operator's share of the latency beside its share of FLOPs,
                 and the operators no pruning touches
      staircase  per prunable dimension, the channel counts at which the LUT's
                 latency drops (edges), and the removals that save nothing (free)
      proxies    whether latency-awareness can matter here: the table against fitted
                 FLOPs and parameter-count lines on its calibration's measured
                 variants (a proxy as good as the table: prune to that proxy instead)
    MODEL: a torchvision name, 'demo', or an hwprune checkpoint.
    """
    from hwprune.pruner.plan import PLAN_NOISE, PlanConfig
    from hwprune.pruner.plan_report import format_plan, plot_plan
    from hwprune.pruner.proxies import plan_with_proxies
    from hwprune.luts import Lut
    from hwprune.luts.lookup import table_input_size
    from hwprune.pruner.groups import GroupError
    from hwprune.zoo import resolve_model
    from hwprune.zoo.atomic import atomic_write_bytes

    try:
        resolved = resolve_model(model)
        lut = Lut.load(list(luts))
        cfg = PlanConfig(group_size=group_size or _grid_step(lut),
                         noise=PLAN_NOISE if noise is None else noise,
                         target_latency_ms=target_latency,
                         target_measured_ratio=target_measured_ratio).check()
        size = table_input_size(lut.meta, resolved.name, input_size, resolved.input_size)
        plan, check = plan_with_proxies(resolved.module, lut, size, resolved.in_channels, cfg,
                                        resolved.name)
    except (ValueError, LutError, ModelError, GroupError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(format_plan(plan, top))
    result = plan.as_dict()
    click.echo(f"\nproxies: {check.line}")
    result["proxies"] = check.as_dict()
    device = device or ("cuda" if lut.meta.get("device_kind") == "cuda" else "cpu")
    if not no_cost:
        result["cost"] = _cost(resolved, plan, device, n_images, synth_batch, preset,
                               batch_size, epochs)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "plan.json",
                       lambda f: f.write(json.dumps(result, indent=2).encode()))
    figure = plot_plan(plan, out / "plan.png", top)
    click.echo(f"wrote {out / 'plan.json'}, {figure}")
    r = plan.reach
    if r.target_ms is not None and not r.reachable:
        click.echo("error: " + ("the target is not below the estimate now"
                                if r.target_ms >= r.now_ms else
                                f"the target is below the floor ({r.floor_ms:.3f} ms)"), err=True)
        sys.exit(2)


def _cost(resolved, plan, device: str, n_images: int, synth_batch: int, preset: str | None,
          batch_size: int, epochs: int) -> dict | None:
    """The time plan, printed; None (with the reason printed) where it cannot be timed."""
    import torch

    from hwprune.pruner import PruneConfig
    from hwprune.pruner.finetune import FineTuneConfig
    from hwprune.pruner.job_cost import job_cost
    from hwprune.pruner.plan_report import cost_lines
    from hwprune.synth import preset as get_preset
    from hwprune.zoo.check import num_classes

    if device == "cuda" and not torch.cuda.is_available():
        click.echo("time plan: skipped (the LUT is of a GPU and this machine has none; "
                   "run plan on the GPU machine, or --device cpu for a CPU job)")
        return None
    name = preset or ("demo" if resolved.name == "demo" else "kt")
    teacher = resolved.module.to(device).eval()
    cost = job_cost(teacher, plan.latency, plan.dims, plan.input_size, resolved.in_channels,
                    num_classes(teacher) or 1000, n_images, synth_batch, get_preset(name),
                    PruneConfig(group_size=plan.group_size, batch_size=batch_size),
                    FineTuneConfig(epochs=epochs, batch_size=batch_size),
                    plan.reach.target_ms if plan.reach.reachable else None).as_dict()
    cost.update(device=device, preset=name, n_images=n_images, synth_batch=synth_batch,
                batch_size=batch_size, epochs=epochs)
    click.echo("\n".join(["", *cost_lines(cost, device)]))
    return cost


def _grid_step(lut) -> int:
    from hwprune.luts.variants import lut_step

    try:
        return lut_step(lut)
    except LutError:  # a table joined from grids of several steps: no one group to assume
        steps = sorted({int(s["step"]) for s in lut.meta.get("sources", [])})
        raise LutError(f"LUT {lut.source} joins grids of steps {steps}: give --group-size "
                       f"(the group prune will remove; a group finer than a layer's grid "
                       f"falls between its rows)") from None
