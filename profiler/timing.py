"""Timing one operator: warm-up, synchronisation, adaptive repetitions, robust statistics.

Backends: ``cpu`` (``perf_counter_ns`` around each call, fixed thread count)
and ``cuda`` (CUDA events; eager, or ``graph`` mode where ``graph_unroll``
calls are captured in one CUDA graph so launch overhead is removed).
Repetitions stop once the 95% confidence interval of the mean is within
``rel_ci`` of it, or at ``max_reps`` (1000, the paper's fixed count).
"""

from __future__ import annotations

import gc
import math
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Callable, ContextManager, Iterator

import numpy as np
import torch

from profiler.keyspace import CONV, OpKey
from profiler.ops import DTYPES, build_op, weight_copies

DEVICES = ("cpu", "cuda")
MODES = ("eager", "graph")
ALGOS = ("auto", "all")


class TimingError(ValueError):
    """The requested timing setup cannot run on this machine."""


@dataclass
class TimingConfig:
    """How keys are timed. Defaults follow the paper (batch 1, up to 1000 runs)."""

    device: str = "cpu"
    dtype: str = "fp32"
    batch: int = 1
    channels_last: bool = False
    mode: str = "eager"          # "graph": CUDA-graph replay, cuda only
    algos: str = "auto"          # "all": time every algorithm, keep the fastest
    threads: int | None = None   # cpu intra-op threads; None = torch's current value
    warmup: int = 10
    min_reps: int = 20
    max_reps: int = 1000
    rel_ci: float = 0.01         # stop when the 95% CI half-width <= 1% of the mean
    max_seconds: float = 20.0    # per key and algorithm: a noisy key cannot stall a run
    graph_unroll: int = 10
    # Bytes the weights of each timed op must exceed, by rotating copies of them, so that
    # they come from memory as in a network larger than the cache. 0 = hot weights.
    cold_bytes: int = 0

    def validate(self) -> "TimingConfig":
        if self.device not in DEVICES:
            raise TimingError(f"unknown device '{self.device}' (choose {', '.join(DEVICES)})")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise TimingError("--device cuda asked for, but torch sees no CUDA device here")
        if self.dtype not in DTYPES:
            raise TimingError(f"unknown dtype '{self.dtype}' (choose {', '.join(DTYPES)})")
        if self.mode not in MODES:
            raise TimingError(f"unknown timing mode '{self.mode}' (choose {', '.join(MODES)})")
        if self.mode == "graph" and self.device != "cuda":
            raise TimingError("graph timing mode needs --device cuda")
        if self.algos not in ALGOS:
            raise TimingError(f"unknown algos '{self.algos}' (choose {', '.join(ALGOS)})")
        if self.batch < 1 or self.max_reps < 2:
            raise TimingError("need batch >= 1 and max_reps >= 2")
        self.min_reps = max(2, min(self.min_reps, self.max_reps))  # a low cap lowers the floor
        if self.threads is None:
            self.threads = torch.get_num_threads()
        return self

    def identity(self) -> dict:
        """What must agree between two tables for their rows to be comparable."""
        return {"device_kind": self.device, "dtype": self.dtype, "batch": self.batch,
                "memory_format": "channels_last" if self.channels_last else "contiguous",
                "timing_mode": self.mode, "algos": self.algos,
                "threads": self.threads if self.device == "cpu" else None,
                "weights": "cold" if self.cold_bytes > 0 else "hot"}


@dataclass
class Stats:
    mean_ms: float
    median_ms: float
    min_ms: float
    std_ms: float
    reps: int
    ci95_rel: float
    converged: bool
    algo: str
    seconds: float  # wall time spent on this key, warm-up and every algorithm included

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(times_ms: np.ndarray, algo: str, seconds: float, rel_ci: float) -> Stats:
    n = len(times_ms)
    mean = float(times_ms.mean())
    std = float(times_ms.std(ddof=1)) if n > 1 else 0.0
    ci = 1.96 * std / math.sqrt(n) / mean if mean > 0 else math.inf
    return Stats(mean, float(np.median(times_ms)), float(times_ms.min()), std, n, ci,
                 ci <= rel_ci, algo, seconds)


def adaptive(sample: Callable[[int], list[float]], cfg: TimingConfig) -> tuple[np.ndarray, bool]:
    """Draw chunks of samples until the 95% CI of the mean is within ``rel_ci``."""
    times: list[float] = []
    start = time.perf_counter()
    chunk = cfg.min_reps
    while True:
        times.extend(sample(min(chunk, cfg.max_reps - len(times))))
        arr = np.asarray(times)
        n = len(arr)
        half = 1.96 * arr.std(ddof=1) / math.sqrt(n)
        if half <= cfg.rel_ci * arr.mean():
            return arr, True
        if n >= cfg.max_reps or time.perf_counter() - start > cfg.max_seconds:
            return arr, False
        # The CI shrinks as 1/sqrt(n): ask for roughly what should be enough, at least 10 more.
        need = n * (half / (cfg.rel_ci * arr.mean())) ** 2
        chunk = int(min(max(10, need - n), cfg.max_reps - n))


def _cpu_sampler(fn: Callable[[], object]) -> Callable[[int], list[float]]:
    def sample(n: int) -> list[float]:
        out = []
        gc_was = gc.isenabled()
        gc.disable()  # a collection inside a timed call is noise, not operator cost
        try:
            for _ in range(n):
                t0 = time.perf_counter_ns()
                fn()
                out.append((time.perf_counter_ns() - t0) / 1e6)
        finally:
            if gc_was:
                gc.enable()
        return out
    return sample


def _cuda_sampler(fn: Callable[[], object], per_call: int = 1) -> Callable[[int], list[float]]:
    def sample(n: int) -> list[float]:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(n)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return [s.elapsed_time(e) / per_call for s, e in events]
    return sample


def _graphed(fn: Callable[[], object], unroll: int) -> Callable[[], object]:
    """Capture ``unroll`` calls of ``fn`` in one CUDA graph; return its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up outside capture: autotuning, allocator
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(unroll):
            fn()
    return graph.replay


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


def time_callable(fn: Callable[[], object], cfg: TimingConfig, algo: str = "auto") -> Stats:
    """Time ``fn`` under ``cfg`` (warm-up, then adaptive repetitions)."""
    t0 = time.perf_counter()
    if cfg.device == "cpu":
        sample = _cpu_sampler(fn)
        for _ in range(cfg.warmup):
            fn()
    elif cfg.mode == "graph":
        replay = _graphed(fn, cfg.graph_unroll)
        sample = _cuda_sampler(replay, per_call=cfg.graph_unroll)
        sample(cfg.warmup)
    else:
        sample = _cuda_sampler(fn)
        sample(cfg.warmup)
    times, _ = adaptive(sample, cfg)
    return summarize(times, algo, time.perf_counter() - t0, cfg.rel_ci)


def measure_key(key: OpKey, cfg: TimingConfig) -> Stats:
    """Time one key; with ``algos='all'``, every algorithm, keeping the fastest by mean."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        if cfg.device == "cuda":
            torch.backends.cudnn.benchmark = True  # cuDNN autotunes each shape at warm-up
            if cfg.algos == "all" and key.op == CONV:
                from profiler.cudnn_algos import time_conv_engines

                best = min(time_conv_engines(key, cfg), key=lambda s: s.mean_ms)
            else:
                fn = build_op(key, cfg.batch, cfg.dtype, "cuda", cfg.channels_last,
                              weight_copies(key, cfg.dtype, cfg.cold_bytes))
                best = time_callable(fn, cfg, "cudnn-benchmark" if key.op == CONV else "default")
        else:
            candidates = []
            algos = list(cpu_algorithms(key))
            for name, ctx in (algos if cfg.algos == "all" else algos[:1]):
                with ctx:
                    fn = build_op(key, cfg.batch, cfg.dtype, "cpu", cfg.channels_last,
                                  weight_copies(key, cfg.dtype, cfg.cold_bytes))
                    candidates.append(time_callable(fn, cfg, name))
            best = min(candidates, key=lambda s: s.mean_ms)
    best.seconds = time.perf_counter() - t0
    return best


def model_input(cfg: TimingConfig, in_channels: int, size: int) -> torch.Tensor:
    x = torch.randn(cfg.batch, in_channels, size, size, device=cfg.device).to(DTYPES[cfg.dtype])
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def prepare_model(module: torch.nn.Module, cfg: TimingConfig) -> torch.nn.Module:
    module = module.to(device=cfg.device, dtype=DTYPES[cfg.dtype]).eval()
    return module.to(memory_format=torch.channels_last) if cfg.channels_last else module


def time_model(module: torch.nn.Module, x: torch.Tensor, cfg: TimingConfig) -> Stats:
    """End-to-end latency of a whole network, with the same discipline as one key."""
    fn = lambda: module(x)  # noqa: E731
    if cfg.device == "cuda":
        torch.backends.cudnn.benchmark = True
        if cfg.mode == "graph":
            cfg = TimingConfig(**{**cfg.__dict__, "graph_unroll": _model_unroll(fn, cfg)})
    with torch.inference_mode():
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
