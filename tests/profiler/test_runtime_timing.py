"""Networks timed in ONNX Runtime and OpenVINO with the profiler's protocol."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hwprune.profiler import TimingConfig
from hwprune.profiler.clock import TimingError
from hwprune.profiler.runtime_timing import RuntimeNets, time_session
from hwprune.zoo import build_demo
from tests.conftest import only_when_asked

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_network_is_timed_in_the_runtime(runtime):
    tc = TimingConfig(threads=1, warmup=2, min_reps=5, max_reps=20).validate()
    small, big = build_demo(width=16), build_demo(width=64)
    with RuntimeNets(runtime, 32, 1) as rn:
        for tag, m in (("small", small), ("big", big)):
            rn.add(tag, m)
        x = np.random.randn(1, 1, 32, 32).astype(np.float32)
        s, b = (time_session(rn.session(t), x, tc) for t in ("small", "big"))
        assert rn.session("big").info.threads == 1
        assert rn.exports["big"]["max_abs_diff"] <= 1e-3
        workdir = rn.dir
    assert s.algo == runtime and 5 <= s.reps <= 20 and 0 < s.median_ms
    # 16x fewer multiply-adds in every conv: faster in any runtime, by a wide margin
    assert s.median_ms < b.median_ms
    assert not workdir.exists()


def test_an_equal_network_reuses_its_export_and_a_changed_one_does_not():
    torch.manual_seed(0)
    net = build_demo(width=8).eval()
    with RuntimeNets("onnxruntime", 16, 1) as rn:
        first = rn.add("teacher", net)
        assert rn.add("again", copy.deepcopy(net)) is first and rn.exported == 1
        with torch.no_grad():
            next(net.parameters()).add_(1.0)  # same structure, other weights
        changed = rn.add("student", net)
        assert changed is not first and rn.exported == 2
        x = np.random.randn(1, 1, 16, 16).astype(np.float32)
        with torch.no_grad():
            want = net(torch.from_numpy(x)).numpy()
        assert np.abs(changed.run(x) - want).max() <= 1e-3  # the changed weights in it


def test_torch_is_not_a_runtime_here():
    with pytest.raises(TimingError, match="time_model"):
        RuntimeNets("torch", 32, 1)


@pytest.mark.slow
def test_runtime_gap_benchmark_runs_end_to_end(tmp_path, request):
    only_when_asked(request, 20)  # benchmarks/run_all.py runs the benchmark itself
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "runtime_gap.py"), "--out",
                        str(tmp_path), "--models", "resnet18", "--samples", "2", "--input-size",
                        "32", "--rounds", "1", "--max-reps", "5", "-q"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "runtime_gap.json").read_text())
    nets = res["models"]["resnet18"]["networks"]
    assert set(nets) == {"original", "extreme-min-1"}
    for rt in ("torch", "onnxruntime", "openvino"):
        assert nets["original"][rt]["ratio"] == 1.0
        assert 0 < nets["extreme-min-1"][rt]["ratio"] < 1  # the smallest variant is faster
    assert res["machine"]["torch"] == torch.__version__
