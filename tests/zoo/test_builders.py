"""Model specs: timm:NAME and package.module:callable builders, their weights, and the
rule that a checkpoint never makes hwprune import or call code the file alone names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hwprune.zoo import ModelError, import_weights, load_checkpoint, resolve_model, save_checkpoint
from hwprune.zoo.builders import parse_spec
from hwprune.zoo.models import shrink_to

ROOT = Path(__file__).resolve().parents[2]
SPEC = "tests.zoo.custom_nets:build_branchy"


def test_specs_are_parsed_without_importing_anything():
    assert parse_spec("resnet18").kind == "torchvision"
    assert parse_spec("demo").kind == "demo"
    assert (parse_spec("timm:resnet26d").kind, parse_spec("timm:resnet26d").target) == \
        ("timm", "resnet26d")
    b = parse_spec("mypkg.models:Factory.make")
    assert (b.kind, b.trusted) == ("callable", False)
    for bad in ("a:b:c", "timm:", "pkg.mod:1x", "pkg mod:fn"):
        with pytest.raises(ModelError):
            parse_spec(bad)


def test_a_callable_builder_with_arguments_and_weights(tmp_path):
    net = resolve_model(SPEC, num_classes=5).module
    assert net.head.out_features == 5
    trained = resolve_model(SPEC, num_classes=5).module
    torch.save(trained.state_dict(), tmp_path / "w.pth")
    loaded = resolve_model(SPEC, weights=tmp_path / "w.pth", num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.module(x), trained.eval()(x))
    assert loaded.source == str(tmp_path / "w.pth")
    with pytest.raises(ModelError, match="does not match"):
        resolve_model(SPEC, weights=tmp_path / "w.pth", num_classes=7)
    with pytest.raises(ModelError, match="not an nn.Module"):
        resolve_model("tests.zoo.custom_nets:not_a_module")
    with pytest.raises(ModelError, match="has no attribute"):
        resolve_model("tests.zoo.custom_nets:nothing_here")
    with pytest.raises(ModelError, match="cannot import"):
        resolve_model("tests.zoo.no_such_module:build")


def test_timm_builder():
    timm = pytest.importorskip("timm")
    r = resolve_model("timm:resnet10t", num_classes=4)
    # the input timm's own config gives (176 px for resnet10t), not a guess
    assert (r.name, r.in_channels, r.source) == ("timm:resnet10t", 3, "timm")
    assert r.input_size == r.module.pretrained_cfg["input_size"][-1]
    assert r.module(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    assert timm.is_model("resnet10t")
    with pytest.raises(ModelError, match="unknown timm model 'resnet10q'"):
        resolve_model("timm:resnet10q")


def test_a_pruned_checkpoint_of_a_custom_builder_reloads_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    net = resolve_model(SPEC, num_classes=5).module
    for m in net.modules():  # trained-looking BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 3, 40, 40)
    shrink_to(net, {"left": 8, "right": 12}, x[:1])
    assert net.left.out_channels == 8 and net.mix.in_channels == 20
    expected = net(x)
    ckpt = save_checkpoint(net, tmp_path / "pruned.pt", SPEC, {"num_classes": 5},
                           channels={"left": 8, "right": 12}, input_shape=(3, 40, 40))
    torch.save(x, tmp_path / "x.pt")
    code = (f"import torch; from hwprune.zoo import load_checkpoint; "
            f"m = load_checkpoint({str(ckpt)!r}, allow_builder={SPEC!r}).module; "
            f"torch.save(m(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r})")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), expected, atol=1e-5, rtol=0)


def test_a_checkpoint_naming_an_untrusted_builder_is_refused_before_any_import(tmp_path):
    mark = tmp_path / "imported"
    ckpt = save_checkpoint(torch.nn.Conv2d(3, 4, 3), tmp_path / "evil.pt",
                           "tests.zoo.never_imported:build", {"x": 1})
    os.environ["HWPRUNE_TEST_IMPORT_MARK"] = str(mark)
    try:
        with pytest.raises(ModelError, match="--builder tests.zoo.never_imported:build"):
            load_checkpoint(ckpt)
        with pytest.raises(ModelError, match="you named 'tests.zoo.custom_nets:build_branchy'"):
            load_checkpoint(ckpt, allow_builder=SPEC)
    finally:
        del os.environ["HWPRUNE_TEST_IMPORT_MARK"]
    assert "tests.zoo.never_imported" not in sys.modules and not mark.exists()


def test_the_cli_refuses_os_system_in_one_line_with_exit_2(tmp_path):
    mark = tmp_path / "ran"
    ckpt = save_checkpoint(torch.nn.Conv2d(3, 4, 3), tmp_path / "evil.pt", "os:system",
                           {"command": f"touch {mark}"})
    run = subprocess.run([sys.executable, "-m", "hwprune", "export", str(ckpt), "--out",
                          str(tmp_path / "m.onnx")], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "builder 'os:system'" in lines[0], run.stderr
    assert not mark.exists() and not (tmp_path / "m.onnx").exists()


def test_import_accepts_a_builder_spec(tmp_path):
    net = resolve_model(SPEC, num_classes=3).module
    torch.save({"state_dict": net.state_dict()}, tmp_path / "w.pth")
    out = import_weights(SPEC, tmp_path / "w.pth", tmp_path / "t.pt", num_classes=3)
    payload = torch.load(out, weights_only=True)
    assert payload["arch"] == SPEC and payload["arch_kwargs"] == {"num_classes": 3}
    back = load_checkpoint(out, allow_builder=SPEC).module
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(back(x), net.eval()(x))
    for extra in ({"weights": tmp_path / "w.pth"}, {"num_classes": 3}):  # a file has its own
        with pytest.raises(ModelError, match="go with a builder spec"):
            resolve_model(str(out), allow_builder=SPEC, **extra)


def test_an_export_is_refused_saying_what_to_use_instead(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)).eval()
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(1, 1, 8, 8),)), str(path))
    with pytest.raises(ModelError, match="torch.export program.*package.module:callable"):
        resolve_model(str(path))


def test_model_args_on_the_command_line(tmp_path):
    from click.testing import CliRunner

    from hwprune.cli import cli

    net = resolve_model(SPEC, num_classes=6, width=8).module
    torch.save(net.state_dict(), tmp_path / "w.pth")
    r = CliRunner().invoke(cli, ["export", SPEC, "--weights", str(tmp_path / "w.pth"),
                                 "--model-arg", "num_classes=6", "--model-arg", "width=8",
                                 "--input-size", "32", "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["export", SPEC, "--weights", str(tmp_path / "w.pth"),
                                 "--model-arg", "num_classes=6", "--out",
                                 str(tmp_path / "n.onnx")])
    assert r.exit_code == 2 and "does not match" in r.output, r.output
