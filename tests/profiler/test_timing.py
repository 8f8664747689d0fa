import numpy as np
import pytest
import torch

from hwprune.profiler.keyspace import OpKey
from hwprune.profiler.ops import build_op
from hwprune.profiler.timing import TimingConfig, TimingError, adaptive, measure_key

CONV = OpKey("conv2d", 8, 16, 3, 3, 1, 1, 1, 1, in_h=16, in_w=16)


def _sampler(values):
    it = iter(values)
    return lambda n: [next(it) for _ in range(n)]


def test_adaptive_stops_once_the_ci_is_tight():
    cfg = TimingConfig(min_reps=20, max_reps=1000).validate()
    steady = 1.0 + 0.001 * np.sin(np.arange(2000))  # 0.07% spread: the first chunk suffices
    times, converged = adaptive(_sampler(steady), cfg)
    assert converged and len(times) == 20


def test_adaptive_runs_to_the_cap_when_noisy():
    cfg = TimingConfig(min_reps=20, max_reps=300, max_seconds=60).validate()
    rng = np.random.default_rng(0)
    noisy = rng.lognormal(0.0, 1.0, 5000)  # CV ~ 130%: needs ~65k samples for 1%
    times, converged = adaptive(_sampler(noisy), cfg)
    assert not converged and len(times) == 300


def test_adaptive_asks_for_about_what_the_ci_needs():
    cfg = TimingConfig(min_reps=20, max_reps=1000, max_seconds=60).validate()
    rng = np.random.default_rng(1)
    moderate = 1.0 + 0.05 * rng.standard_normal(5000)  # CV 5%: ~96 samples for 1%
    times, converged = adaptive(_sampler(moderate), cfg)
    assert converged and 40 <= len(times) <= 300


ON_DEVICES = [("cpu", "eager"), pytest.param("cuda", "eager", marks=pytest.mark.gpu),
              pytest.param("cuda", "graph", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("device,mode", ON_DEVICES)
def test_measure_key_gives_consistent_statistics(device, mode):
    cfg = TimingConfig(device=device, mode=mode, max_reps=50, warmup=2).validate()
    s = measure_key(CONV, cfg)
    assert 0 < s.min_ms <= s.median_ms and s.min_ms <= s.mean_ms
    assert 2 <= s.reps <= 50 and s.std_ms >= 0 and s.seconds > 0
    assert s.algo in (("onednn", "native") if device == "cpu" else ("cudnn-benchmark",))


def test_algos_all_on_cpu_keeps_the_fastest_backend():
    cfg = TimingConfig(max_reps=20, warmup=2, algos="all").validate()
    s = measure_key(CONV, cfg)
    assert s.algo in ("onednn", "native")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("op", ["batch_norm2d", "relu", "hardtanh", "max_pool2d", "add"])
def test_every_channelwise_op_builds_and_runs(op, device):
    key = OpKey(op, 8, 8, 3 if "pool" in op else 1, 3 if "pool" in op else 1,
                in_h=10, in_w=10, inplace=op == "add")
    with torch.inference_mode():
        out = build_op(key, batch=2, device=device)()
    assert out.shape[:2] == (2, 8) and out.device.type == device


def test_bad_timing_setups_are_refused():
    with pytest.raises(TimingError, match="graph"):
        TimingConfig(mode="graph").validate()
    with pytest.raises(TimingError, match="dtype"):
        TimingConfig(dtype="fp8").validate()
    if not torch.cuda.is_available():
        with pytest.raises(TimingError, match="no CUDA device"):
            TimingConfig(device="cuda").validate()


def test_cold_weights_rotate_enough_copies_to_leave_the_cache():
    from hwprune.profiler.ops import weight_copies

    conv = OpKey("conv2d", 64, 64, 3, 3, 1, 1, 1, 1, in_h=8, in_w=8)  # 147,456 bytes of weights
    assert weight_copies(conv, "fp32", 0) == 1
    assert weight_copies(conv, "fp32", 8 << 20) == -(-(8 << 20) // 147456) == 57
    assert weight_copies(conv, "fp16", 8 << 20) == 114
    assert weight_copies(conv, "fp32", 1 << 40) == 512  # capped
    assert weight_copies(OpKey("relu", 64, 64, in_h=8, in_w=8), "fp32", 8 << 20) == 1
    with torch.inference_mode():
        fn = build_op(conv, copies=5)
        outs = [fn() for _ in range(10)]  # cycling through 5 copies of the same weights
    assert all(torch.equal(o, outs[0]) for o in outs)
    cfg = TimingConfig(max_reps=5, warmup=1, cold_bytes=1 << 20).validate()
    assert cfg.identity()["weights"] == "cold" and measure_key(conv, cfg).mean_ms > 0


@pytest.mark.gpu
def test_whole_networks_are_graphed_with_few_calls_per_replay():
    from hwprune.profiler.timing import _model_unroll, model_input, prepare_model, time_model
    from hwprune.zoo import resolve_model

    cfg = TimingConfig(device="cuda", mode="graph", batch=64, max_reps=50).validate()
    m = resolve_model("resnet18")
    net = prepare_model(m.module, cfg)
    x = model_input(cfg, 3, 224)
    unroll = _model_unroll(lambda: net(x), cfg)
    assert 1 <= unroll < cfg.graph_unroll  # a batch-64 resnet18 forward takes milliseconds
    assert time_model(net, x, cfg).mean_ms > 0
