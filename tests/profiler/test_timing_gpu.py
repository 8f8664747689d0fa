"""CUDA-only checks of the timing fixes; skipped without a CUDA device (tests/conftest.py).

Each is meant to run in a few seconds on one GPU. A near-zero row (work launched outside a
graph capture) or a per-call time divided by the wrong number of captured calls fails them.
"""

from collections import Counter

import pytest
import torch
from torch import nn

from hwprune.luts import Lut, estimate
from hwprune.profiler import ProfileConfig, TimingConfig, measure_key, profile_model, read_lut
from hwprune.profiler.keyspace import OpKey
from hwprune.profiler.ops import weight_copies
from hwprune.profiler.timing import graph_calls, model_input, prepare_model, time_model
from hwprune.zoo import resolve_model

pytestmark = pytest.mark.gpu

CONV = OpKey("conv2d", 8, 16, 3, 3, 1, 1, 1, 1, in_h=16, in_w=16)
# Enough work (about 30 GFLOP) that the GPU, not Python's launch of each call, sets the time.
BIG_CONV = OpKey("conv2d", 128, 128, 3, 3, 1, 1, 1, 1, in_h=56, in_w=56, bias=True)


@pytest.fixture
def benchmark_off():
    was = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    yield
    torch.backends.cudnn.benchmark = was


def test_demo_profiles_in_graph_mode_at_batch_1(tmp_path, benchmark_off):
    out = tmp_path / "demo-cuda.parquet"
    res = profile_model(ProfileConfig("demo", out, step=64, progress=False, timing=TimingConfig(
        device="cuda", mode="graph", max_reps=30, warmup=2)))
    df, meta = read_lut(out)
    assert len(df) == res.keys_total > 0 and not res.keys_left
    # A captured kernel replays in a microsecond or more; far less means nothing was captured.
    assert (df["mean_ms"] > 5e-4).all() and (df["mean_ms"] < 5).all(), df[["op", "mean_ms"]]
    assert (df["min_ms"] <= df["median_ms"]).all()
    assert (df.loc[df["op"] == "conv2d", "algo"] == "cudnn-benchmark").all()
    assert meta["timing_mode"] == "graph" and "graph_calls" in meta["protocol"]
    # The rows of the full-size keys add up to about the network measured end to end.
    est = estimate(resolve_model("demo").module, Lut.load(out), 32, 1, strict=True).total_ms
    ref = meta["reference"]["start_median_ms"]
    assert 0.3 < est / ref < 3, (est, ref)
    assert torch.backends.cudnn.benchmark is False  # scoped to the timing, not left on


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_every_cudnn_engine_is_timed_and_the_fastest_agrees_with_cudnn_benchmark(mode,
                                                                                 monkeypatch):
    cudnn = pytest.importorskip("cudnn")
    created, destroyed = [], []
    real_create, real_destroy = cudnn.create_handle, cudnn.destroy_handle

    def create():
        created.append(real_create())
        return created[-1]

    def destroy(handle):
        destroyed.append(handle)
        return real_destroy(handle)

    # Spies that call the real functions: every handle made for the key must be released.
    monkeypatch.setattr(cudnn, "create_handle", create)
    monkeypatch.setattr(cudnn, "destroy_handle", destroy)
    common = dict(device="cuda", mode=mode, dtype="fp16", channels_last=True, batch=32,
                  max_reps=50, warmup=3)
    auto = measure_key(BIG_CONV, TimingConfig(**common).validate())
    best = measure_key(BIG_CONV, TimingConfig(**common, algos="all").validate())
    assert best.algo.startswith("cudnn:") and auto.algo == "cudnn-benchmark"
    # Same conv and bias, same mode: cudnn.benchmark picks among the same engines.
    assert 0.5 <= best.mean_ms / auto.mean_ms <= 3, (best, auto)
    assert created and len(destroyed) == len(created)


def test_cold_weights_in_graph_mode_capture_every_copy(benchmark_off):
    key = OpKey("conv2d", 64, 64, 3, 3, 1, 1, 1, 1, in_h=8, in_w=8)  # 147,456 bytes of weights
    cold = TimingConfig(device="cuda", mode="graph", max_reps=30, cold_bytes=8 << 20).validate()
    hot = TimingConfig(device="cuda", mode="graph", max_reps=30).validate()
    copies = weight_copies(key, "fp32", cold.cold_bytes)
    assert copies == 57 > cold.graph_unroll
    captured: list[int] = []

    def log(module, inputs, output):
        if torch.cuda.is_current_stream_capturing():
            captured.append(id(module))

    handle = nn.modules.module.register_module_forward_hook(log)
    try:
        s_cold = measure_key(key, cold)
    finally:
        handle.remove()
    counts = Counter(captured)
    assert len(counts) == copies  # one replay reads every copy
    assert set(counts.values()) == {graph_calls(cold.graph_unroll, copies) // copies}
    s_hot = measure_key(key, hot)
    # Per call, whatever the number of calls in the graph (57 copies fit in the L2 here, so
    # cold and hot differ little; a wrong divisor would make them differ 5.7x).
    assert 0.5 < s_cold.mean_ms / s_hot.mean_ms < 3, (s_cold, s_hot)


def test_cuda_timing_leaves_cudnn_benchmark_as_it_was(benchmark_off):
    cfg = TimingConfig(device="cuda", mode="graph", max_reps=10, warmup=2).validate()
    assert measure_key(CONV, cfg).mean_ms > 0
    assert torch.backends.cudnn.benchmark is False
    net = prepare_model(resolve_model("demo").module, cfg)
    assert time_model(net, model_input(cfg, 1, 32), cfg).mean_ms > 0
    assert torch.backends.cudnn.benchmark is False
