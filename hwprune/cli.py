"""The ``hwprune`` command line: parses options and calls the library, nothing more."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hwprune.luts import LutError, format_summary, merge_luts, summarize, variant_keys
from hwprune.luts.lookup import DEFAULT_STAT, table_input_size
from hwprune.profiler import (KeySpaceError, ProfileConfig, ProfileError, TimingConfig, TimingError,
                      parse_shard, profile_model)
from hwprune.profiler.store import parts_dir
from hwprune.profiler.table import calibrations_dropped
from hwprune.options import SIZE, fail, model_options, runtime_options
from hwprune.sizes import size_text
from hwprune.zoo import ModelError, model_label, resolve_model
from hwprune.zoo.runtimes import RUNTIMES

USER_ERRORS = (ModelError, KeySpaceError, TimingError, LutError, ProfileError)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="hwprune")
def cli() -> None:
    """hwprune: make a trained CNN meet a latency budget on a given device, without its data.

    \b
    Steps:  import   -> your trained weights as an hwprune checkpoint
            profile  -> a latency look-up table (LUT) of the device
            lut      -> inspect, check, merge, estimate with, validate and plot LUTs
            synth    -> training images from the model alone (DeepInversion)
            prune    -> remove filter groups until a latency target, then fine-tune
            evaluate -> accuracy of a (pruned) model on labelled data
            export   -> the model for ONNX Runtime or OpenVINO, checked against PyTorch
    """


@cli.command()
@click.argument("model")
@model_options
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where to time each key.")
@click.option("--step", type=click.IntRange(min=1), default=16, show_default=True,
              help="Channel step of the scan grid (the pruning group size; 1 = paper's full scan).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="LUT file to write (Parquet). An existing compatible file is extended.")
@click.option("--input-size", type=SIZE, default=None,
              help="Input size: one side in px, or HEIGHTxWIDTH (48x80) [default: the model's own, 224 for torchvision].")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32",
              show_default=True)
@click.option("--channels-last", is_flag=True, help="Time in channels_last memory format.")
@click.option("--mode", type=click.Choice(["eager", "graph"]), default="eager", show_default=True,
              help="graph: replay CUDA graphs to remove launch overhead (cuda only).")
@click.option("--algos", type=click.Choice(["auto", "all"]), default="auto", show_default=True,
              help="auto: the library's own choice (cudnn.benchmark on cuda); all: time every "
                   "algorithm (cuDNN engines via cudnn-frontend; oneDNN/native on cpu), keep "
                   "the fastest and record which.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU intra-op threads, fixed for the run [default: 1, the predictable "
                   "choice: more threads are noisier between rounds on a shared machine].")
@click.option("--layers", multiple=True, metavar="GLOB",
              help="Only layers whose name matches (repeatable), e.g. 'layer4.*'.")
@click.option("--max-keys", type=click.IntRange(min=0), default=None,
              help="Measure at most this many missing keys now; rerun to continue.")
@click.option("--shard", default=None, metavar="I/N",
              help="Measure only shard I of N (0-based); writes OUT's stem + .shard-I-of-N. "
                   "Automatic under torchrun.")
@click.option("--max-reps", type=click.IntRange(min=2), default=1000, show_default=True,
              help="Cap on timed repetitions per key (the paper's fixed count).")
@click.option("--rel-ci", type=float, default=0.01, show_default=True,
              help="Stop repeating once the 95%% CI half-width is within this fraction of the mean.")
@click.option("--weight-cache", "weights", type=click.Choice(["auto", "hot", "cold"]),
              default="auto",
              show_default=True,
              help="cold: rotate copies of each op's weights so they come from memory, as in a "
                   "network whose weights exceed the last-level cache; auto: cold exactly then "
                   "(with --runtime: every key both ways, blended by the size of the network "
                   "being estimated).")
@click.option("--time-budget", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Stop measuring after this long (a rented GPU); rerun to continue.")
@click.option("--for-validation", type=click.IntRange(min=3), default=None, metavar="N",
              help="Only the keys that `lut validate --samples N --seed SEED` will look up, not "
                   "the whole grid: checks a model too big to scan (e.g. resnet50 at step 16), "
                   "but the pruner needs the full grid.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Variant seed for --for-validation (use the same in `lut validate`).")
@click.option("--calibrate", "calibrate_n", type=click.IntRange(min=0), default=8,
              show_default=True, metavar="N",
              help="Once the whole grid is measured, time N random pruned variants end to end "
                   "and store the in-network calibration (operators run slower inside a "
                   "network than alone; see `hwprune lut calibrate`). 0: none.")
@click.option("--runtime", type=click.Choice(RUNTIMES), default="torch", show_default=True,
              help="Time each key as this runtime runs it (onnxruntime, openvino: CPU only): "
                   "Conv+BN(+add)(+activation) chains as one fused key, each in a small ONNX "
                   "graph timed by the runtime's own per-node profile; the calibration then "
                   "measures whole variants in that runtime.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def profile(model, device, step, out, input_size, batch, dtype, channels_last, mode, algos,
            threads, layers, max_keys, shard, max_reps, rel_ci, weights, time_budget,
            for_validation, seed, calibrate_n, runtime, quiet) -> None:
    """Time every operator key of MODEL's pruning grid and store the LUT.

    MODEL is a builder (a torchvision name such as resnet18, 'demo' for the embedded digits
    net, timm:NAME, or package.module:callable returning your nn.Module; --weights loads
    your state dict) or an hwprune checkpoint (.pt).
    Interrupted runs resume: rerun the same command and only missing keys are measured.
    """
    try:
        timing = TimingConfig(device=device, dtype=dtype, batch=batch,
                              channels_last=channels_last, mode=mode, algos=algos,
                              threads=threads, max_reps=max_reps, rel_ci=rel_ci)
        keys = None
        if for_validation is not None:
            if layers:
                raise ProfileError("--for-validation and --layers cannot be combined")
            keys = variant_keys(model, step, for_validation, seed, input_size, runtime)
        cfg = ProfileConfig(model, out, step, input_size, layers, max_keys,
                            parse_shard(shard) if shard else None, timing, not quiet, weights,
                            keys, time_budget, runtime)
        result = profile_model(cfg)
    except USER_ERRORS as exc:
        fail(exc)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: measured keys are kept in {parts_dir(out)}; "
                   "rerun the same command to resume", err=True)
        sys.exit(130)
    r = result
    click.echo(f"{r.out}: {r.keys_measured} keys measured in {r.wall_seconds:.1f} s "
               f"({r.keys_per_second:.1f} keys/s, {r.device_seconds:.1f} device-s), "
               f"{r.keys_before} already there, {r.keys_total} in the grid"
               + (f", {r.keys_left} left (rerun to continue)" if r.keys_left else ""))
    if r.stages:
        click.echo("seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in r.stages.items()))
    if r.merged:
        click.echo(f"rank 0 merged all shards into {r.merged}")
    whole = not r.keys_left and not layers and for_validation is None and \
        (r.merged is not None or (shard is None and r.out == out))
    if calibrate_n and whole:
        _calibrate(model, out, calibrate_n, input_size, max_reps, quiet,
                   skip_if_done=r.keys_measured == 0, optional=True)


def _calibrate(model, lut_path, samples, input_size, max_reps, quiet, skip_if_done=False,
               optional=False) -> None:
    from hwprune.luts import CalibrateConfig, TooFewVariants, calibrate, read_meta
    from hwprune.luts.fit import describe_fit, describe_holdout, fit_warning, remeasured_line

    try:
        if skip_if_done and read_meta(lut_path).get("calibration"):
            return
        cal = calibrate(CalibrateConfig(model, lut_path, samples, input_size,
                                        max_reps=max_reps, progress=not quiet))
    except (TooFewVariants, ModelError) as exc:
        # Too coarse a grid, or a model whose variants cannot be built (ShuffleNet's channel
        # shuffle defeats Torch-Pruning): the table itself is complete and kept.
        if not optional:
            fail(exc)
        click.echo(f"not calibrated: {exc}")
        return
    except USER_ERRORS as exc:
        fail(exc)
    f = cal["fits"][DEFAULT_STAT]
    click.echo(f"calibrated on {len(cal['variants'])} pruned variants measured end to end: "
               f"{describe_fit(f)} (R2 {f['r2']:.3f}, in-sample MAPE "
               f"{100 * f['mape_in_sample']:.1f}%) -> stored in {lut_path}; "
               f"{describe_holdout(f)}; {cal['seconds']:.0f} s (budget {cal['budget_s']:.0f} s)")
    if remeasured_line(cal):
        click.echo(remeasured_line(cal))
    if fit_warning(f):
        click.echo(fit_warning(f), err=True)


@cli.group()
def lut() -> None:
    """Inspect, combine, estimate with, validate and plot latency look-up tables."""


@lut.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--all-ops", is_flag=True, help="Coverage of every operator, not only convs.")
def info(path, all_ops) -> None:
    """Print a LUT's metadata, key count and coverage per conv config."""
    try:
        click.echo(format_summary(summarize(path), all_ops))
    except USER_ERRORS as exc:
        fail(exc)


@lut.command("check")
@model_options
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", default=None, metavar="NAME",
              help="Also check the LUT answers this model (a builder spec or a .pt checkpoint, "
                   "as MODEL elsewhere): every operator of it as it is, and how much of its "
                   "pruning grid the table holds.")
@click.option("--input-size", type=SIZE, default=None,
              help="One side in px, or HEIGHTxWIDTH [default: the size the LUT was profiled at for this model]")
def check_cmd(paths, model, input_size) -> None:
    """Check LUT files before using them, e.g. a table received from someone else.

    \b
    Applies the rules every command applies when it reads a table:
      schema     schema version present and known, every column with its type
      metadata   device kind, dtype, batch, memory format, timing mode, threads,
                 weights present and consistent; calibration and drift well-formed;
                 the metadata digest (tables written by newer hwprune) unchanged
      keys       channel counts, kernels, strides, ... in range
      latency    every mean/median/min (and drift reading) finite and plausible
      duplicates no key twice with different latencies
      rows       the rows' digest (tables written since 2026-11-29) unchanged
    One line per file; exit status 0 when every file passes, 2 otherwise.
    """
    from hwprune.luts.check import check_file

    results = [check_file(p, model, input_size) for p in paths]
    for r in results:
        click.echo(r.message, err=not r.ok)
    if not all(r.ok for r in results):
        sys.exit(2)


@lut.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True)
def merge(paths, out) -> None:
    """Join LUT shards (or tables of several models) measured under the same conditions.

    The merged table carries no in-network calibration: each was fitted against one
    table's rows. Run `hwprune lut calibrate MODEL --lut OUT` on the result.
    """
    try:
        dropped = calibrations_dropped(list(paths))  # before: OUT may be one of the inputs
        merged = merge_luts(list(paths), out)
    except USER_ERRORS as exc:
        fail(exc)
    click.echo(f"{merged}: merged {len(paths)} files")
    if dropped:
        which = ", ".join(f"{model} in {p.name}" for p, model in dropped)
        click.echo(f"calibration dropped ({which}: fitted against that table's rows, not the "
                   f"merged ones): re-run `hwprune lut calibrate MODEL --lut {out}`")


_LUTS = click.option("--lut", "luts", multiple=True, required=True,
                     type=click.Path(path_type=Path), help="LUT file (repeatable).")
_STAT = click.option("--stat", type=click.Choice(["mean_ms", "median_ms", "min_ms"]),
                     default="median_ms", show_default=True,
                     help="Which stored statistic to sum. The paper stores means; one burst "
                          "of a shared machine inflates a mean, not a median.")


@lut.command("estimate")
@click.argument("model")
@model_options
@_LUTS
@_STAT
@click.option("--input-size", type=SIZE, default=None,
              help="One side in px, or HEIGHTxWIDTH [default: the size the LUT was profiled at for this model]")
@click.option("--strict", is_flag=True, help="Every key must be measured exactly: no interpolation.")
@click.option("--device", "target_device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Refuse a LUT measured on another device kind.")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="Refuse a LUT measured in another dtype.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Refuse a LUT measured at another batch size.")
@click.option("--allow-mismatch", is_flag=True, help="Use a LUT even if it does not match.")
@click.option("--summary", is_flag=True, help="Totals only, no per-layer table.")
def estimate_cmd(model, luts, stat, input_size, strict, target_device, dtype, batch,
                 allow_mismatch, summary) -> None:
    """Per-layer and total latency of MODEL according to the LUT(s)."""
    from hwprune.luts import Lut, estimate

    try:
        target = {"device_kind": target_device, "dtype": dtype, "batch": batch}
        table = Lut.load(list(luts), stat=stat, target=target, allow_mismatch=allow_mismatch)
        resolved = resolve_model(model)
        size = table_input_size(table.meta, resolved.name, input_size, resolved.input_size)
        est = estimate(resolved.module, table, size, resolved.in_channels, strict)
    except USER_ERRORS as exc:
        fail(exc)
    if not summary:
        df = est.layers.assign(how=est.layers["exact"].map({True: "exact", False: "interp"}))
        click.echo(df.drop(columns="exact").to_string(index=False, float_format="%.4f"))
        click.echo("")
    click.echo(f"{resolved.name} @ {size_text(size)} on {table.meta.get('device_name')} "
               f"({table.meta.get('dtype')}, batch {table.meta.get('batch')}): {est.summary()}")


@lut.command("validate")
@click.argument("model")
@model_options
@_LUTS
@_STAT
@click.option("--samples", type=click.IntRange(min=3), default=30, show_default=True,
              help="Pruned variants to build and measure.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Directory for report.json, variants.csv and estimate_vs_measured.png.")
@click.option("--input-size", type=SIZE, default=None)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Interleaved measurement passes over all variants (median kept).")
@click.option("--max-reps", type=click.IntRange(min=2), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--strict", is_flag=True)
@click.option("--recalibrate", is_flag=True,
              help="Also measure the table's calibration variants (8 new ones if it has "
                   "none), in the same interleaved rounds as these, refit its calibration "
                   "on them and store it in the table; the report scores the new fit and "
                   "says how the previous one did. A calibration made minutes earlier meets "
                   "another machine than the validation on a shared VM.")
@click.option("--fresh", is_flag=True,
              help="Measure every variant again. Without it, variants measured into OUT "
                   "by an earlier run are reused when measured the same way (device, dtype, "
                   "batch, threads, mode, memory format, runtime, model, input size), and "
                   "the output says how many and from when.")
@runtime_options("the variants", "Compare a LUT with measurements in a runtime it was not "
                                 "timed in.")
@click.option("-q", "--quiet", is_flag=True)
def validate_cmd(model, luts, stat, samples, out, input_size, rounds, max_reps, seed, strict,
                 recalibrate, fresh, runtime, allow_mismatch, quiet) -> None:
    """Estimate and measure N pruned variants of MODEL; report R², MAPE, max error, Spearman.

    Variants take random per-dimension channel counts on the LUT's grid (plus the
    original, uniform, lopsided and extreme ones), respect residual coupling, and
    are measured end to end in the LUT's own mode (device, dtype, batch, threads).
    """
    from hwprune.luts import ValidateConfig, validate
    from hwprune.luts.fit import describe_fit
    from hwprune.luts.recalibrate import describe_recalibration
    from hwprune.luts.validate import describe_drift

    try:
        report = validate(ValidateConfig(model, [str(p) for p in luts], out, samples, input_size,
                                         seed, stat, max_reps, rounds, strict,
                                         allow_mismatch=allow_mismatch, runtime=runtime,
                                         progress=not quiet, recalibrate=recalibrate,
                                         fresh=fresh))
    except USER_ERRORS as exc:
        fail(exc)
    p, c = report, report["conv_only"]
    rt = p["runtime"]
    click.echo(f"{p['model']} @ {size_text(p['input_size'])}, {p['n_samples']} variants, measured "
               f"{p['measured_range_ms'][0]:.3f}-{p['measured_range_ms'][1]:.3f} ms"
               + (f" in {rt['runtime']} {rt.get('version', '')} ({rt.get('threads')} threads), "
                  f"table timed in {p['lut_runtime']}" if rt["runtime"] != "torch" else ""))
    if p.get("reused"):
        u = p["reused"]
        click.echo(f"reused {u['rows']} of the {p['n_samples']} variants' measurements from an "
                   f"earlier run into {out} (measured {u['measured_from']} to "
                   f"{u['measured_to']}, the same way); --fresh measures them again")
    click.echo(f"{'':16}{'R2 identity':>12}{'R2 linear':>11}{'MAPE':>8}{'max err ms':>12}"
               f"{'Spearman':>10}")
    main = [("calibrated", p), ("operator sum", p["operator_sum"])] if p.get("calibration") \
        else [("all operators", p)]
    for name, r in (*main, ("convs only", c),
                    ("FLOPs (fitted)", p["proxies"]["flops"]),
                    ("params (fitted)", p["proxies"]["params"])):
        click.echo(f"{name:16}{r['r2_identity']:>12.3f}{r['r2_linear']:>11.3f}"
                   f"{100 * r['mape']:>7.1f}%{r['max_abs_err_ms']:>12.3f}{r['spearman']:>10.3f}")
    if p.get("calibration_not_applied"):
        click.echo(f"the table's calibration is {p['calibration_not_applied']}")
    if p.get("calibration"):
        k = p["calibration"]
        click.echo(f"calibrated: {describe_fit(k)} (fitted on {k['variants']} "
                   f"other variants of {k['model']}); {k['shared_with_validation']} of these "
                   f"variants were among them and are left out of its row")
    if p.get("remeasured_after_spread"):
        click.echo(f"the first {rounds} rounds varied {100 * p['remeasured_after_spread']:.0f}% "
                   f"(median over the variants): measured again in as many rounds, medians "
                   f"over all")
    if describe_recalibration(p.get("recalibration")):
        click.echo(describe_recalibration(p["recalibration"]))
    if describe_drift(p):
        click.echo(describe_drift(p))
    click.echo(f"wrote {out / 'report.json'}, {out / 'variants.csv'}, "
               f"{out / 'estimate_vs_measured.png'}")


@lut.command("calibrate")
@click.argument("model")
@model_options
@click.option("--lut", "lut_path", type=click.Path(path_type=Path), required=True,
              help="The LUT to calibrate (rewritten in place, atomically).")
@click.option("--samples", type=click.IntRange(min=3), default=8, show_default=True,
              help="Random pruned variants to measure end to end.")
@click.option("--input-size", type=SIZE, default=None)
@click.option("--max-reps", type=click.IntRange(min=2), default=1000, show_default=True)
@click.option("-q", "--quiet", is_flag=True)
def calibrate_cmd(model, lut_path, samples, input_size, max_reps, quiet) -> None:
    """Fit how the LUT's operator sums relate to whole-network latency, and store it.

    Operators timed alone run with warm caches; inside a network (on a CPU most of all)
    the same operators take longer. This measures SAMPLES random pruned variants of
    MODEL end to end in the LUT's own mode and fits measured = slope x operator sum +
    per-operator overhead x operators. Estimates, validation and the pruner then use
    the calibrated value; `lut validate` leaves these variants out of its score.
    `hwprune profile` runs this by default once the grid is complete.
    """
    _calibrate(model, lut_path, samples, input_size, max_reps, quiet)


@lut.command("plot")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--layer", required=True, help="A conv layer name, as `hwprune lut info` lists.")
@_STAT
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="PNG to write [default: PATH's stem + _LAYER.png].")
def plot(path, layer, stat, out) -> None:
    """Heat map of one conv config's latency over (c_in, c_out)."""
    from hwprune.luts import Lut, plot_layer

    out = out or path.with_name(f"{path.stem}_{layer.replace('.', '_')}.png")
    try:
        click.echo(f"wrote {plot_layer(Lut.load(path, stat=stat), layer, out)}")
    except USER_ERRORS as exc:
        fail(exc)


@cli.command()
@click.argument("model")
@model_options
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Dataset directory (ImageFolder PNGs, synthetic.pt, preview.png, summary.json).")
@click.option("--n-images", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--preset", type=click.Choice(["imagenet", "kt", "multires", "fullres", "demo"]),
              default=None, help="Paper settings [default: demo for the demo net, else kt].")
@click.option("--iterations", type=click.IntRange(min=1), default=None)
@click.option("--lr", type=float, default=None)
@click.option("--alpha-f", type=float, default=None, help="BatchNorm-statistics loss weight.")
@click.option("--alpha-tv", type=float, default=None, help="l2 total-variation weight.")
@click.option("--alpha-tv-l1", type=float, default=None)
@click.option("--alpha-l2", type=float, default=None)
@click.option("--first-bn-multiplier", type=float, default=None)
@click.option("--jitter", type=click.IntRange(min=0), default=None)
@click.option("--adi-scale", type=float, default=None,
              help="Adaptive DeepInversion competition weight (needs --student).")
@click.option("--student", default=None, help="Student model for Adaptive DeepInversion.")
@click.option("--real-images", default=None,
              help=".pt file of real images: feature statistics for models without BatchNorm.")
@click.option("--classes", default=None, metavar="LIST",
              help="Comma-separated class ids [default: every class, balanced].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in a non-empty --out.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--amp", type=click.Choice(["none", "fp16", "bf16"]), default=None,
              help="Run the teacher under autocast [default: none]; fp16 uses dynamic loss "
                   "scaling so the small BatchNorm-statistics gradients survive.")
@click.option("--channels-last", is_flag=True,
              help="Images and teacher in channels_last (NHWC) memory format.")
@click.option("--input-size", type=SIZE, default=None)
@click.option("-q", "--quiet", is_flag=True)
def synth(model, out, n_images, batch_size, preset, iterations, lr, alpha_f, alpha_tv,
          alpha_tv_l1, alpha_l2, first_bn_multiplier, jitter, adi_scale, student, real_images,
          classes, seed, resume, device, amp, channels_last, input_size, quiet) -> None:
    """Synthesize training images from MODEL alone with DeepInversion.

    MODEL is a trained classifier: an hwprune checkpoint (.pt), or a builder (torchvision
    name, timm:NAME, package.module:callable) with --weights; a builder alone gives
    untrained weights. Interrupted runs continue with --resume,
    and the same --seed gives the same images.
    """
    from hwprune.synth import SynthConfig, SynthError, synthesize
    from hwprune.synth import preset as get_preset

    try:
        label = model_label(model)
        name = preset or ("demo" if label == "demo" or label.endswith("demo.pt") else "kt")
        di = get_preset(name).with_(iterations=iterations, lr=lr, alpha_f=alpha_f,
                                    alpha_tv_l2=alpha_tv, alpha_tv_l1=alpha_tv_l1,
                                    alpha_l2=alpha_l2, first_bn_multiplier=first_bn_multiplier,
                                    jitter=jitter, adi_scale=adi_scale, amp=amp,
                                    channels_last=channels_last or None)
        ids = [int(c) for c in classes.split(",")] if classes else None
        summary = synthesize(SynthConfig(model, out, n_images, batch_size, di, ids, seed, resume,
                                         device, input_size, student, real_images, not quiet))
    except (*USER_ERRORS, SynthError) as exc:
        fail(exc)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: finished batches are kept in {out}; rerun with --resume",
                   err=True)
        sys.exit(130)
    if "teacher_top1" in summary:
        click.echo(f"{out}: {summary['n_images']} images, teacher top-1 on them "
                   f"{100 * summary['teacher_top1']:.1f}%, {summary['seconds_this_run']:.1f} s; "
                   f"preview {out / 'preview.png'}")


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("build/demo"),
              show_default=True, help="Output directory (LUT, reports, pruned models, plots).")
@click.option("--quick", is_flag=True,
              help="Every step and table row with far less compute (about 2 minutes).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="CPU threads for training, synthesis and fine-tuning.")
@click.option("--timing-threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPU threads of the LUT and of every latency measurement (the deployment "
                   "being modelled); one is the predictable choice on a shared machine.")
@click.option("--runtime", type=click.Choice(RUNTIMES), default="torch", show_default=True,
              help="Time the LUT and measure every budget in this runtime (onnxruntime, "
                   "openvino: each model exported and run there); the speed-ups are shown in "
                   "PyTorch too.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the data split, the teacher's training, the synthesized images and "
                   "the pruning runs (benchmarks/demo_runs.py runs the demo over several).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def demo(out, quick, threads, timing_threads, runtime, seed, quiet) -> None:
    """The main job on embedded data (scikit-learn's digits), end to end.

    \b
    Trains (or reuses) a small BatchNorm/residual teacher, profiles its CPU LUT,
    validates the LUT against measured pruned variants, synthesizes DeepInversion
    images from the teacher alone, prunes to 70/50/35% of the teacher's measured
    latency with hardware-aware and latency-blind Taylor pruning on those images,
    fine-tunes by distillation, and reports measured latency and real accuracy.
    """
    from hwprune.demo import DemoConfig, format_stages, format_table, run_demo

    cfg = (DemoConfig.quick_mode if quick else DemoConfig)(
        out=out, threads=threads, timing_threads=timing_threads, runtime=runtime, seed=seed,
        progress=not quiet)
    try:
        result = run_demo(cfg)
    except USER_ERRORS as exc:
        fail(exc)
    click.echo("\n" + format_table(result))
    v = result["lut_validation"]
    click.echo(f"\nLUT vs measured on {v['n_samples']} pruned variants ({v['estimator']}): R² "
               f"{v['r2_identity']:.3f} (identity line), MAPE {100 * v['mape']:.1f}%; operator "
               f"sum alone R² {v['operator_sum']['r2_identity']:.3f}, MAPE "
               f"{100 * v['operator_sum']['mape']:.1f}%")
    if v.get("noise"):
        click.echo(v["noise"])
    from hwprune.luts.validate import describe_drift

    drift = describe_drift(v)
    if drift:  # a table at one machine speed, measured at another
        click.echo(drift)
    click.echo(f"plots: {out / 'accuracy_vs_latency.png'}, {out / 'digits_synth_vs_real.png'}, "
               f"{out / 'validate' / 'estimate_vs_measured.png'}; results: {out / 'demo.json'}")
    click.echo(format_stages(result))


from hwprune.export_cmd import export_cmd  # noqa: E402
from hwprune.plan_cmd import plan_cmd  # noqa: E402
from hwprune.prune_cmd import evaluate, import_weights_cmd, prune  # noqa: E402

cli.add_command(import_weights_cmd)
cli.add_command(export_cmd)
cli.add_command(plan_cmd)
cli.add_command(prune)
cli.add_command(evaluate)


def main() -> None:
    cli(prog_name="hwprune")


if __name__ == "__main__":
    main()
