"""What the CPU can show of the GPU timing fixes: graph unroll vs weight copies, the scope of
cudnn.benchmark, the ETA's algorithm count, and the cuDNN engine call (bias, rotation)."""

from collections import Counter
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from hwprune.profiler.cudnn_algos import engine_call
from hwprune.profiler.keyspace import OpKey, trace_model
from hwprune.profiler.ops import (MAX_WEIGHT_COPIES, _module_for, build_op, cold_shortfall, weight_bytes,
                          weight_copies)
from hwprune.profiler.run import Pilot, eta_seconds, pilot_configs
from hwprune.profiler.timing import (TimingConfig, algorithm_count, cudnn_benchmark, graph_calls,
                             measure_key, time_model)
from hwprune.zoo import resolve_model

CONV = OpKey("conv2d", 8, 16, 3, 3, 1, 1, 1, 1, in_h=12, in_w=12)
ONEDNN = torch.backends.mkldnn.is_available()


@contextmanager
def _forward_log():
    """ids of the modules whose forward runs inside the block (every module, globally)."""
    seen: list[int] = []
    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(id(m)))
    try:
        yield seen
    finally:
        handle.remove()


@pytest.mark.parametrize("copies", [1, 3, 10, 57, MAX_WEIGHT_COPIES])
def test_one_graph_capture_reads_every_weight_copy_equally(copies):
    calls = graph_calls(10, copies)
    assert calls >= 10 and calls % copies == 0 and calls < 10 + copies
    # What _graphed does with a build_op callable: 3 warm-up calls, then `calls` captured.
    fn = build_op(CONV, copies=copies)
    with torch.inference_mode(), _forward_log() as seen:
        for _ in range(3):
            fn()
        seen.clear()
        for _ in range(calls):
            fn()
    counts = Counter(seen)
    assert len(counts) == copies  # every copy is in the replay, none left to stay cached
    assert set(counts.values()) == {calls // copies}


def test_the_old_ten_call_graph_left_copies_out():
    # Why graph_calls exists: 10 captured calls of a 57-copy rotation read only 10 copies.
    fn = build_op(CONV, copies=57)
    with torch.inference_mode(), _forward_log() as seen:
        for _ in range(10):
            fn()
    assert len(set(seen)) == 10 < 57


@pytest.mark.parametrize("key", [
    CONV,
    OpKey("conv2d", 8, 16, 3, 3, 1, 1, 1, 1, in_h=12, in_w=12, bias=True),
    OpKey("conv2d", 16, 16, 3, 3, 1, 1, 1, 1, in_h=12, in_w=12, groups=16),
    OpKey("linear", 64, 10, bias=True),
    OpKey("batch_norm2d", 32, 32, in_h=4, in_w=4),
])
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_weight_bytes_are_what_the_module_holds(key, dtype):
    m = _module_for(key)
    held = sum(t.numel() for t in [*m.parameters(), *m.buffers()] if t.is_floating_point())
    assert weight_bytes(key, dtype) == held * (4 if dtype == "fp32" else 2)


def test_the_copy_cap_is_reported_where_it_leaves_weights_cached():
    cold = 64 << 20
    tiny = OpKey("conv2d", 16, 16, 3, 3, 1, 1, 1, 1, in_h=8, in_w=8)   # 9 KiB: needs 7282 copies
    big = OpKey("conv2d", 256, 256, 3, 3, 1, 1, 1, 1, in_h=8, in_w=8)  # 2.25 MiB: 29 copies
    assert weight_copies(tiny, "fp32", cold) == MAX_WEIGHT_COPIES
    assert cold_shortfall(tiny, "fp32", cold)
    assert weight_copies(big, "fp32", cold) == 29 and not cold_shortfall(big, "fp32", cold)
    assert not cold_shortfall(OpKey("relu", 16, 16, in_h=8, in_w=8), "fp32", cold)
    assert not cold_shortfall(tiny, "fp32", 0)
    assert not cold_shortfall(tiny, "fp32", cold, cap=10_000)


def test_cudnn_benchmark_is_on_only_while_timing():
    original = torch.backends.cudnn.benchmark
    seen: list[bool] = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(torch.backends.cudnn.benchmark)
            return x * 2

    cfg = TimingConfig(max_reps=3, warmup=1, threads=1).validate()
    try:
        for before in (False, True):
            torch.backends.cudnn.benchmark = before
            seen.clear()
            time_model(Probe(), torch.ones(4), cfg)
            assert seen and all(seen)  # autotuning on during the timed calls...
            assert torch.backends.cudnn.benchmark is before  # ...and back as it was after
            measure_key(CONV, cfg)
            assert torch.backends.cudnn.benchmark is before
        torch.backends.cudnn.benchmark = False
        with pytest.raises(KeyError), cudnn_benchmark():
            assert torch.backends.cudnn.benchmark
            raise KeyError("a failed measurement")
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = original


def test_algorithm_count_on_cpu_is_what_measure_key_times():
    every = TimingConfig(algos="all", threads=1).validate()
    auto = TimingConfig(threads=1).validate()
    assert algorithm_count(CONV, every) == (2 if ONEDNN else 1)
    for key in (OpKey("relu", 8, 8, in_h=4, in_w=4), OpKey("linear", 8, 4),
                OpKey("batch_norm2d", 8, 8, in_h=4, in_w=4),
                OpKey("add", 8, 8, in_h=4, in_w=4, inplace=True)):
        assert algorithm_count(key, every) == 1  # only convs have a second CPU backend
    assert algorithm_count(CONV, auto) == 1


def test_eta_counts_each_key_once_per_algorithm_it_is_timed_with():
    relu = OpKey("relu", 8, 8, in_h=4, in_w=4)
    every = TimingConfig(algos="all", threads=1, min_reps=20, max_reps=20).validate()
    auto = TimingConfig(threads=1, min_reps=20, max_reps=20).validate()

    def eta(key, cfg):
        pilot = {key.config(): Pilot(key, 1e-3, 0.0, 0.0, algorithm_count(key, cfg))}
        return eta_seconds(pilot, [key], cfg)

    assert eta(relu, every) == pytest.approx(eta(relu, auto))  # was counted twice
    assert eta(CONV, every) == pytest.approx((2 if ONEDNN else 1) * eta(CONV, auto))


def test_the_pilot_records_how_many_algorithms_each_config_gets():
    m = resolve_model("demo")
    trace = trace_model(m.module, 32, 1)
    cfg = TimingConfig(algos="all", threads=1, min_reps=2, warmup=1).validate()
    keys = [r.key for r in trace.layers]
    pilot = pilot_configs(trace, keys, cfg)
    assert pilot and {p.key.config() for p in pilot.values()} == {k.config() for k in keys}
    for p in pilot.values():
        assert p.algorithms == (2 if p.key.op == "conv2d" and ONEDNN else 1)
        assert p.seconds_per_call > 0


@pytest.mark.parametrize("bias", [False, True])
def test_the_cudnn_engine_call_is_a_conv2d_with_rotating_weights(bias):
    # cuDNN is stood in for by F.conv2d writing into the plan's output buffer: the logic
    # under test is what the timed call adds around the engine (bias, weight rotation).
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 7, 7, generator=gen)
    convs = [nn.Conv2d(4, 6, 3, bias=bias) for _ in range(3)]
    y = torch.empty(2, 6, 5, 5)
    packs = [{"x": x, "w": c.weight.detach(), "y": y} for c in convs]

    def execute(pack):
        pack["y"].copy_(nn.functional.conv2d(pack["x"], pack["w"]))

    call = engine_call(execute, packs, y, [c.bias.detach() if bias else None for c in convs])
    with torch.inference_mode():
        for i in range(7):
            out = call()
            assert out is y
            torch.testing.assert_close(out, convs[i % 3](x))
    with pytest.raises(ValueError):
        engine_call(execute, packs, y, [None])


def test_cpu_timing_uses_one_thread_unless_told():
    """Without --threads a CPU table is timed on one thread (the predictable choice on a
    shared machine), whatever torch's own default is; an explicit count is kept."""
    torch.set_num_threads(2)
    assert TimingConfig(device="cpu").validate().threads == 1
    assert TimingConfig(device="cpu", threads=2).validate().threads == 2
    assert TimingConfig(device="cpu").validate().identity()["threads"] == 1
