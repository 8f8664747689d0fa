import json

import pytest
import torch
from click.testing import CliRunner

from hwprune.cli import cli
from hwprune.synth import PRESETS, SynthConfig, SynthError, synthesize
from hwprune.zoo import resolve_model, save_checkpoint


def _cfg(teacher, out, **kw):
    di = PRESETS["demo"].with_(iterations=kw.pop("iterations", 300))
    return SynthConfig(str(teacher), out, kw.pop("n_images", 20), kw.pop("batch_size", 10), di,
                       progress=False, **kw)


@pytest.mark.heavy
def test_teacher_recognises_its_images_and_bn_loss_falls(teacher_ckpt, tmp_path):
    summary = synthesize(_cfg(teacher_ckpt, tmp_path / "syn"))
    assert summary["n_images"] == 20 and summary["teacher_top1"] >= 0.9
    bn = summary["loss_curve_mean_over_batches"]["bn"]
    assert bn[0] / bn[-1] >= 10, bn
    data = torch.load(tmp_path / "syn" / "synthetic.pt", weights_only=True)
    assert data["images"].shape == (20, 1, 32, 32) and data["targets"].tolist() == \
        [j % 10 for j in range(20)]
    # valid pixel range of the normalised input (clipping, paper Eq. 16)
    lo, hi = (0 - 0.3053) / 0.3236, (1 - 0.3053) / 0.3236
    assert data["images"].min() >= lo - 1e-5 and data["images"].max() <= hi + 1e-5
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(tmp_path / "syn" / "images"))
    assert len(folder) == 20 and len(folder.classes) == 10
    assert (tmp_path / "syn" / "preview.png").read_bytes()[:4] == b"\x89PNG"
    s = json.loads((tmp_path / "syn" / "summary.json").read_text())
    assert set(s["per_class"]) == {str(c) for c in range(10)}


def test_resume_gives_the_same_images_as_an_uninterrupted_run(teacher_ckpt, tmp_path):
    whole = tmp_path / "whole"
    synthesize(_cfg(teacher_ckpt, whole, iterations=30, n_images=30))
    part = tmp_path / "part"
    synthesize(_cfg(teacher_ckpt, part, iterations=30, n_images=30))
    # simulate a kill: the last batch's tensor file is gone, its PNGs are left behind
    (part / "batches" / "batch-00002.pt").unlink()
    (part / "synthetic.pt").unlink()
    assert list((part / "images").glob("*/b00002-*.png"))
    from hwprune.pruner.data import DataError, load_images

    with pytest.raises(DataError, match="unfinished `hwprune synth` run"):
        load_images(str(part), 32)  # not read as an ImageFolder of half a run
    with pytest.raises(SynthError, match="not empty"):
        synthesize(_cfg(teacher_ckpt, part, iterations=30, n_images=30))
    summary = synthesize(_cfg(teacher_ckpt, part, iterations=30, n_images=30, resume=True))
    assert summary["batches_this_run"] == 1
    a = torch.load(whole / "synthetic.pt", weights_only=True)
    b = torch.load(part / "synthetic.pt", weights_only=True)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["targets"], b["targets"])
    with pytest.raises(SynthError, match=r"other settings \(.*31.*\).*same options plus"):
        synthesize(_cfg(teacher_ckpt, part, iterations=31, n_images=30, resume=True))


def test_bad_inputs(teacher_ckpt, tmp_path):
    with pytest.raises(SynthError, match=r"class ids \[10\]"):
        synthesize(_cfg(teacher_ckpt, tmp_path / "a", classes=[1, 10]))
    assert not (tmp_path / "a").exists()  # nothing written for a refused run
    with pytest.raises(SynthError, match="no BatchNorm2d"):
        synthesize(_cfg("tests.zoo.custom_nets:build_no_bn", tmp_path / "b"))
    runner = CliRunner()
    res = runner.invoke(cli, ["synth", str(teacher_ckpt), "--out", str(tmp_path / "c"),
                              "--classes", "3,12", "-q"])
    assert res.exit_code == 2 and res.output.startswith("error: class ids [12]")


def test_adaptive_deepinversion_and_real_feature_statistics(teacher_ckpt, digits, tmp_path):
    student = save_checkpoint(resolve_model(str(teacher_ckpt)).module, tmp_path / "s.pt", "demo",
                              {"width": 16})
    cfg = _cfg(teacher_ckpt, tmp_path / "adi", iterations=40, n_images=10, student=str(student))
    cfg.di = cfg.di.with_(adi_scale=1.0)
    summary = synthesize(cfg)
    assert max(summary["loss_curve_mean_over_batches"]["adi"]) > 0
    torch.save({"images": digits.x_train[:100]}, tmp_path / "real.pt")
    real = synthesize(_cfg(teacher_ckpt, tmp_path / "real", iterations=40, n_images=10,
                           real_images=str(tmp_path / "real.pt")))
    assert real["n_images"] == 10


@pytest.mark.heavy
@pytest.mark.timeout(300)
def test_torchrun_ranks_make_disjoint_batches_of_one_dataset(teacher_ckpt, tmp_path):
    import os
    import subprocess
    import sys

    # 4 batches (2 a rank) of 5 images, 5 iterations: the ranks' split, not the images' quality
    args = [str(teacher_ckpt), "--n-images", "20", "--batch-size", "5", "--iterations", "5",
            "-q"]
    single = tmp_path / "single"
    assert CliRunner().invoke(cli, ["synth", *args, "--out", str(single)]).exit_code == 0
    dist = tmp_path / "dist"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", "-m", "hwprune", "synth", *args,
                          "--out", str(dist)], capture_output=True, text=True, timeout=280,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    a = torch.load(single / "synthetic.pt", weights_only=True)
    b = torch.load(dist / "synthetic.pt", weights_only=True)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["targets"], b["targets"])
    assert sorted(p.name for p in (dist / "batches").iterdir()) == \
        [f"batch-{i:05d}.pt" for i in range(4)]


def test_multi_resolution_optimises_small_then_full_size(teacher_ckpt):
    from hwprune.synth import bn_targets, synthesize_batch

    teacher = resolve_model(str(teacher_ckpt)).module
    cfg = PRESETS["demo"].with_(low_res_iterations=6, iterations=4, log_every=1)
    res = synthesize_batch(teacher, torch.arange(4), cfg, 32, 1, torch.Generator().manual_seed(0),
                           bn_targets(teacher))
    assert res.images.shape == (4, 1, 32, 32)
    assert res.history["step"] == list(range(10))  # 6 steps at 16 px, then 4 at 32 px


def test_resume_reads_recipe_fields_newer_than_the_run_as_their_defaults(teacher_ckpt, tmp_path):
    out = tmp_path / "old"
    synthesize(_cfg(teacher_ckpt, out, iterations=2, n_images=4, batch_size=2))
    (out / "batches" / "batch-00001.pt").unlink()
    config = json.loads((out / "config.json").read_text())
    del config["di"]["loss_scale"]  # as written before fp16 loss scaling existed
    (out / "config.json").write_text(json.dumps(config))
    summary = synthesize(_cfg(teacher_ckpt, out, iterations=2, n_images=4, batch_size=2,
                              resume=True))
    assert summary["batches_this_run"] == 1
    config["di"]["loss_scale"] = 1024.0  # a recorded value other than the default still counts
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(SynthError, match="other settings"):
        synthesize(_cfg(teacher_ckpt, out, iterations=2, n_images=4, batch_size=2, resume=True))


def test_a_teacher_caching_tensors_of_its_parameters_in_eval_mode_synthesizes():
    """timm's LeViT and EfficientFormer-V2 cache their attention biases (a gather of a
    parameter) on the first eval-mode call. With parameters that require gradients the
    cached tensor held the first step's graph, and the second step's backward failed
    ("Trying to backward through the graph a second time"). Only the images need
    gradients: the parameters are frozen for the call, and left as found."""
    import torch
    from torch import nn

    from hwprune.synth import PRESETS, synthesize_batch
    from tests.synth.nets import tiny_bn_net

    class CachedBias(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_bn_net(channels=1)
            self.table = nn.Parameter(torch.randn(10))
            self._cache = None

        def forward(self, x):
            if not self.training and self._cache is None:
                self._cache = self.table[torch.arange(10)]  # as timm's attention_bias_cache
            return self.net(x) + (self._cache if not self.training else self.table)

    teacher = CachedBias().eval()
    for p in teacher.parameters():
        p.requires_grad_(True)
    cfg = PRESETS["demo"].with_(low_res_iterations=0, iterations=3)
    res = synthesize_batch(teacher, torch.arange(2), cfg, 16, 1, torch.Generator().manual_seed(0))
    assert res.images.shape == (2, 1, 16, 16)
    assert all(p.requires_grad for p in teacher.parameters())
