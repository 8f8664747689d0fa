"""The timing protocol for one callable: warm-up, synchronisation, adaptive repetitions,
robust statistics, and the configuration they follow.

Backends: ``cpu`` (``perf_counter_ns`` around each call, fixed thread count)
and ``cuda`` (CUDA events; eager, or ``graph`` mode where ``graph_unroll``
calls, or every rotated weight copy when weights are cold, are captured in one
CUDA graph so launch overhead is removed).
Repetitions stop once the 95% confidence interval of the mean is within
``rel_ci`` of it, or at ``max_reps`` (1000, the paper's fixed count).

Imports run one way: ``profiler.timing`` (what to time: operator keys, algorithms,
whole models) uses ``profiler.cudnn_algos`` (cuDNN engines) and this module;
``cudnn_algos`` uses only this module; this module uses neither. Import the public
names from ``profiler.timing``, which re-exports them.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Callable

import numpy as np
import torch

from hwprune.errors import HwpruneError
from hwprune.profiler.ops import DTYPES

DEVICES = ("cpu", "cuda")
MODES = ("eager", "graph")
ALGOS = ("auto", "all")


class TimingError(HwpruneError):
    """The requested timing setup cannot run on this machine."""


def cudnn_frontend() -> ModuleType:
    """The cudnn-frontend module, which ``--algos all`` on CUDA times every engine through."""
    try:
        import cudnn  # the cudnn-frontend Python package
    except ImportError:
        raise TimingError("--algos all on cuda needs the cudnn-frontend Python package "
                          "(pip install nvidia-cudnn-frontend); or use --algos auto, which "
                          "lets cudnn.benchmark pick the fastest algorithm") from None
    return cudnn


@dataclass
class TimingConfig:
    """How keys are timed. Defaults follow the paper (batch 1, up to 1000 runs)."""

    device: str = "cpu"
    dtype: str = "fp32"
    batch: int = 1
    channels_last: bool = False
    mode: str = "eager"          # "graph": CUDA-graph replay, cuda only
    algos: str = "auto"          # "all": time every algorithm, keep the fastest
    # cpu intra-op threads; None = 1. One thread by default: on a shared 2-vCPU VM two
    # threads measured the same network up to 20% apart between rounds and capped a
    # calibrated table at R² 0.95, against 2% and 0.998 with one (luts/tables/README.md).
    threads: int | None = None
    warmup: int = 10
    min_reps: int = 20
    max_reps: int = 1000
    rel_ci: float = 0.01         # stop when the 95% CI half-width <= 1% of the statistic
    # The statistic whose CI decides when to stop: "median" (what tables sum by default,
    # luts.lookup.DEFAULT_STAT) or "mean" (the paper's). One burst on a shared machine
    # widens the mean's CI for hundreds of calls; the median's barely moves.
    ci_of: str = "median"
    max_seconds: float = 20.0    # per key and algorithm: a noisy key cannot stall a run
    # Keep sampling at least this long even once the CI is reached. Whole networks are
    # compared round against round: a 60 ms window (20 calls of a 3 ms net, which met the
    # median's 1% CI) caught whole hiccups of a shared VM, and the demo's rounds then
    # differed by 46%; longer windows average them out (luts.variants.NETWORK_MIN_SECONDS).
    min_seconds: float = 0.0
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
        if self.ci_of not in ("mean", "median"):
            raise TimingError(f"ci_of must be mean or median, not '{self.ci_of}'")
        if self.algos not in ALGOS:
            raise TimingError(f"unknown algos '{self.algos}' (choose {', '.join(ALGOS)})")
        if self.algos == "all" and self.device == "cuda":
            cudnn_frontend()  # refuse now, not at the first conv key after a pilot and a reference
        if self.batch < 1 or self.max_reps < 2:
            raise TimingError("need batch >= 1 and max_reps >= 2")
        self.min_reps = max(2, min(self.min_reps, self.max_reps))  # a low cap lowers the floor
        self.min_seconds = min(self.min_seconds, self.max_seconds)  # so does a short budget
        if self.threads is None:
            self.threads = 1 if self.device == "cpu" else torch.get_num_threads()
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
    # Candidates that failed while timing this key ("engine: error"), e.g. cuDNN plans
    # that built but could not execute or be captured; not a row column (the profile
    # counts them in the table's metadata).
    skipped: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("skipped")
        return d


def ci95_rel(times_ms: np.ndarray, of: str = "median") -> float:
    """Half-width of the 95% CI of the mean or of the median, relative to it.

    The median's is distribution-free: the order statistics k and n-1-k with
    k = floor((n - 1.96 sqrt(n)) / 2), the normal approximation of the sign test.
    """
    n = len(times_ms)
    if n < 2:
        return math.inf
    if of == "mean":
        centre, half = float(times_ms.mean()), 1.96 * float(times_ms.std(ddof=1)) / math.sqrt(n)
    else:
        s = np.sort(times_ms)
        k = max(0, int(math.floor((n - 1.96 * math.sqrt(n)) / 2)))
        centre, half = float(np.median(s)), (float(s[n - 1 - k]) - float(s[k])) / 2
    return half / centre if centre > 0 else math.inf


def summarize(times_ms: np.ndarray, algo: str, seconds: float, rel_ci: float,
              ci_of: str = "median") -> Stats:
    n = len(times_ms)
    mean = float(times_ms.mean())
    std = float(times_ms.std(ddof=1)) if n > 1 else 0.0
    ci = ci95_rel(times_ms, ci_of)
    return Stats(mean, float(np.median(times_ms)), float(times_ms.min()), std, n, ci,
                 ci <= rel_ci, algo, seconds)


def adaptive(sample: Callable[[int], list[float]], cfg: TimingConfig) -> tuple[np.ndarray, bool]:
    """Draw chunks of samples until the 95% CI of ``cfg.ci_of`` is within ``rel_ci``."""
    times: list[float] = []
    start = time.perf_counter()
    chunk = cfg.min_reps
    while True:
        times.extend(sample(min(chunk, cfg.max_reps - len(times))))
        arr = np.asarray(times)
        n = len(arr)
        ci = ci95_rel(arr, cfg.ci_of)
        spent = time.perf_counter() - start
        if ci <= cfg.rel_ci and (spent >= cfg.min_seconds or n >= cfg.max_reps):
            return arr, True
        if n >= cfg.max_reps or spent > cfg.max_seconds:
            return arr, False
        # Either CI shrinks as 1/sqrt(n): ask for roughly what should be enough, at least 10,
        # but no more than fit in the time left (a chunk is not interrupted: an unbounded
        # one let a 0.5 s budget run for 15 s on a busy VM).
        need = n * (ci / cfg.rel_ci) ** 2 if math.isfinite(ci) else 2 * n
        per_call = max(spent / n, 1e-9)
        need = max(need, n + (cfg.min_seconds - spent) / per_call)
        fit = (cfg.max_seconds - spent) / per_call
        chunk = int(min(max(10, need - n), fit, cfg.max_reps - n))
        if chunk < 1:
            return arr, False


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


def graph_calls(unroll: int, copies: int = 1) -> int:
    """Calls of a key captured in one CUDA graph: at least ``unroll``, and a whole number of
    rounds through its ``copies`` rotated weight copies.

    A graph replays only the calls it captured: with fewer calls than copies, the
    copies left out are never read and the ones captured stay in the cache, so cold
    weights would be timed hot. Whole rounds make every copy appear equally often.
    """
    copies = max(1, copies)
    return copies * max(1, math.ceil(max(1, unroll) / copies))


def _graphed(fn: Callable[[], object], calls: int,
             stream: torch.cuda.Stream | None = None) -> Callable[[], object]:
    """Capture ``calls`` calls of ``fn`` in one CUDA graph; return its replay.

    ``stream``: capture (and warm up) on this stream rather than a fresh side stream,
    for work that does not follow torch's current stream (a cuDNN-frontend handle
    is bound to one stream when it is built, and launches there whatever torch's
    current stream is, so the capture must happen on that very stream).
    """
    side = stream if stream is not None else torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up outside capture: autotuning, allocator
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        for _ in range(calls):
            fn()
    return graph.replay


def time_callable(fn: Callable[[], object], cfg: TimingConfig, algo: str = "auto",
                  copies: int = 1, stream: torch.cuda.Stream | None = None) -> Stats:
    """Time ``fn`` under ``cfg`` (warm-up, then adaptive repetitions).

    ``copies``: how many weight copies ``fn`` rotates through (``build_op``); in graph
    mode one replay captures every copy (``graph_calls``). ``stream`` (cuda only):
    run everything on this stream, for work bound to it rather than to torch's
    current stream (cuDNN-frontend plans); the CUDA events then time that stream.
    """
    t0 = time.perf_counter()
    if cfg.device == "cpu":
        sample = _cpu_sampler(fn)
        for _ in range(cfg.warmup):
            fn()
        times, _ = adaptive(sample, cfg)
        return summarize(times, algo, time.perf_counter() - t0, cfg.rel_ci, cfg.ci_of)
    if stream is not None:
        stream.wait_stream(torch.cuda.current_stream())  # inputs were made on the caller's
    with torch.cuda.stream(stream):  # a no-op for None
        if cfg.mode == "graph":
            calls = graph_calls(cfg.graph_unroll, copies)
            sample = _cuda_sampler(_graphed(fn, calls, stream), per_call=calls)
            # Warm-up is about calls run, not replays: a replay holding every one of hundreds
            # of weight copies needs fewer of them than a replay of graph_unroll calls.
            sample(math.ceil(cfg.warmup * cfg.graph_unroll / calls))
        else:
            sample = _cuda_sampler(fn)
            sample(cfg.warmup)
        times, _ = adaptive(sample, cfg)
    return summarize(times, algo, time.perf_counter() - t0, cfg.rel_ci, cfg.ci_of)


def fmt_seconds(s: float) -> str:
    """A duration for people: seconds under 2 minutes, minutes under 2 hours, then hours."""
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


__all__ = ["fmt_seconds", "DEVICES", "MODES", "ALGOS", "TimingError", "TimingConfig", "Stats", "summarize", "ci95_rel",
           "adaptive", "graph_calls", "time_callable", "cudnn_frontend"]
