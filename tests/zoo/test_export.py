"""Export to ONNX / OpenVINO: the exported model computes PyTorch's outputs, in the real
runtimes, or nothing is written."""

import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from hwprune.cli import cli
from hwprune.zoo import build_demo, resolve_model, save_checkpoint, shrink_to
from hwprune.zoo.export import ExportError, export_model
from hwprune.zoo.runtimes import RuntimeMissing, open_session

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")


@pytest.mark.parametrize("name,fmt", [("resnet18", "onnx"), ("mobilenet_v2", "onnx"),
                                      ("resnet18", "openvino")])
def test_torchvision_models_round_trip(name, fmt, tmp_path):
    m = resolve_model(name).module
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m.xml")
    r = export_model(m, out, 64, 3, fmt)
    assert r.max_abs_diff <= 1e-3 and r.checked_inputs == 3
    # the file on disk, loaded afresh, gives PyTorch's logits for a new input
    x = torch.randn(1, 3, 64, 64)
    got = open_session(out, "onnxruntime" if fmt == "onnx" else "openvino").run(x.numpy())
    with torch.inference_mode():
        want = m.eval()(x).numpy()
    assert got.shape == (1, 1000) and np.abs(got - want).max() <= 1e-3
    if fmt == "openvino":
        assert out.with_suffix(".bin").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_a_pruned_checkpoint_exports_with_its_channels_and_dynamic_batch(tmp_path):
    net = build_demo()
    shrink_to(net.eval(), {"stem.0": 24}, torch.zeros(1, 1, 32, 32))
    ckpt = save_checkpoint(net, tmp_path / "pruned.pt", "demo", channels={"stem.0": 24})
    r = CliRunner().invoke(cli, ["export", str(ckpt), "--out", str(tmp_path / "p.onnx"),
                                 "--dynamic-batch"])
    assert r.exit_code == 0, r.output
    assert "dynamic batch" in r.output and "max abs difference" in r.output
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(tmp_path / "p.onnx")).graph
    first_conv = next(i for i in graph.initializer if len(i.dims) == 4)
    assert first_conv.dims[0] == 24  # the pruned width, not the original 64
    s = open_session(tmp_path / "p.onnx", "onnxruntime")
    assert s.run(np.random.randn(5, 1, 32, 32).astype(np.float32)).shape == (5, 10)


class _Noisy(nn.Module):
    """A model whose export cannot compute PyTorch's outputs: it draws noise every call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x) + torch.randn_like(self.conv(x))


def test_an_export_that_does_not_match_is_refused_and_nothing_is_written(tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the user's earlier file")
    with pytest.raises(ExportError, match="does not compute the model's outputs"):
        export_model(_Noisy(), out, 16, 3)
    assert out.read_bytes() == b"the user's earlier file"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch):
    run = CliRunner().invoke
    r = run(cli, ["export", "demo", "--format", "openvino", "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 2 and "give --out NAME.xml" in r.output
    r = run(cli, ["export", "no_such_net", "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 2 and r.output.startswith("error:")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(RuntimeMissing, match=r"pip install 'hwprune\[runtimes\]'"):
        export_model(build_demo(), tmp_path / "m.xml", 32, 1, "openvino")
    r = run(cli, ["export", "demo", "--format", "openvino", "--out", str(tmp_path / "m.xml")])
    assert r.exit_code == 2 and "hwprune[runtimes]" in r.output
    assert not list(tmp_path.iterdir())


def test_the_tolerance_scales_with_the_outputs_magnitude(tmp_path):
    """Rounding grows with the values summed: outputs of order 1e4 are held to 1e-3 of
    that, and a refusal names the scale it used."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(4))
    net(torch.zeros(1, 3, 8, 8))
    with torch.no_grad():
        net[2].weight.mul_(1e4)
    r = export_model(net, tmp_path / "big.onnx", 8, 3)
    assert r.output_scale > 100 and r.max_abs_diff <= 1e-3 * r.output_scale
    assert "x outputs up to" in r.describe()
    assert r.max_abs_diff > 0  # outputs of 1e4 in fp32: ORT's reordered sums round apart
    with pytest.raises(ExportError, match=r"tolerance 0 x outputs up to \d"):
        export_model(net, tmp_path / "never.onnx", 8, 3, tolerance=0.0)


def test_an_export_failure_names_the_operator_and_cause_from_the_exporters_summary():
    """torch.onnx's first line says only which stage failed (timm's MaxViT: "Failed to
    decompose the FX graph ... Next steps:"); its summary names the operator."""
    from hwprune.zoo.export import _export_cause

    text = ("Failed to decompose the FX graph for ONNX compatibility. \x1b[96mThis is step 2/3"
            "\x1b[0m of exporting the model to ONNX. Next steps:\n- Create an issue\n\n"
            "## Exception summary\n\n<class 'ValueError'>: Cannot view a tensor with shape "
            "torch.Size([16, 64, 2, 32])\n\nWhile executing %view_32 : [num_users=1] = "
            "call_function[target=torch.ops.aten.view.default](args = (%t, [16, 8, 8, -1]))\n")
    msg = _export_cause(RuntimeError(text))
    assert "\x1b" not in msg and msg.startswith("Failed to decompose the FX graph")
    assert "at torch.ops.aten.view.default: <class 'ValueError'>: Cannot view a tensor" in msg
    assert _export_cause(RuntimeError("plain\nmore")) == "plain"
