"""The README's "your own model" example, run as written, on the CPU, from a directory that
holds a user's own profiler.py, synth.py, zoo.py, luts.py and pruner.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hwprune
from hwprune.errors import HwpruneError

ROOT = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Your own model, in Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_example_is_at_most_ten_lines():
    assert len(_readme_example().strip().splitlines()) <= 10


@pytest.mark.heavy
@pytest.mark.timeout(600)
def test_the_readme_example_runs_from_a_users_directory(tmp_path):
    shutil.copy(ROOT / "tests" / "zoo" / "custom_nets.py", tmp_path / "mynets.py")
    for name in ("profiler", "synth", "zoo", "luts", "pruner"):
        (tmp_path / f"{name}.py").write_text("raise ImportError('the user module was used')\n")
    torch.manual_seed(0)
    sys.path.insert(0, str(tmp_path))
    try:
        from mynets import Branchy  # the user's module, as the example imports it

        torch.save(Branchy(num_classes=10).state_dict(), tmp_path / "branchy.pth")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mynets", None)
    code = _readme_example() + (
        # the reloaded file computes what the job's own pruned network computed
        "\nfrom hwprune.zoo.models import seeded_input\n"
        "with torch.no_grad(): y = pruned(seeded_input(3, 32)).flatten()\n"
        "torch.testing.assert_close(y, torch.tensor(result.report['saved']['outputs']), "
        "atol=1e-5, rtol=0)\n"
        "import json; json.dump({'ratio': result.report['measured']['ratio'], "
        "'verdict': result.report['measured']['verdict'], "
        "'filters': [sum(m.out_channels for m in n.modules() if isinstance(m, torch.nn.Conv2d))"
        " for n in (net, pruned)]}, open('out.json', 'w'))\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["filters"][1] < out["filters"][0]  # filters were removed
    assert out["verdict"] in ("met", "uncertain", "missed") and out["ratio"] > 0
    assert (tmp_path / "pruned" / "pruned.pt").is_file() and (tmp_path / "lut.parquet").is_file()


def test_wrap_refuses_what_is_not_a_module_and_errors_share_one_root():
    with pytest.raises(HwpruneError, match="nn.Module"):
        hwprune.wrap("resnet18", input_size=32)
    from hwprune.luts import LutError
    from hwprune.profiler import KeySpaceError, TimingError
    from hwprune.pruner.run import JobError
    from hwprune.synth import SynthError
    from hwprune.zoo import ModelError

    for err in (LutError, KeySpaceError, TimingError, JobError, SynthError, ModelError):
        assert issubclass(err, HwpruneError), err


def test_save_and_load_a_wrapped_model(tmp_path):
    from tests.zoo.custom_nets import Branchy

    net = Branchy(num_classes=4, width=8).eval()
    model = hwprune.wrap(net, input_size=24, num_classes=4, width=8)
    assert model.name == "tests.zoo.custom_nets:Branchy" and model.in_channels == 3
    path = hwprune.save(model, tmp_path / "m.pt")
    with pytest.raises(HwpruneError, match="--builder tests.zoo.custom_nets:Branchy"):
        hwprune.load(path)
    back = hwprune.load(path, allow_builder=model.name)
    assert back.input_size == 24
    x = torch.randn(1, 3, 24, 24)
    assert torch.equal(back.module(x), net(x))
