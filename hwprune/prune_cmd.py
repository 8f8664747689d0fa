"""``hwprune prune`` and ``hwprune evaluate``: option parsing only; the work is in ``pruner``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hwprune.luts import LutError
from hwprune.options import (SIZE, fail, lut_runtime, model_build_options, model_options,
                             parse_model_args, runtime_options)
from hwprune.zoo import ModelError


def _floats(text: str | None) -> tuple[float, ...] | None:
    return tuple(float(v) for v in text.split(",")) if text else None


@click.command()
@click.argument("teacher")
@model_build_options
@click.option("--input-size", type=SIZE, default=None,
              help="Input resolution to prune and measure at [default: the one the LUT was "
                   "profiled at for this model; without a LUT the model's own]. A size the "
                   "LUT was not profiled at is refused.")
@click.option("--data", required=True,
              help="Training images: an `hwprune synth` output directory or its synthetic.pt, "
                   "an ImageFolder directory of real images, or an embedded task's train "
                   "split ('digits', 'mnist5k').")
@click.option("--lut", "luts", multiple=True, help="LUT file(s) of the target device.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output directory (pruned.pt, report.json, trajectory.png, state/).")
@click.option("--target-latency", type=float, default=None, metavar="MS",
              help="Prune until the LUT estimate is at most MS (confirmed by measurement).")
@click.option("--target-ratio", type=float, default=None,
              help="Prune until this fraction of the prunable filters is kept.")
@click.option("--target-measured-ratio", type=float, default=None, metavar="R",
              help="Prune until the pruned model MEASURES at most R x the teacher's latency "
                   "on this machine (in the LUT's mode); the LUT target (--target-latency, "
                   "default R x the teacher's estimate) is the first guess, lowered while "
                   "the measurement misses.")
@click.option("--criterion", type=click.Choice(["taylor-latency", "taylor", "magnitude",
                                                "flops-aware"]),
              default="taylor-latency", show_default=True,
              help="Group importance: Taylor on gates + eta x LUT latency saving (paper); "
                   "plain Taylor (eta 0); filter magnitude; Taylor + eta x MACs saving.")
@click.option("--eta", type=float, default=1.0, show_default=True,
              help="Weight of the cost term; both terms are normalised to mean 1 over the "
                   "candidate groups (so the paper's raw 0.01 does not carry over).")
@click.option("--selector", type=click.Choice(["greedy", "knapsack"]), default="greedy",
              show_default=True, help="greedy: the paper's least-important-first; knapsack: "
                                      "least error removed for each step's latency quota (HALP).")
@click.option("--group-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--groups-per-step", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--interval", type=click.IntRange(min=1), default=30, show_default=True,
              help="Minibatches between removals.")
@click.option("--loss", type=click.Choice(["kl", "ce"]), default="kl", show_default=True,
              help="kl: against the teacher, no labels; ce: needs labelled --data.")
@click.option("--temperature", type=float, default=5.0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=float, default=0.01, show_default=True)
@click.option("--epochs", type=click.IntRange(min=0), default=15, show_default=True,
              help="Fine-tuning epochs after the target is met (lr x0.1 at --decay-at).")
@click.option("--decay-at", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--no-update", is_flag=True,
              help="Rank and remove only, no weight updates while pruning (paper Table 10).")
@click.option("--shift", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random-shift augmentation in pixels.")
@click.option("--flip", is_flag=True, help="Random horizontal flips.")
@click.option("--val", default=None,
              help="Labelled validation data: an ImageFolder directory or an embedded task's "
                   "held-out split ('digits-test', 'mnist5k-test').")
@click.option("--mean", default=None, help="Normalisation mean for image folders, e.g. "
                                             "0.485,0.456,0.406.")
@click.option("--std", default=None)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where pruning and fine-tuning run (latency is measured in the LUT's mode).")
@click.option("--cudnn-benchmark", is_flag=True,
              help="Let cuDNN autotune convolutions while pruning and fine-tuning [default: "
                   "off: every removal makes new shapes to tune again, and its picks are "
                   "not reproducible]. Latency is always measured with autotuning.")
@click.option("--checkpoint-every", type=click.FloatRange(min=0), default=60.0,
              show_default=True, metavar="SECONDS",
              help="Write the pruning state (state/prune.pt: model and momentum, ~200 MB for "
                   "resnet50) at most this often, and when pruning ends; 0 = after every "
                   "step. An interrupted run resumes from it, losing at most this much work.")
@click.option("--no-measure", is_flag=True, help="Skip the end-to-end latency measurement.")
@click.option("--measure-rounds", type=click.IntRange(min=1), default=8, show_default=True,
              help="Interleaved rounds of teacher and student per latency measurement; one "
                   "whose interval straddles the budget is measured up to twice as many, then "
                   "settled by its median (and says so).")
@runtime_options("teacher and student (for --target-measured-ratio and the report; writes "
                 "pruned.onnx too)", "Use a LUT timed in another runtime than --runtime (its "
                                     "estimates then only rank the groups; the measurement "
                                     "decides the budget).")
@click.option("--start-from", type=click.Path(path_type=Path, file_okay=False), default=None,
              metavar="RUN_DIR",
              help="Prune further from another finished run's pruned student (before its "
                   "fine-tuning) instead of the teacher; same teacher, data, LUT and group "
                   "size. Tighter budgets in turn then share their common steps.")
@click.option("--snap", is_flag=True,
              help="After pruning, round each layer's channel count up to the top of its "
                   "latency step where the LUT says that costs nothing (filters kept for "
                   "free: grown back from the teacher, zero in the layers reading them, "
                   "then fine-tuned). The report says how many and at what LUT cost.")
@click.option("--max-steps", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Give up (with an error) after this many pruning steps.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-q", "--quiet", is_flag=True)
def prune(teacher, data, luts, out, target_latency, target_ratio, target_measured_ratio,
          criterion, eta, selector,
          group_size, groups_per_step, interval, loss, temperature, batch_size, lr, epochs,
          decay_at, no_update, shift, flip, val, mean, std, device, cudnn_benchmark,
          checkpoint_every, no_measure, measure_rounds, runtime, allow_mismatch, start_from,
          snap, max_steps,
          seed, quiet, input_size, model_weights, model_args, builder) -> None:
    """Prune TEACHER to a latency or filter target.

    TEACHER is an hwprune checkpoint with weights, or a builder spec (a torchvision name,
    timm:NAME, package.module:callable) with --weights.

    Every INTERVAL minibatches the GROUPS-PER-STEP least important groups of GROUP-SIZE
    filters are removed physically, until the target is met; then the student is
    fine-tuned by distillation from the teacher. A rerun with the same --out resumes.
    Under torchrun, each rank trains on its own minibatches and all pick the same groups.
    """
    from hwprune.pruner import DataError, GroupError, PruneConfig, TargetError
    from hwprune.pruner.finetune import FineTuneConfig
    from hwprune.pruner.run import JobError, PruneJob, run_job

    try:
        pc = PruneConfig(criterion=criterion, eta=0.0 if criterion == "taylor" else eta,
                         group_size=group_size, groups_per_step=groups_per_step,
                         interval=interval, target_latency_ms=target_latency,
                         target_ratio=target_ratio, selector=selector, loss=loss,
                         temperature=temperature, lr=lr, batch_size=batch_size,
                         update_weights=not no_update, shift=shift, flip=flip,
                         max_steps=max_steps, seed=seed, snap=snap)
        fc = FineTuneConfig(epochs=epochs, lr=lr, milestones=(decay_at,),
                            batch_size=batch_size, temperature=temperature, loss=loss,
                            shift=shift, flip=flip, seed=seed)
        rep = run_job(PruneJob(teacher, out, data, list(luts), pc, fc, val, _floats(mean),
                               _floats(std), not no_measure, measure_rounds=measure_rounds,
                               device=device,
                               progress=not quiet, measured_ratio=target_measured_ratio,
                               checkpoint_every=checkpoint_every,
                               cudnn_benchmark=cudnn_benchmark, start_from=start_from,
                               runtime=lut_runtime(runtime, luts),
                               allow_mismatch=allow_mismatch, input_size=input_size,
                               allow_builder=builder, weights=model_weights,
                               model_args=parse_model_args(model_args)))
    except (ModelError, LutError, DataError, GroupError, TargetError, JobError,
            ValueError) as exc:
        fail(exc)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: progress up to the last checkpoint (--checkpoint-every) "
                   f"is kept in {out / 'state'}; rerun to resume", err=True)
        sys.exit(130)
    b, a = rep["before"], rep["after"]
    line = f"{100 * rep['filters_kept']:.0f}% of prunable filters kept"
    if "snap" in rep:
        line += f" ({rep['snap']['filters_added']} of them kept for free by --snap)"
    if b["estimated_ms"] is not None:
        line += f"; estimated {b['estimated_ms']:.3f} -> {a['estimated_ms']:.3f} ms"
    if "measured" in rep:
        m = rep["measured"]
        rt = (m.get("runtime") or {}).get("runtime", "torch")
        line += (f"; measured {m['teacher_ms']:.3f} -> {m['pruned_ms']:.3f} ms "
                 f"(x{m['speedup']:.2f}" + (f", in {rt}" if rt != "torch" else "") + ")")
    click.echo(line)
    if "measured" in rep:
        click.echo(_ratio_line(rep))
    for warning in rep.get("warnings", []):
        click.echo(warning, err=True)
    if "accuracy" in rep:
        acc = rep["accuracy"]
        click.echo(f"accuracy on {acc['data']}: teacher {100 * acc['teacher']:.2f}%, "
                   f"pruned {100 * acc['pruned']:.2f}%")
    if "export" in rep:
        click.echo(f"exported: max abs difference from PyTorch "
                   f"{rep['export']['max_abs_diff']:.2e} in {rep['export']['checked_in']['runtime']}")
    click.echo(f"wrote {out / 'pruned.pt'}, " + (f"{out / 'pruned.onnx'}, " if "export" in rep
                                                 else "")
               + f"{out / 'report.json'}, {out / 'trajectory.png'}")
    if "saved" in rep:
        d = rep["saved"]["reload_max_abs_diff"]
        click.echo(f"pruned.pt reloaded: outputs {'equal' if d == 0 else f'within {d:.1e}'} "
                   f"on {rep['saved']['input']} (report.json: saved.outputs)",
                   err=d > 1e-5)


def _ratio_line(rep: dict) -> str:
    """'measured ratio 66% of the teacher (63-69% at 96.9% confidence, 5 rounds); budget
    70%: met', the budget part only with --target-measured-ratio."""
    from hwprune.luts.verdict import RatioVerdict
    from hwprune.pruner.run import table_ratio

    m = rep["measured"]
    v = RatioVerdict(m["ratio"], m["ratio_low"], m["ratio_high"], m["ratio_confidence"],
                     m["rounds"], m.get("goal"))
    line = f"measured ratio {v.describe()}"
    if v.budget is not None:
        line += f"; budget {100 * v.budget:.0f}%: {v.text}"
        if m.get("settled_by", "interval") != "interval":
            line += f", {m['settled']} on its point estimate"
        loop = (rep.get("measured_target") or {}).get("loop") or []
        if loop:  # what stopped the loop, beside the fresh measurement that is the result
            at = 100 * loop[-1]["measured_ratio"]
            line += f" (the measured-target loop stopped at {at:.0f}%: {loop[-1]['stopped']})"
    said = table_ratio(rep)
    return line + (f"; the table said {100 * said:.0f}%" if said else "")


@click.command()
@click.argument("model")
@model_options
@click.option("--val", required=True,
              help="Labelled data: an ImageFolder directory or an embedded task's held-out "
                   "split ('digits-test', 'mnist5k-test').")
@click.option("--mean", default=None)
@click.option("--std", default=None)
def evaluate(model, val, mean, std) -> None:
    """Top-1 accuracy of MODEL (e.g. a pruned.pt) on labelled validation data."""
    from hwprune.pruner import DataError, evaluate as top1, load_images
    from hwprune.zoo import model_label, resolve_model
    from hwprune.zoo.check import num_classes

    try:
        r = resolve_model(model)
        data = load_images(val, r.input_size, _floats(mean), _floats(std))
        data.check_classes(num_classes(r.module), model_label(model))
        click.echo(f"{model_label(model)}: top-1 {100 * top1(r.module, data):.2f}% on {len(data)} images "
                   f"of {data.source}")
    except (ModelError, DataError) as exc:
        fail(exc)


@click.command("import")
@click.argument("arch")
@click.argument("weights", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="hwprune checkpoint to write (the TEACHER of `hwprune prune`).")
@click.option("--num-classes", type=click.IntRange(min=1), default=None,
              help="Classifier outputs, for a model trained on your own classes "
                   "[default: the architecture's, 1000 for torchvision].")
@click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
              help="Another argument for ARCH's builder (repeatable); VALUE as JSON where it "
                   "parses, else a string.")
def import_weights_cmd(arch, weights, out, num_classes, model_args) -> None:
    """Turn your trained weights for ARCH into an hwprune checkpoint.

    ARCH is a builder: a torchvision name (resnet50), timm:NAME (timm:resnet26d, with the
    timm extra) or package.module:callable (any function returning your nn.Module, run
    from the current directory as `python -m` would). WEIGHTS is a state dict saved with
    torch.save (DDP's 'module.' prefix and a nesting under 'state_dict' or 'model' are
    accepted); it is read with weights_only=True, so no pickled code runs. Loading the
    checkpoint later calls a package.module:callable builder only with --builder naming it.
    Example: hwprune import resnet50 my_resnet50.pth --out teacher.pt
    """
    from hwprune.zoo import import_weights

    kwargs = parse_model_args(model_args)
    if num_classes:
        kwargs["num_classes"] = num_classes
    try:
        path = import_weights(arch, weights, out, **kwargs)
    except ModelError as exc:
        fail(exc)
    click.echo(f"wrote {path} ({arch}{', ' + str(kwargs) if kwargs else ''})")
