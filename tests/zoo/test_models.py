import pickle

import pytest
import torch

from zoo import DemoNet, ModelError, load_checkpoint, resolve_model, save_checkpoint


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
