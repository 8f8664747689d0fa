"""Checkpoints, image sets and synth batches are checked before any work (zoo.check,
pruner.data, synth.dataset); a property test mutates checkpoint files."""

import math
import pickle
from collections import Counter

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwprune.cli import cli
from hwprune.pruner import DataError, load_images
from hwprune.zoo import DemoNet, ModelError, load_checkpoint, save_checkpoint
from hwprune.zoo.check import CheckpointError, num_classes


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    net = DemoNet(width=4).eval()
    path = save_checkpoint(net, tmp_path_factory.mktemp("ck") / "demo.pt", "demo", {"width": 4})
    return path, net


def _save(payload, path):
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("edit,fragment", [
    (lambda p: p.update(channels={"block1.conv1.0": 2}),
     "channels: block1.conv1.0 is recorded with 2 output channels, its weight has 4"),
    (lambda p: p.update(channels={"nope": 2}), "channels: nope is recorded as pruned"),
    (lambda p: p.update(channels={"block1.conv1.0": 0}), "channels: block1.conv1.0: 0"),
    (lambda p: p.pop("arch"), "format: arch None is not a name"),
    (lambda p: p.update(arch_kwargs=[4]), "format: arch_kwargs is not a mapping"),
    (lambda p: p.update(arch_kwargs={"colour": 4}), "arch_kwargs do not fit demo"),
    (lambda p: p.update(version=2, written_by="hwprune 0.9.0"),
     "checkpoint version 2, written by hwprune 0.9.0, which reads it"),
    (lambda p: p.pop("state_dict"), "format: no state_dict"),
    (lambda p: p["state_dict"]["stem.0.weight"].fill_(float("nan")),
     "weights: stem.0.weight holds NaN"),
    (lambda p: p.update(format="something"), "not an hwprune checkpoint"),
])
def test_damaged_checkpoints_are_refused_in_one_line(ckpt, tmp_path, edit, fragment):
    payload = torch.load(ckpt[0], weights_only=True)
    edit(payload)
    path = _save(payload, tmp_path / "bad.pt")
    with pytest.raises(ModelError) as err:
        load_checkpoint(path)
    assert fragment in str(err.value) and str(path) in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_weights_of_another_width_give_one_line(ckpt, tmp_path):
    payload = torch.load(ckpt[0], weights_only=True)
    payload["arch_kwargs"] = {"width": 8}  # today: torch's 30-line size-mismatch report
    with pytest.raises(ModelError, match=r"size mismatch for .*\(and \d+ more\)") as err:
        load_checkpoint(_save(payload, tmp_path / "w.pt"))
    assert len(str(err.value).splitlines()) == 1


def test_data_whose_classes_the_model_lacks_is_refused(ckpt, tmp_path):
    net = ckpt[1]
    assert num_classes(net) == 10
    synth = tmp_path / "syn"
    synth.mkdir()
    images = torch.randn(6, 1, 32, 32)
    torch.save({"images": images, "targets": torch.arange(6), "logits": torch.randn(6, 12)},
               synth / "synthetic.pt")
    data = load_images(str(synth), 32)
    with pytest.raises(DataError, match="teacher with 12 classes, demo.pt has 10"):
        data.check_classes(10, "demo.pt")
    labelled = tmp_path / "l.pt"
    torch.save({"images": images, "targets": torch.tensor([0, 1, 2, 3, 4, 11])}, labelled)
    res = CliRunner().invoke(cli, ["evaluate", str(ckpt[0]), "--val", str(labelled)])
    assert res.exit_code == 2 and "class id 11 is outside" in res.output, res.output
    torch.save({"images": images, "targets": torch.arange(5)}, labelled)
    with pytest.raises(DataError, match="targets must be 6 integer class ids"):
        load_images(str(labelled), 32)
    (synth / "summary.json").write_text('{"n_images": 64}')
    with pytest.raises(DataError, match="holds 6 images, its summary.json 64"):
        load_images(str(synth), 32)


def test_a_damaged_batch_stops_a_resumed_synth_run_before_any_work(ckpt, tmp_path):
    from hwprune.synth import PRESETS, SynthConfig, SynthError, synthesize

    out = tmp_path / "syn"
    cfg = SynthConfig(str(ckpt[0]), out, 4, 2, PRESETS["demo"].with_(iterations=2),
                      progress=False)
    synthesize(cfg)
    batch = out / "batches" / "batch-00001.pt"
    batch.write_bytes(batch.read_bytes()[:100])
    (out / "synthetic.pt").unlink()
    before = (out / "batches" / "batch-00000.pt").stat().st_mtime_ns
    cfg.resume = True
    with pytest.raises(SynthError, match="batch-00001.pt is damaged"):
        synthesize(cfg)
    assert (out / "batches" / "batch-00000.pt").stat().st_mtime_ns == before
    batch.unlink()  # a missing batch is made again, as an interrupted run's
    assert synthesize(cfg)["n_images"] == 4


def test_mutated_checkpoint_files(ckpt, tmp_path, record_property):
    """Property: a mutated checkpoint either raises ModelError with a message, or loads a
    model computing exactly what the original does; loading never runs pickled code."""
    path, net = ckpt
    raw = path.read_bytes()
    payload0 = torch.load(path, weights_only=True)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        want = net(x)
    bad = tmp_path / "m.pt"
    tally = Counter()

    @settings(max_examples=400, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def prop(data):
        kind = data.draw(st.sampled_from(["cut", "flip", "entry", "tensor", "pickle"]))
        if kind == "cut":
            bad.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1))])
        elif kind == "flip":
            buf = bytearray(raw)
            for _ in range(data.draw(st.integers(1, 3))):
                buf[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
            bad.write_bytes(bytes(buf))
        elif kind == "entry":
            p = dict(payload0)
            name = data.draw(st.sampled_from(sorted(p)))
            if data.draw(st.booleans()):
                p.pop(name)
            else:
                p[name] = data.draw(st.sampled_from([None, 0, -1, 2, "x", [], {}, {"a": 1}]))
            torch.save(p, bad)
        elif kind == "tensor":
            state = dict(payload0["state_dict"])
            name = data.draw(st.sampled_from(sorted(state)))
            t = state[name].clone()
            how = data.draw(st.sampled_from(["nan", "inf", "shape", "drop", "dtype"]))
            if how in ("nan", "inf") and t.is_floating_point() and t.numel():
                t.view(-1)[0] = math.nan if how == "nan" else math.inf
            elif how == "shape":
                t = t.reshape(-1)[:max(1, t.numel() // 2)]
            elif how == "dtype":
                t = t.to(torch.float64 if t.is_floating_point() else torch.float32)
            state[name] = t
            if how == "drop":
                state.pop(name)
            torch.save({**payload0, "state_dict": state}, bad)
        else:  # a pickled object whose loading would run code
            with open(bad, "wb") as f:
                pickle.dump({**payload0, "extra": {"net": DemoNet(width=2)}}, f)
        try:
            loaded = load_checkpoint(bad)
        except ModelError as exc:
            assert str(exc).strip()
            tally[f"{kind}: refused"] += 1
            return
        with torch.no_grad():
            got = loaded.module.eval()(x)
        assert torch.isfinite(got).all(), kind
        assert torch.equal(got, want), kind
        tally[f"{kind}: same outputs"] += 1

    prop()
    record_property("summary", f"checkpoints: {sum(tally.values())} corruptions tried; "
                    + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
    assert sum(tally.values()) >= 400 and isinstance(CheckpointError("p", "r", "d"), ModelError)
