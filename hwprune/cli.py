"""The ``hwprune`` command line: parses options and calls the library, nothing more."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from luts import LutError, format_summary, merge_luts, summarize
from profiler import (KeySpaceError, ProfileConfig, ProfileError, TimingConfig, TimingError,
                      parse_shard, profile_model)
from profiler.store import parts_dir
from zoo import ModelError

USER_ERRORS = (ModelError, KeySpaceError, TimingError, LutError, ProfileError)


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="hwprune")
def cli() -> None:
    """hwprune: make a trained CNN meet a latency budget on a given device, without its data.

    \b
    Steps:  profile  -> a latency look-up table (LUT) of the device
            lut      -> inspect and merge LUTs
    """


@cli.command()
@click.argument("model")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where to time each key.")
@click.option("--step", type=click.IntRange(min=1), default=16, show_default=True,
              help="Channel step of the scan grid (the pruning group size; 1 = paper's full scan).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="LUT file to write (Parquet). An existing compatible file is extended.")
@click.option("--input-size", type=click.IntRange(min=1), default=None,
              help="Input resolution in px [default: the model's own, 224 for torchvision].")
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
              help="CPU intra-op threads, fixed for the run [default: torch's current].")
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
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def profile(model, device, step, out, input_size, batch, dtype, channels_last, mode, algos,
            threads, layers, max_keys, shard, max_reps, rel_ci, quiet) -> None:
    """Time every operator key of MODEL's pruning grid and store the LUT.

    MODEL is a torchvision classifier name (resnet18, resnet50, mobilenet_v2, ...),
    'demo' (the embedded digits net) or a saved model (.pt hwprune checkpoint, .pt2 export).
    Interrupted runs resume: rerun the same command and only missing keys are measured.
    """
    try:
        timing = TimingConfig(device=device, dtype=dtype, batch=batch,
                              channels_last=channels_last, mode=mode, algos=algos,
                              threads=threads, max_reps=max_reps, rel_ci=rel_ci)
        cfg = ProfileConfig(model, out, step, input_size, layers, max_keys,
                            parse_shard(shard) if shard else None, timing, not quiet)
        result = profile_model(cfg)
    except USER_ERRORS as exc:
        _fail(exc)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: measured keys are kept in {parts_dir(out)}; "
                   "rerun the same command to resume", err=True)
        sys.exit(130)
    r = result
    click.echo(f"{r.out}: {r.keys_measured} keys measured in {r.wall_seconds:.1f} s "
               f"({r.keys_per_second:.1f} keys/s, {r.device_seconds:.1f} device-s), "
               f"{r.keys_before} already there, {r.keys_total} in the grid"
               + (f", {r.keys_left} left (rerun to continue)" if r.keys_left else ""))
    if r.merged:
        click.echo(f"rank 0 merged all shards into {r.merged}")


@cli.group()
def lut() -> None:
    """Inspect and combine latency look-up tables."""


@lut.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--all-ops", is_flag=True, help="Coverage of every operator, not only convs.")
def info(path, all_ops) -> None:
    """Print a LUT's metadata, key count and coverage per conv config."""
    try:
        click.echo(format_summary(summarize(path), all_ops))
    except USER_ERRORS as exc:
        _fail(exc)


@lut.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True)
def merge(paths, out) -> None:
    """Join LUT shards (or tables of several models) measured under the same conditions."""
    try:
        merged = merge_luts(list(paths), out)
    except USER_ERRORS as exc:
        _fail(exc)
    click.echo(f"{merged}: merged {len(paths)} files")


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("build/demo"),
              show_default=True, help="Output directory.")
@click.option("--step", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("-q", "--quiet", is_flag=True)
def demo(out, step, quiet) -> None:
    """The main job on embedded data. For now: profile the demo net on this CPU, print its LUT."""
    path = out / "demo-cpu-fp32-b1.parquet"
    try:
        result = profile_model(ProfileConfig("demo", path, step, timing=TimingConfig(),
                                             progress=not quiet))
        click.echo(f"{result.keys_measured} keys measured in {result.wall_seconds:.1f} s, "
                   f"{result.keys_before} reused\n")
        click.echo(format_summary(summarize(path)))
    except USER_ERRORS as exc:
        _fail(exc)


def main() -> None:
    cli(prog_name="hwprune")


if __name__ == "__main__":
    main()
