"""``hwprune export``: a model for ONNX Runtime or OpenVINO, checked against PyTorch."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hwprune.options import SIZE, model_options
from hwprune.zoo import ModelError, resolve_model
from hwprune.zoo.export import FORMATS, TOLERANCE, export_model


@click.command("export")
@click.argument("model")
@model_options
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="onnx", show_default=True,
              help="onnx: one .onnx file (ONNX Runtime, TensorRT, ...); openvino: NAME.xml "
                   "with NAME.bin beside it.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Destination (.onnx, or .xml for openvino); replaced only once the export "
                   "passes its check.")
@click.option("--input-size", type=SIZE, default=None,
              help="Input size: one side in px, or HEIGHTxWIDTH (48x80) [default: the model's own].")
@click.option("--opset", type=click.IntRange(min=7), default=None,
              help="ONNX opset [default: the exporter's recommended one].")
@click.option("--dynamic-batch", is_flag=True,
              help="Leave the batch dimension free (checked at batch 1 and 3).")
@click.option("--tolerance", type=click.FloatRange(min=0), default=TOLERANCE, show_default=True,
              help="Largest absolute difference from PyTorch's outputs accepted (fp32), times "
                   "the outputs' largest magnitude where that exceeds 1.")
def export_cmd(model, fmt, out, input_size, opset, dynamic_batch, tolerance) -> None:
    """Export MODEL (a torchvision name, 'demo', or an hwprune checkpoint, pruned or not).

    \b
    The export is run in its runtime (ONNX Runtime for onnx, OpenVINO for openvino)
    on random inputs and its outputs compared with PyTorch's; the maximum absolute
    difference is printed, and above --tolerance nothing is written (exit 2).
    Needs the runtimes: pip install 'hwprune[runtimes]'.
    """
    try:
        resolved = resolve_model(model)
        result = export_model(resolved.module, out, input_size or resolved.input_size,
                              resolved.in_channels, fmt, opset, dynamic_batch, tolerance)
    except ModelError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(result.describe())
