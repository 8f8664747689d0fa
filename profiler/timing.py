"""Timing operator keys and whole networks, on the protocol of ``profiler.clock``.

``cudnn.benchmark`` is on only while timing (``cudnn_benchmark``): a pruner that
measures mid-run must not leave training autotuning every new shape. With
``--algos all`` a key is timed under every algorithm (CPU backends here, cuDNN
engines in ``profiler.cudnn_algos``) and the fastest kept.

Imports run one way: this module -> ``profiler.cudnn_algos`` -> ``profiler.clock``
(and this module -> ``profiler.clock``); the protocol's names (``TimingConfig``,
``Stats``, ``TimingError``, ``time_callable``, ``adaptive``, ``graph_calls``, ...)
are re-exported here, so ``profiler.timing`` stays the one place to import from.
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager, nullcontext
from typing import Callable, ContextManager, Iterator

import torch

from hwprune.profiler.clock import (ALGOS, DEVICES, MODES, Stats, TimingConfig, TimingError, adaptive,
                            cudnn_frontend, graph_calls, summarize, time_callable)
from hwprune.profiler.cudnn_algos import count_conv_engines, time_conv_engines
from hwprune.profiler.keyspace import CONV, OpKey
from hwprune.profiler.ops import DTYPES, build_op, weight_copies
from hwprune.sizes import Size, hw


@contextmanager
def cudnn_benchmark(on: bool = True) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` held at ``on`` inside the block, then restored.

    Timing wants cuDNN to autotune each shape once at warm-up (on); training after a
    measurement must not inherit it, or every channel removal re-autotunes the
    forward and both backward convolutions (the pruner holds it off). Only this flag
    is touched (``torch.backends.cudnn.flags`` would also reset enabled, deterministic
    and TF32). It is plain Python state, read only by cuDNN, so setting it on a CPU
    run is harmless.
    """
    was = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = was


@contextmanager
def _onednn_disabled() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about TF32 on Intel GPUs when flags change
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def cpu_algorithms(key: OpKey) -> Iterator[tuple[str, ContextManager]]:
    """The CPU convolution backends torch can be steered to (oneDNN, or its native kernels)."""
    yield "onednn" if torch.backends.mkldnn.is_available() else "native", nullcontext()
    if key.op == CONV and torch.backends.mkldnn.is_available():
        yield "native", _onednn_disabled()


def algorithm_count(key: OpKey, cfg: TimingConfig) -> int:
    """How many algorithms ``measure_key`` times for ``key``.

    On a CPU: the backends ``cpu_algorithms`` yields (2 for a conv with oneDNN
    present, else 1) under ``--algos all``. On CUDA every key but a conv under
    ``--algos all`` is timed once; such a conv is timed once per cuDNN execution
    plan, which only cuDNN can count (``cudnn_algos.count_conv_engines``).
    """
    if cfg.algos != "all":
        return 1
    if cfg.device == "cpu":
        return sum(1 for _ in cpu_algorithms(key))
    if key.op != CONV:
        return 1
    return count_conv_engines(key, cfg)



def measure_key(key: OpKey, cfg: TimingConfig) -> Stats:
    """Time one key; with ``algos='all'``, every algorithm, keeping the fastest by median
    (one burst during one algorithm's timing must not decide which is kept)."""
    t0 = time.perf_counter()
    copies = weight_copies(key, cfg.dtype, cfg.cold_bytes)
    with torch.inference_mode(), cudnn_benchmark():
        if cfg.device == "cuda":
            if cfg.algos == "all" and key.op == CONV:
                best = min(time_conv_engines(key, cfg), key=lambda s: s.median_ms)
            else:
                fn = build_op(key, cfg.batch, cfg.dtype, "cuda", cfg.channels_last, copies)
                best = time_callable(fn, cfg, "cudnn-benchmark" if key.op == CONV else "default",
                                     copies)
        else:
            candidates = []
            algos = list(cpu_algorithms(key))
            for name, ctx in (algos if cfg.algos == "all" else algos[:1]):
                with ctx:
                    fn = build_op(key, cfg.batch, cfg.dtype, "cpu", cfg.channels_last, copies)
                    candidates.append(time_callable(fn, cfg, name, copies))
            best = min(candidates, key=lambda s: s.median_ms)
    best.seconds = time.perf_counter() - t0
    return best


def model_input(cfg: TimingConfig, in_channels: int, size: Size) -> torch.Tensor:
    x = torch.randn(cfg.batch, in_channels, *hw(size), device=cfg.device).to(DTYPES[cfg.dtype])
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def prepare_model(module: torch.nn.Module, cfg: TimingConfig) -> torch.nn.Module:
    module = module.to(device=cfg.device, dtype=DTYPES[cfg.dtype]).eval()
    return module.to(memory_format=torch.channels_last) if cfg.channels_last else module


def time_model(module: torch.nn.Module, x: torch.Tensor, cfg: TimingConfig) -> Stats:
    """End-to-end latency of a whole network, with the same discipline as one key."""
    fn = lambda: module(x)  # noqa: E731
    with torch.inference_mode(), cudnn_benchmark():
        if cfg.device == "cuda" and cfg.mode == "graph":
            cfg = TimingConfig(**{**cfg.__dict__, "graph_unroll": _model_unroll(fn, cfg)})
        return time_callable(fn, cfg, "end-to-end")


def _model_unroll(fn: Callable[[], object], cfg: TimingConfig, replay_ms: float = 5.0) -> int:
    """Calls per graph for a whole network: enough that one replay lasts ``replay_ms``.

    The unroll only has to hide the gap between replays (microseconds); a network
    taking milliseconds needs one or two calls per graph, not the ten a tiny key needs,
    which would make every validation variant cost ten times its time to measure.
    """
    with torch.inference_mode():
        for _ in range(3):  # cuDNN autotuning happens here, not inside the timed call
            fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
    eager_ms = start.elapsed_time(end)  # an upper bound: eager adds launch overhead
    return max(1, min(cfg.graph_unroll, math.ceil(replay_ms / max(eager_ms, 1e-3))))


__all__ = ["DEVICES", "MODES", "ALGOS", "TimingError", "TimingConfig", "Stats", "summarize",
           "adaptive", "graph_calls", "time_callable", "cudnn_frontend", "cudnn_benchmark",
           "cpu_algorithms", "algorithm_count", "measure_key", "model_input", "prepare_model",
           "time_model"]
