"""Export a model for a deployment runtime, and prove the export computes what PyTorch does.

ONNX comes from PyTorch's own exporter (``torch.onnx.export``, the ``torch.export``-based
one PyTorch recommends); OpenVINO's model (``.xml`` + ``.bin``) from OpenVINO's converter
applied to that ONNX file, with weights kept in fp32. Every export is then run in its
runtime on random inputs and compared with PyTorch's outputs; a maximum absolute
difference above the tolerance refuses it.

Nothing is written half-way: the files are made and checked in a temporary directory
beside the destination and renamed into place only once they pass.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwprune.sizes import Size, hw
from hwprune.zoo.models import ModelError, _first_line
from hwprune.zoo.runtimes import RuntimeMissing, open_session, require

FORMATS = ("onnx", "openvino")
# The runtime each format is checked in.
CHECKED_IN = {"onnx": "onnxruntime", "openvino": "openvino"}
# fp32 outputs of a converted graph differ from PyTorch's by rounding in reordered sums:
# about 1e-6 to 1e-5 on logits of order 10; 1e-3 is far above that and far below an error.
# Rounding grows with the values summed, so the tolerance is relative to the outputs'
# largest magnitude where that exceeds 1 (random-weight inception_v4 at 64 px: logits in
# the tens, a difference of 7e-3 from rounding alone, 2026-12-06 timm survey).
TOLERANCE = 1e-3


class ExportError(ModelError):
    """The model cannot be exported, or its export does not compute PyTorch's outputs."""


@dataclass
class ExportResult:
    path: Path
    format: str
    files: list[str]
    opset: int
    dynamic_batch: bool
    input_shape: list[int]
    max_abs_diff: float
    tolerance: float
    checked_inputs: int
    checked_in: dict = field(default_factory=dict)  # zoo.runtimes.RuntimeInfo
    seconds: float = 0.0
    output_scale: float = 1.0  # the PyTorch outputs' largest magnitude, at least 1

    def as_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}

    def describe(self) -> str:
        batch = "dynamic batch" if self.dynamic_batch else f"batch {self.input_shape[0]}"
        rt = self.checked_in
        return (f"wrote {', '.join(self.files)} (ONNX opset {self.opset}, {batch}, input "
                f"{'x'.join(map(str, self.input_shape[1:]))}): outputs match PyTorch's on "
                f"{self.checked_inputs} random inputs in {rt.get('runtime')} {rt.get('version')}, "
                f"max abs difference {self.max_abs_diff:.2e} (tolerance {self.tolerance:g}"
                + (f" x outputs up to {self.output_scale:.3g})" if self.output_scale > 1 else ")"))


def export_model(module: nn.Module, out: str | os.PathLike, input_size: Size, in_channels: int,
                 fmt: str = "onnx", opset: int | None = None, dynamic_batch: bool = False,
                 tolerance: float = TOLERANCE, checks: int = 3, seed: int = 0) -> ExportResult:
    """Write ``module`` to ``out`` (``.onnx``, or ``.xml`` with its ``.bin`` for OpenVINO)."""
    t0 = time.perf_counter()
    if fmt not in FORMATS:
        raise ExportError(f"unknown format '{fmt}' (choose {', '.join(FORMATS)})")
    out = Path(out)
    if fmt == "openvino" and out.suffix != ".xml":
        raise ExportError(f"{out}: an OpenVINO model is an .xml file with a .bin beside it: "
                          f"give --out NAME.xml")
    require("onnx")
    require(CHECKED_IN[fmt])
    net = copy.deepcopy(module).cpu().float().eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        onnx_path = tmp / "model.onnx"
        opset_used = _to_onnx(net, onnx_path, input_size, in_channels, opset, dynamic_batch)
        made = [onnx_path]
        if fmt == "openvino":
            made = _to_openvino(onnx_path, tmp / "model.xml")
        diff, scale, n, info = _check(net, made[0], CHECKED_IN[fmt], input_size, in_channels,
                                      dynamic_batch, checks, seed)
        if not diff <= tolerance * scale:  # NaN fails too
            raise ExportError(f"the {fmt} export does not compute the model's outputs: max abs "
                              f"difference {diff:.3g} from PyTorch's on {n} random inputs "
                              f"(tolerance {tolerance:g}"
                              + (f" x outputs up to {scale:.3g}" if scale > 1 else "")
                              + "); nothing written")
        files = _move_into_place(made, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, fmt, [str(f) for f in files], opset_used, dynamic_batch,
                        [1, in_channels, *hw(input_size)], diff, tolerance, n,
                        info.as_dict(), time.perf_counter() - t0, scale)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _export_cause(exc: Exception) -> str:
    """The exporter's first line, and the operator and exception its summary names (the
    first line alone says only which stage failed)."""
    text = _ANSI.sub("", str(exc))
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    summary = text.split("## Exception summary", 1)
    if len(summary) < 2:
        return first
    cause = next((ln.strip() for ln in summary[1].splitlines() if ln.strip()), "")
    op = re.search(r"target=([\w.]+)", summary[1])
    where = f" at {op.group(1)}" if op else ""
    return f"{first.rstrip(' .:')}{where}: {cause}" if cause else first


def _to_onnx(net: nn.Module, path: Path, size: Size, in_ch: int, opset: int | None,
             dynamic_batch: bool) -> int:
    onnx = require("onnx")
    require("onnxscript")  # the torch.export-based exporter translates through it
    # A batch of 2 as the example: torch.export specialises a dimension of size 1.
    x = torch.randn(2 if dynamic_batch else 1, in_ch, *hw(size))
    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    try:
        # The exporter reports each stage on stdout: not this command's output.
        with contextlib.redirect_stdout(io.StringIO()), torch.inference_mode(False):
            program = torch.onnx.export(net, (x,), dynamo=True, opset_version=opset,
                                        dynamic_shapes=shapes, input_names=["input"],
                                        output_names=["output"], external_data=False)
            program.save(str(path), external_data=False)
    except RuntimeMissing:
        raise
    except Exception as e:
        raise ExportError(f"torch.onnx.export failed: {_export_cause(e)}") from None
    model = onnx.load(str(path))
    return int(next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0))


def _to_openvino(onnx_path: Path, xml: Path) -> list[Path]:
    ov = require("openvino")
    try:
        model = ov.convert_model(str(onnx_path))
        ov.save_model(model, str(xml), compress_to_fp16=False)  # fp32 weights, as exported
    except Exception as e:
        raise ExportError(f"OpenVINO cannot convert the model: {_first_line(e)}") from None
    return [xml, xml.with_suffix(".bin")]


def _check(net: nn.Module, path: Path, runtime: str, size: Size, in_ch: int, dynamic: bool,
           checks: int, seed: int):
    session = open_session(path, runtime, threads=max(1, torch.get_num_threads()))
    g = torch.Generator().manual_seed(seed)
    worst, scale = 0.0, 1.0
    batches = [1] + ([3] if dynamic else [])
    n = 0
    with torch.inference_mode():
        for i in range(checks):
            for b in batches:
                x = torch.randn(b, in_ch, *hw(size), generator=g)
                want = net(x).numpy()
                got = session.run(x.numpy())
                if got.shape != want.shape:
                    raise ExportError(f"the export gives outputs of shape {got.shape}, PyTorch "
                                      f"{want.shape}")
                worst = max(worst, float(np.max(np.abs(got - want))))
                scale = max(scale, float(np.max(np.abs(want))))
                n += 1
    return worst, scale, n, session.info


def _move_into_place(made: list[Path], out: Path) -> list[Path]:
    """Each file renamed into place; for OpenVINO the .bin first, so an .xml that exists
    always has its weights beside it."""
    targets = [out] if len(made) == 1 else [out, out.with_suffix(".bin")]
    for src, dst in sorted(zip(made, targets), key=lambda p: p[1].suffix == ".xml"):
        os.chmod(src, 0o644)
        os.replace(src, dst)
    return targets


__all__ = ["FORMATS", "TOLERANCE", "ExportError", "ExportResult", "export_model"]
