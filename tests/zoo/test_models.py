import pickle

import pytest
import torch

from hwprune.zoo import DemoNet, ModelError, load_checkpoint, resolve_model, save_checkpoint


def test_checkpoint_round_trip_loads_weights_only(tmp_path):
    net = DemoNet(width=16).eval()
    path = save_checkpoint(net, tmp_path / "demo.pt", "demo", {"width": 16}, note="x")
    torch.load(path, weights_only=True)  # plain data and tensors only
    loaded = load_checkpoint(path)
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(loaded.module.eval()(x), net(x))
    assert loaded.extra == {"note": "x"} and loaded.input_size == 32


def test_pickled_code_and_foreign_files_are_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump(DemoNet(width=4), f)  # a whole pickled module: needs code execution
    with pytest.raises(ModelError, match="weights-only"):
        resolve_model(str(evil))
    plain = tmp_path / "sd.pt"
    torch.save({"a": torch.zeros(1)}, plain)
    with pytest.raises(ModelError, match="not an hwprune checkpoint"):
        resolve_model(str(plain))
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "none.pt"))


def test_unknown_names_get_suggestions():
    with pytest.raises(ModelError, match="did you mean.*mobilenet_v2"):
        resolve_model("mobilenetv2")
    assert resolve_model("resnet18").input_size == 224


def test_import_weights_from_a_plain_or_ddp_state_dict(tmp_path):
    import torchvision
    from click.testing import CliRunner

    from hwprune.cli import cli
    from hwprune.zoo import ModelError, import_weights, load_checkpoint

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=7).eval()
    import argparse

    # as torchvision's reference train.py saves: DDP-prefixed weights beside its options
    ddp_style = {"model": {f"module.{k}": v for k, v in net.state_dict().items()},
                 "args": argparse.Namespace(lr=0.1), "epoch": 3}
    torch.save(ddp_style, tmp_path / "mine.pth")
    res = CliRunner().invoke(cli, ["import", "resnet18", str(tmp_path / "mine.pth"),
                                   "--out", str(tmp_path / "t.pt"), "--num-classes", "7"])
    assert res.exit_code == 0, res.output
    back = load_checkpoint(tmp_path / "t.pt").module.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(back(x), net(x))
    with pytest.raises(ModelError, match="does not match resnet18"):  # 1000 classes expected
        import_weights("resnet18", tmp_path / "mine.pth", tmp_path / "u.pt")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="weights-only"):
        import_weights("resnet18", tmp_path / "junk.pth", tmp_path / "u.pt")


def _storage_locations(path) -> set[str]:
    """The device every storage in a torch file was saved from, as torch.load reports it."""
    seen: list[str] = []
    torch.load(path, weights_only=True,
               map_location=lambda storage, loc: (seen.append(loc), storage)[1])
    return set(seen)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_checkpoint_tensors_are_saved_from_the_cpu(tmp_path, device):
    net = DemoNet(width=8).to(device).eval()
    path = save_checkpoint(net, tmp_path / "n.pt", "demo", {"width": 8})
    assert _storage_locations(path) == {"cpu"}
    assert next(net.parameters()).device.type == device  # the model itself is not moved
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_checkpoint(path).module.eval()(x), net.cpu()(x))


def test_a_meta_model_is_refused_and_nothing_written(tmp_path):
    with torch.device("meta"):
        net = DemoNet(width=8)
    with pytest.raises(ModelError, match="meta device.*no weights"):
        save_checkpoint(net, tmp_path / "m.pt", "demo", {"width": 8})
    assert not list(tmp_path.iterdir())


@pytest.mark.gpu
def test_a_checkpoint_saved_from_cuda_loads_plainly_without_cuda(tmp_path):
    import os
    import subprocess
    import sys

    path = save_checkpoint(DemoNet(width=8).cuda(), tmp_path / "g.pt", "demo", {"width": 8})
    code = ("import sys, torch; assert not torch.cuda.is_available(); "
            "p = torch.load(sys.argv[1], weights_only=True); "
            "assert all(v.device.type == 'cpu' for v in p['state_dict'].values())")
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
